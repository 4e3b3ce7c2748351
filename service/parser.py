"""Request validation: each handler's schemas, declared with aiohttp_apigami's decorators (which
also put them in the docs), loaded from the body, the query string or the headers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp_apigami.constants import SCHEMAS_ATTR
from aiohttp_apigami.validation import ValidationSchema
from marshmallow import Schema, ValidationError

from service.errors import BadRequest, InvalidRequest

NOT_AN_OBJECT = "request body must be a JSON object"


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, even without a JSON Content-Type (curl -d sends a form
    type); anything else is a 400, before any field is looked at."""
    raw = await request.read()
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"{NOT_AN_OBJECT}: {exc}") from None
    except RecursionError:
        raise BadRequest(f"{NOT_AN_OBJECT}: it is nested too deeply") from None
    if not isinstance(data, dict):
        raise BadRequest(f"{NOT_AN_OBJECT}, got {type(data).__name__}")
    return data


async def location_data(request: web.Request, location: str, schema: Schema) -> Mapping[str, Any]:
    if location == "json":
        return await read_json_object(request)
    if location == "querystring":
        return dict(request.query)  # a repeated parameter counts once, with its first value
    if location == "headers":
        # Only the headers the schema reads: every other header is none of our business.
        names = (field.data_key or name for name, field in schema.fields.items())
        return {name: request.headers[name] for name in names if name in request.headers}
    raise ValueError(f"no request schema location {location!r}")


def load(schema: Schema, data: Mapping[str, Any]) -> Any:
    """The schema's result; a refusal is a 422 naming each field and what is wrong with it."""
    try:
        return schema.load(data)
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        raise InvalidRequest("some fields are invalid", messages) from None


@web.middleware
async def validation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Each schema's result under its location's name: `request["json"]`, `["querystring"]`..."""
    specs: list[ValidationSchema] = getattr(request.match_info.handler, SCHEMAS_ATTR, [])
    for spec in specs:
        data = await location_data(request, spec.location, spec.schema)
        request[spec.put_into or spec.location] = load(spec.schema, data)
    return await handler(request)
