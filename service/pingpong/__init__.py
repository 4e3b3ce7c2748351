"""The ping-pong pipeline: services A and B bounce a payload over HTTP, and every hop is traced."""

from __future__ import annotations

from aiohttp import web

from service.pingpong import handlers
from service.pingpong.pipeline import pingpong_context
from service.pingpong.schemas import TRACE_ID

__all__ = ["pingpong_context", "setup_pingpong_routes"]


def setup_pingpong_routes(app: web.Application) -> None:
    app.router.add_post("/pingpong/a", handlers.service_a)
    app.router.add_post("/pingpong/b", handlers.service_b)
    app.router.add_get("/pingpong/traces", handlers.list_traces)
    app.router.add_get(
        f"/pingpong/traces/{{trace_id:{TRACE_ID}}}", handlers.get_trace, name="pingpong_trace"
    )
