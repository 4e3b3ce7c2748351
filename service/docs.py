"""The API's own documentation: a valid OpenAPI 3 document, and Swagger UI under a strict CSP.

aiohttp_apigami builds the document from the handlers' decorators at start-up. Its `@docs`
adds Swagger 2's `produces` to every operation, which OpenAPI 3 does not allow; that key is
taken out once the document is built. Its Swagger UI page starts with an inline script, which
a CSP without 'unsafe-inline' blocks; our own page loads the same bundled assets and starts
them from a file of ours instead.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp_apigami import OpenApiVersion, setup_aiohttp_apispec
from aiohttp_apigami.constants import SWAGGER_DICT
from aiohttp_apigami.swagger_ui import SWAGGER_UI_STATIC_FILES

from service.api.pages import file_response

SPEC_URL = "/api/docs/openapi.json"
SWAGGER_ASSETS = "/api/docs/assets"
OPERATIONS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
SWAGGER_2_ONLY = ("produces", "consumes")

# Swagger UI's bundle sets style attributes as it renders, and draws its icons from data: URLs.
SWAGGER_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none';"
    " form-action 'self'; frame-ancestors 'none'"
)


def setup_docs(app: web.Application) -> None:
    setup_aiohttp_apispec(
        app,
        title="Calculations",
        version="1",
        info={"description": "Queue runs of the well-production kernel and read their results."},
        url=SPEC_URL,
        openapi_version=OpenApiVersion.V303,
    )
    app.on_startup.append(make_spec_valid)  # after apigami's own, which builds the document
    app.router.add_get("/api/docs", swagger_page)
    app.router.add_static(SWAGGER_ASSETS, SWAGGER_UI_STATIC_FILES)


async def make_spec_valid(app: web.Application) -> None:
    spec: dict[str, Any] = app[SWAGGER_DICT]
    for path in spec.get("paths", {}).values():
        for method, operation in path.items():
            if method in OPERATIONS:
                for key in SWAGGER_2_ONLY:
                    operation.pop(key, None)


async def swagger_page(request: web.Request) -> web.FileResponse:
    response = file_response("docs.html")
    response.headers["Content-Security-Policy"] = SWAGGER_CSP
    return response
