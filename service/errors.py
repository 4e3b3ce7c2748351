"""Errors as the API shows them: one JSON shape for every refusal.

ApiError
├── BadRequest          400  body is not a JSON object
├── InvalidRequest      422  fields refused, with the reasons per field
├── Unauthorized        401  no valid bearer token (when API_TOKEN is set)
├── CrossSite           403  a state-changing request a browser sent from another site
├── RequestTimeout      408  the body did not arrive within CLIENT_TIMEOUT
├── CalculationNotFound 404
├── ResultNotReady      409  the run has no result (not done)
├── Conflict            409  the run has ended / the idempotency key was used otherwise
├── QueueFull           429  MAX_QUEUED runs are waiting; Retry-After says when to retry
└── Unavailable         503  the database is down or does not answer; Retry-After as well

A client that leaves before its answer is no server error: its request is logged and counted
with CLIENT_GONE (499, nginx's number for it), and nothing is written to it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from aiohttp import web
from aiohttp.typedefs import Handler

from service.db import DatabaseDown, StorageFull

log = logging.getLogger(__name__)

CLIENT_GONE = 499

# aiohttp's own refusals (unknown route, wrong method, body too large) get these codes.
HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    status = 500
    code = "internal_error"
    headers: ClassVar[Mapping[str, str]] = {}  # sent with the error, e.g. Retry-After

    def __init__(self, message: str, fields: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class InvalidRequest(ApiError):
    status = 422
    code = "invalid_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"
    headers: ClassVar[Mapping[str, str]] = {"WWW-Authenticate": "Bearer"}


class CrossSite(ApiError):
    status = 403
    code = "cross_site"


class RequestTimeout(ApiError):
    status = 408
    code = "request_timeout"
    headers: ClassVar[Mapping[str, str]] = {"Connection": "close"}


class CalculationNotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class QueueFull(ApiError):
    status = 429
    code = "queue_full"
    # Seconds: long enough for a busy queue to move, short enough to feel live.
    headers: ClassVar[Mapping[str, str]] = {"Retry-After": "5"}


class Unavailable(ApiError):
    status = 503
    code = "database_unavailable"
    # A restart of the database takes seconds: sooner would only add load while it starts.
    headers: ClassVar[Mapping[str, str]] = {"Retry-After": "2"}


class StorageFullError(ApiError):
    status = 507
    code = "storage_full"
    # Space comes back when an operator or the retention frees it: minutes rather than seconds.
    headers: ClassVar[Mapping[str, str]] = {"Retry-After": "30"}


def error_body(code: str, message: str, fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    return {"error": error}


def error_response(
    status: int, code: str, message: str, fields: Mapping[str, Any] | None = None
) -> web.Response:
    return web.json_response(error_body(code, message, fields), status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        try:
            return await handler(request)
        except StorageFull:  # logged once, where the state changed (DiskState)
            raise StorageFullError(
                "the disk of the database is full: nothing was written; retry later"
            ) from None
        except DatabaseDown as exc:
            log.warning("%s %s: the database is down: %s", request.method, request.path, exc)
            raise Unavailable("the database is unavailable; retry later") from None
    except ApiError as exc:
        response = error_response(exc.status, exc.code, exc.message, exc.fields)
        response.headers.update(exc.headers)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = HTTP_CODES.get(exc.status, f"http_{exc.status}")
        response = error_response(exc.status, code, exc.reason)
        if isinstance(exc, web.HTTPMethodNotAllowed):
            response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        return response
    except Exception as exc:
        if isinstance(exc, ConnectionError) and client_gone(request):
            log.debug("the client left before its answer: %s %s", request.method, request.path)
            return web.Response(status=CLIENT_GONE)
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error")


def client_gone(request: web.Request) -> bool:
    """Whether the client's connection is closed or closing: nothing more can reach it."""
    transport = request.transport
    return transport is None or transport.is_closing()


class ResultNotReady(ApiError):
    """The run exists but has no result to serve: it is not done."""

    status = 409
    code = "no_result"
