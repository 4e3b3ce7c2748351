"""How request bodies are read before a schema sees them: a JSON object, whatever the type."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from marshmallow import Schema
from webargs.aiohttpparser import AIOHTTPParser

from service.errors import BadRequest, on_validation_error

NOT_AN_OBJECT = "request body must be a JSON object"


class RequestParser(AIOHTTPParser):
    """Reads the body as JSON even without a JSON Content-Type (curl -d sends a form type),
    and refuses with 400 what is not a JSON object, before any field is looked at."""

    # Each schema decides about unknown fields, and ours refuse them.
    DEFAULT_UNKNOWN_BY_LOCATION: dict[str, Any] = {}  # noqa: RUF012 (webargs reads it per class)

    async def load_json(self, req: web.Request, schema: Schema) -> Any:
        raw = await req.read()
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadRequest(f"{NOT_AN_OBJECT}: {exc}") from None
        except RecursionError:
            raise BadRequest(f"{NOT_AN_OBJECT}: it is nested too deeply") from None
        if not isinstance(data, dict):
            raise BadRequest(f"{NOT_AN_OBJECT}, got {type(data).__name__}")
        return data


def make_parser() -> RequestParser:
    return RequestParser(error_handler=on_validation_error)
