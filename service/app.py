"""The application factory: config, resources in dependency order, middlewares, routes, docs."""

from __future__ import annotations

from aiohttp import web
from aiohttp_apigami import OpenApiVersion, setup_aiohttp_apispec, validation_middleware
from aiohttp_apigami.constants import APISPEC_PARSER

from service.api import setup_routes
from service.config import Config
from service.consumer import consumer_context, pool_context
from service.db import db_context
from service.errors import error_middleware
from service.keys import CONFIG
from service.parser import make_parser

MAX_BODY = 64 * 1024


def create_app(config: Config) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, validation_middleware], client_max_size=MAX_BODY
    )
    app[CONFIG] = config
    # Torn down in reverse: the consumer stops, then the pool, then the database closes.
    app.cleanup_ctx.extend([db_context, pool_context, consumer_context])
    setup_routes(app)
    setup_aiohttp_apispec(
        app,
        title="Calculations",
        version="1",
        info={"description": "Queue runs of the well-production kernel and read their results."},
        url="/api/docs/openapi.json",
        swagger_path="/api/docs",
        openapi_version=OpenApiVersion.V303,
    )
    app[APISPEC_PARSER] = make_parser()
    return app
