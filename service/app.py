"""The application factory: config, resources in dependency order, middlewares, routes, docs."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from service.api import setup_routes
from service.auth import auth_middleware
from service.clients import clients_context, watch_answer
from service.config import Config
from service.consumer import consumer_context, pool_context, release_waiters
from service.db import open_database
from service.descriptors import descriptors_context
from service.docs import setup_docs
from service.errors import error_middleware
from service.events import RunEvents
from service.keys import CONFIG, DB, EVENTS, METRICS
from service.leases import leases_context
from service.logs import add_request_id, request_log_middleware
from service.maintenance import maintenance_context
from service.metrics import Metrics, metrics_middleware
from service.parser import validation_middleware
from service.pingpong import pingpong_context, setup_pingpong_routes
from service.security import add_security_headers, cross_site_middleware

MAX_BODY = 64 * 1024


async def db_context(app: web.Application) -> AsyncIterator[None]:
    # Here, not in `service.db`: the kernel processes import that package, and aiohttp would
    # add a fifth of a second to the start of each of them.
    async with open_database(app[CONFIG], app[EVENTS]) as database:
        app[DB] = database
        yield


def create_app(config: Config) -> web.Application:
    middlewares = [
        request_log_middleware,
        metrics_middleware,
        error_middleware,
        cross_site_middleware,
    ]
    if config.api_token:  # every request pays for a middleware, even one with nothing to do
        middlewares.append(auth_middleware)
    middlewares.append(validation_middleware)
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
    app[CONFIG] = config
    app[METRICS] = Metrics()
    app[EVENTS] = RunEvents()
    app.on_shutdown.append(release_waiters)
    app.on_response_prepare.extend([add_request_id, add_security_headers, watch_answer])
    app.cleanup_ctx.extend([descriptors_context, clients_context])
    # Torn down in reverse: the consumer stops, then the pool, then the database closes.
    app.cleanup_ctx.extend([db_context, maintenance_context])
    if config.computes:
        app.cleanup_ctx.extend([pool_context, leases_context, consumer_context])
    else:  # it still looks for gone workers: any live process rescues their runs
        app.cleanup_ctx.append(leases_context)
    setup_routes(app, config.serves_api)
    if config.serves_api:
        app.cleanup_ctx.append(pingpong_context)  # stops its forwards before the database closes
        setup_pingpong_routes(app)
        setup_docs(app)
    return app
