"""Access control: with API_TOKEN set, the API, the metrics and the ping-pong
endpoints need `Authorization: Bearer`; /health, the page and the docs stay open."""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Handler

from service.errors import Unauthorized
from service.keys import CONFIG

PROTECTED = ("/api/v1/", "/metrics", "/pingpong/")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[CONFIG].api_token
    if token and request.path.startswith(PROTECTED):
        given = request.headers.get("Authorization", "")
        scheme, _, credentials = given.partition(" ")
        # Compared in constant time, so that the answer's timing does not leak the token.
        valid = scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode(), token.encode()
        )
        if not valid:
            raise Unauthorized("a valid `Authorization: Bearer <API_TOKEN>` header is required")
    return await handler(request)
