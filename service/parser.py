"""Request validation: each handler's schemas, declared with aiohttp_apigami's decorators (which
also put them in the docs), loaded from the body, the query string or the headers."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp_apigami.constants import SCHEMAS_ATTR
from aiohttp_apigami.validation import ValidationSchema
from marshmallow import Schema, ValidationError

from service.errors import BadRequest, InvalidRequest, RequestTimeout
from service.keys import CONFIG

NOT_AN_OBJECT = "request body must be a JSON object"
# A lone UTF-16 surrogate has no UTF-8 form (JSON's "\ud800" decodes to one), and a database's
# text cannot hold NUL (PostgreSQL refuses it): neither could be stored as it was sent.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
UNSTORABLE_MESSAGE = "Holds a character that cannot be stored: NUL or a lone UTF-16 surrogate."


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, even without a JSON Content-Type (curl -d sends a form
    type); anything else is a 400, before any field is looked at. A string that could not be
    stored exactly is a 422 naming where it is."""
    data = parse_json_object(await read_body(request))
    unstorable = {path: [UNSTORABLE_MESSAGE] for path in unstorable_paths(data)}
    if unstorable:
        raise InvalidRequest("some fields are invalid", unstorable)
    return data


async def read_body(request: web.Request) -> bytes:
    """The whole body, within CLIENT_TIMEOUT: a client that sends it a byte at a time is cut
    off instead of holding the handler forever."""
    if request.content.is_eof():  # came with the head, as small bodies do: no timer needed
        return await request.read()
    try:
        async with asyncio.timeout(request.app[CONFIG].client_timeout):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {request.app[CONFIG].client_timeout:g} s"
        ) from None


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"{NOT_AN_OBJECT}: {exc}") from None
    except RecursionError:
        raise BadRequest(f"{NOT_AN_OBJECT}: it is nested too deeply") from None
    except ValueError:  # Python's limit on the digits of an int it converts from text
        limit = sys.get_int_max_str_digits()
        raise BadRequest(f"{NOT_AN_OBJECT}: a number in it has more than {limit} digits") from None
    if not isinstance(data, dict):
        raise BadRequest(f"{NOT_AN_OBJECT}, got {type(data).__name__}")
    return data


def unstorable_paths(value: Any, path: str = "") -> Iterator[str]:
    """Where a string (a value or a key) holds a character that cannot be stored: `name`,
    `sequence[2].service`, or the key itself where the key is the culprit."""
    if isinstance(value, str):
        if UNSTORABLE.search(value):
            yield path or "_schema"
    elif isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else key
            if UNSTORABLE.search(key):
                yield f"{path}.{key!a}" if path else ascii(key)
            else:
                yield from unstorable_paths(item, here)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from unstorable_paths(item, f"{path}[{index}]")


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
