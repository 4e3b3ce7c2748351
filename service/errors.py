"""Errors as the API shows them: one JSON shape for every refusal.

ApiError
├── BadRequest          400  body is not a JSON object
├── InvalidRequest      422  fields refused, with the reasons per field
└── CalculationNotFound 404
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, NoReturn

from aiohttp import web
from aiohttp.typedefs import Handler
from marshmallow import ValidationError

log = logging.getLogger(__name__)

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


class CalculationNotFound(ApiError):
    status = 404
    code = "not_found"


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
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.fields)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = HTTP_CODES.get(exc.status, f"http_{exc.status}")
        response = error_response(exc.status, code, exc.reason)
        if isinstance(exc, web.HTTPMethodNotAllowed):
            response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        return response
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error")


def on_validation_error(error: ValidationError, *args: Any, **kwargs: Any) -> NoReturn:
    """Turn a schema's refusal into a 422 naming each field and what is wrong with it."""
    messages = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
    fields = {str(k): v for k, v in messages.items()}
    # webargs files querystring errors under "querystring"; the fields inside are what users sent.
    for location in ("json", "querystring"):
        nested = fields.pop(location, None)
        if isinstance(nested, dict):
            fields.update(nested)
    raise InvalidRequest("some fields are invalid", fields)
