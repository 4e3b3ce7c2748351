"""Logging: one line per event, as text or JSON, each carrying the request id it belongs to."""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import os
import re
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

log = logging.getLogger("service.access")

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
REQUEST_ID_KEY = "request_id"  # the same id on the request, for when the answer is sent
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Attributes a log call may pass with `extra=` that are worth a field of their own.
FIELDS = ("calc_id", "trace_id", "method", "path", "status", "duration_ms")
# A made id is this process's random half and a count: unique like a UUID4, without reading
# the system's random source on every request (a system call that costs more than the rest).
ID_PREFIX = os.urandom(8).hex()
ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{ID_PREFIX}{next(ID_COUNTER):016x}"


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        line.update({key: getattr(record, key) for key in FIELDS if hasattr(record, key)})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs each request its parser refuses (and answers 400) as an ERROR with a
    traceback, so one client sending bad bytes could flood the log. Such a record becomes one
    INFO line: who sent it and what was wrong, escaped and cut short."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            reason = ascii(f"{type(exc).__name__}: {exc.message}")[1:-1][:MAX_REASON]
            record.msg, record.args = (
                "malformed request from %s refused with 400: %s",
                (
                    remote,
                    reason,
                ),
            )
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
        return True


MAX_REASON = 200  # characters of a refused request's reason that are logged


def configure(level: str, fmt: str) -> None:
    """Called once, by `__main__`."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("aiohttp.server").addFilter(MalformedRequestFilter())


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer, streamed ones too: their headers leave before the handler returns."""
    response.headers["X-Request-ID"] = request.get(REQUEST_ID_KEY, REQUEST_ID.get())


@web.middleware
async def request_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Names each request (X-Request-ID, taken from the client when sane) and logs it once."""
    given = request.headers.get("X-Request-ID", "")
    request_id = given if SAFE_REQUEST_ID.fullmatch(given) else new_request_id()
    token = REQUEST_ID.set(request_id)
    request[REQUEST_ID_KEY] = request_id
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        # Only when it will be written: this runs on every request.
        if log.isEnabledFor(logging.INFO):
            duration_ms = round((time.perf_counter() - started) * 1000, 3)
            fields = {"method": request.method, "path": request.path, "status": status}
            log.info(
                "%s %s %d %.1f ms",
                request.method,
                request.path_qs,
                status,
                duration_ms,
                extra={**fields, "duration_ms": duration_ms},
            )
        REQUEST_ID.reset(token)
