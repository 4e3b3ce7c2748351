"""The route table."""

from __future__ import annotations

from aiohttp import web

from service.api import calculations


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/calculations", calculations.create_calculation)
    app.router.add_get("/api/v1/calculations", calculations.list_calculations)
    # At most 18 digits: every such id fits SQLite's INTEGER; longer ones are simply not found.
    app.router.add_get(
        r"/api/v1/calculations/{calc_id:\d{1,18}}",
        calculations.get_calculation,
        name="calculation",
    )
