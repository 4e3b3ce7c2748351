"""The route table."""

from __future__ import annotations

from aiohttp import web

from service.api import calculations, ops, pages, results


def setup_routes(app: web.Application, serves_api: bool) -> None:
    """Every process serves /health and /metrics; the API and the page are its role's."""
    app.router.add_get("/health", ops.health)
    app.router.add_get("/metrics", ops.metrics)
    if serves_api:
        setup_api_routes(app)


def setup_api_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/calculations", calculations.create_calculation)
    app.router.add_get("/api/v1/calculations", calculations.list_calculations)
    app.router.add_delete("/api/v1/calculations", calculations.delete_calculations)
    # At most 18 ASCII digits (`\d` takes Arabic-Indic or fullwidth ones too): every such id
    # fits SQLite's INTEGER; longer ones are simply not found.
    app.router.add_get(
        r"/api/v1/calculations/{calc_id:[0-9]{1,18}}",
        calculations.get_calculation,
        name="calculation",
    )
    app.router.add_delete(
        r"/api/v1/calculations/{calc_id:[0-9]{1,18}}", calculations.delete_calculation
    )
    app.router.add_post(
        r"/api/v1/calculations/{calc_id:[0-9]{1,18}}/cancel", calculations.cancel_calculation
    )
    app.router.add_get(
        r"/api/v1/calculations/{calc_id:[0-9]{1,18}}/result.csv",
        results.get_result_csv,
        name="result_csv",
    )
    app.router.add_get("/", pages.index, name="index")
    # One flat folder: a name never holds a slash, so it cannot leave it.
    app.router.add_get(r"/static/{name:[A-Za-z0-9_-][A-Za-z0-9_.-]*}", pages.static_file)
