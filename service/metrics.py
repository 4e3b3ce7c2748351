"""Prometheus metrics of one application: runs, queue, kernel time, HTTP requests."""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from service.keys import METRICS
from service.models import Status

KERNEL_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """One registry per application, so that two apps in one process (tests) count apart."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.runs_created = Counter("calculations_created", "Runs queued.", registry=self.registry)
        self.runs_finished = Counter(
            "calculations_finished", "Runs ended, by status.", ["status"], registry=self.registry
        )
        self.runs_rescued = Counter(
            "calculations_rescued",
            "Runs queued again or failed because their worker was gone.",
            registry=self.registry,
        )
        self.runs_deleted = Counter(
            "calculations_deleted",
            "Runs deleted, by reason: a DELETE request, or the retention.",
            ["reason"],
            registry=self.registry,
        )
        self.queued = Gauge("calculations_queued", "Runs waiting.", registry=self.registry)
        self.running = Gauge("calculations_running", "Runs computing.", registry=self.registry)
        self.kernel_seconds = Histogram(
            "calculation_kernel_seconds",
            "Time kernels took, runs that ended done or failed.",
            buckets=KERNEL_BUCKETS,
            registry=self.registry,
        )
        self.http_requests = Counter(
            "http_requests",
            "HTTP requests served, by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "http_request_seconds",
            "Time to answer an HTTP request, by route.",
            ["method", "route"],
            registry=self.registry,
        )

        # Children by labels, found once: `labels()` takes a lock and builds a key each time.
        self._http: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def http_answered(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._http.get(key)
        if children is None:
            children = self._http[key] = (
                self.http_requests.labels(method, route, str(status)),
                self.http_seconds.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def finished(self, status: Status, duration: float | None = None) -> None:
        self.runs_finished.labels(status.value).inc()
        if duration is not None:
            self.kernel_seconds.observe(duration)

    def deleted(self, count: int, reason: str) -> None:
        self.runs_deleted.labels(reason).inc(count)

    def render(self, queued: int, running: int) -> bytes:
        self.queued.set(queued)
        self.running.set(running)
        return generate_latest(self.registry)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        # The route pattern, not the path: one series per route, whatever the ids.
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        seconds = time.perf_counter() - started
        request.app[METRICS].http_answered(request.method, route, status, seconds)
