"""Handlers of /pingpong: services A and B, and the traces their hops leave."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

from aiohttp import web
from aiohttp_apigami import docs, querystring_schema, request_schema, response_schema
from aiohttp_apigami.constants import SCHEMAS_ATTR
from marshmallow import ValidationError
from yarl import URL

from service.errors import BadRequest
from service.keys import DB, PINGPONG
from service.models import Outcome, Peer
from service.parser import NOT_AN_OBJECT, read_json_object
from service.pingpong.errors import (
    DuplicateHop,
    InvalidPayload,
    Refused,
    TraceNotFound,
    field_reasons,
)
from service.pingpong.pipeline import Pipeline
from service.pingpong.schemas import (
    Accepted,
    PingPongPayload,
    TraceItem,
    TraceListQuery,
    TraceOut,
    TracePage,
)
from service.pingpong.trace import summarize
from service.schemas import ErrorOut

PAYLOAD = PingPongPayload()
HOP_ID = PingPongPayload(only=("trace_id", "hop"))
MAX_INVALID_STORED = 1024  # characters of an invalid payload's JSON a trace keeps

HOP_RESPONSES = {
    400: {
        "schema": ErrorOut,
        "description": "Refused at random (`refused`), invalid (`invalid_payload`, with `fields`)"
        " or not a JSON object (`bad_request`).",
    },
    409: {"schema": ErrorOut, "description": "This trace already has a hop with this number."},
}
ACCEPTED = (
    "Accepted: a kick (no `trace_id`) always, whatever hop 1 decided; a hop once validated."
    " The forward to the partner goes on in the background. `Location` is the trace."
)

H = TypeVar("H", bound=Callable[[web.Request], Awaitable[web.StreamResponse]])


def documented_only(handler: H) -> H:
    """Keep the handler's request schema in the OpenAPI docs but away from the validation
    middleware: the handler loads the payload itself, so that a bad one is a 400, not a 422."""
    setattr(handler, SCHEMAS_ATTR, [])
    return handler


@documented_only
@docs(
    tags=["pingpong"],
    summary="Service A: append a random digit 0..100 and send the payload to B",
    responses=HOP_RESPONSES,
)
@request_schema(PingPongPayload)
@response_schema(Accepted, 202, description=ACCEPTED)
async def service_a(request: web.Request) -> web.Response:
    return await handle_hop(request, Peer.A)


@documented_only
@docs(
    tags=["pingpong"],
    summary="Service B: set avg, max and min of the digits and send the payload to A",
    responses=HOP_RESPONSES,
)
@request_schema(PingPongPayload)
@response_schema(Accepted, 202, description=ACCEPTED)
async def service_b(request: web.Request) -> web.Response:
    return await handle_hop(request, Peer.B)


async def handle_hop(request: web.Request, service: Peer) -> web.Response:
    received, received_json = await read_object(request)
    pipeline = request.app[PINGPONG]
    try:
        payload = PAYLOAD.load(received)
    except ValidationError as exc:
        await refuse_invalid(pipeline, service, received, received_json, exc)
    refuse_past_limit(pipeline, payload["hop"] + 1)
    url = pipeline.partner_url(service.partner, lambda: own_origin(request))
    hop = await pipeline.receive(service, received_json, payload, url)
    if hop is None:
        raise DuplicateHop(f"trace {payload['trace_id']} already has hop {payload['hop'] + 1}")
    # A kick is always accepted, so that its sender learns where the trace is.
    if hop.outcome is Outcome.REFUSED and payload["trace_id"] is not None:
        raise Refused(hop.detail or "refused")
    location = str(request.app.router["pingpong_trace"].url_for(trace_id=hop.trace_id))
    body = Accepted().dump({**dataclasses.asdict(hop), "url": location})
    return web.json_response(body, status=202, headers={"Location": location})


async def read_object(request: web.Request) -> tuple[dict[str, Any], str]:
    """The body as a JSON object, by the rules of every other endpoint (service/parser.py),
    and as the strict JSON text its trace stores."""
    try:
        body: dict[str, Any] = await read_json_object(request)
        # Python reads NaN, Infinity and 1e400 (as inf), which a strict JSON reader refuses.
        return body, json.dumps(body, allow_nan=False)
    except RecursionError:  # json gives up on very deep nesting
        raise BadRequest(f"{NOT_AN_OBJECT}: it is nested too deeply") from None
    except ValueError:
        raise BadRequest(f"{NOT_AN_OBJECT} of finite numbers (no NaN, Infinity or 1e400)") from None


async def refuse_invalid(
    pipeline: Pipeline,
    service: Peer,
    received: dict[str, Any],
    received_json: str,
    exc: ValidationError,
) -> NoReturn:
    """Record the invalid payload in its trace when it names one, and answer 400."""
    messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
    reasons = field_reasons(messages)
    try:
        hop_id = HOP_ID.load(received)
    except ValidationError:
        hop_id = {"trace_id": None}
    number = hop_id["hop"] + 1 if hop_id["trace_id"] is not None else None
    if number is not None and number <= pipeline.max_hops:
        detail = "invalid payload: " + "; ".join(
            f"{field}: {', '.join(why)}" for field, why in reasons.items()
        )
        await pipeline.record_invalid(
            service, hop_id["trace_id"], number, excerpt(received_json), detail
        )
    raise InvalidPayload("the payload is invalid", reasons)


def refuse_past_limit(pipeline: Pipeline, number: int) -> None:
    """A hop past PINGPONG_MAX_HOPS is no partner's: the hop at the limit ends the pipeline.
    It is refused before anything is stored, so that nobody can grow a trace without end."""
    limit = pipeline.max_hops
    if number > limit:
        reason = f"Hop {number} is past the hop limit of {limit}; no partner sends it."
        raise InvalidPayload("the payload is invalid", {"hop": [reason]})


def excerpt(received_json: str) -> str:
    """What an invalid payload's hop stores: the payload when it is small, else the start of
    its text and its length, so that refused payloads cannot fill the database."""
    if len(received_json) <= MAX_INVALID_STORED:
        return received_json
    return json.dumps({"excerpt": received_json[:MAX_INVALID_STORED], "length": len(received_json)})


def own_origin(request: web.Request) -> URL:
    """This server, at the address the request reached: its socket's, never a header's, so
    that a client cannot send the payload to a host of its choosing."""
    sockname = None if request.transport is None else request.transport.get_extra_info("sockname")
    if not sockname:
        raise ConnectionResetError("the client left")
    host, port = sockname[0], sockname[1]
    return URL.build(scheme="http", host=host, port=port)


@docs(
    tags=["pingpong"],
    summary="One trace: its hops in order and where and why the pipeline stopped",
    responses={404: {"schema": ErrorOut, "description": "No trace has this id."}},
)
@response_schema(TraceOut, 200)
async def get_trace(request: web.Request) -> web.Response:
    database, trace_id = request.app[DB], request.match_info["trace_id"]
    created_at = await database.trace_created_at(trace_id)
    if created_at is None:
        raise TraceNotFound(f"trace {trace_id} does not exist")
    hops = await database.list_hops(trace_id)
    body = TraceOut().dump(
        {
            "trace_id": trace_id,
            "created_at": created_at,
            "summary": summarize(hops),
            "hops": hops,
        }
    )
    return web.json_response(body)


@docs(
    tags=["pingpong"],
    summary="Traces, newest first",
    responses={
        422: {"schema": ErrorOut, "description": "Some fields are invalid; `fields` says why."}
    },
)
@querystring_schema(TraceListQuery)
@response_schema(TracePage, 200)
async def list_traces(request: web.Request) -> web.Response:
    query, database = request["querystring"], request.app[DB]
    page, per_page = query["page"], query["per_page"]
    total = await database.count_traces()
    traces = await database.list_traces(limit=per_page, offset=(page - 1) * per_page)
    router = request.app.router["pingpong_trace"]
    items = [
        {**dataclasses.asdict(trace), "url": str(router.url_for(trace_id=trace.trace_id))}
        for trace in traces
    ]
    body = {
        "items": TraceItem(many=True).dump(items),
        "page": page,
        "per_page": per_page,
        "total": total,
        "pages": math.ceil(total / per_page),
    }
    return web.json_response(body)
