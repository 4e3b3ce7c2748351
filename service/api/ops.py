"""Handlers for operators: health and Prometheus metrics."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp_apigami import docs, response_schema
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from service.keys import CONFIG, CONSUMER_TASK, DB, METRICS
from service.models import Status
from service.schemas import ErrorOut, Health

log = logging.getLogger(__name__)


@docs(
    tags=["operations"],
    summary="Whether the service can take and run calculations",
    responses={503: {"schema": Health, "description": "The database or the consumer is down."}},
)
@response_schema(Health, 200)
async def health(request: web.Request) -> web.Response:
    body: dict[str, object] = {"status": "ok", "database": "ok", "consumer": "ok"}
    try:
        counts = await request.app[DB].count_by_status()
        body.update(queued=counts[Status.QUEUED], running=counts[Status.RUNNING])
    except Exception as exc:
        log.exception("health check: the database does not answer")
        body.update(status="unavailable", database=f"error: {type(exc).__name__}")
    full = request.app[DB].disk.full
    if full is not None:
        body.update(status="unavailable", database=f"full: {full}")
    task = request.app.get(CONSUMER_TASK)
    if not request.app[CONFIG].computes:
        body.update(consumer="none: this process serves the API only")
    elif task is None or task.done():
        body.update(status="unavailable", consumer="stopped")
    return web.json_response(body, status=200 if body["status"] == "ok" else 503)


METRICS_RESPONSES: dict[int, dict[str, Any]] = {
    200: {
        "description": "Counters, histograms and gauges in Prometheus' text format.",
        "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
    },
    401: {"schema": ErrorOut, "description": "`API_TOKEN` is set and the token is missing."},
}


@docs(
    tags=["operations"],
    summary="Prometheus metrics, in the text exposition format",
    responses=METRICS_RESPONSES,
)
async def metrics(request: web.Request) -> web.Response:
    counts = await request.app[DB].count_by_status()
    text = request.app[METRICS].render(counts[Status.QUEUED], counts[Status.RUNNING])
    response = web.Response(body=text)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response
