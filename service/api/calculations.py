"""Handlers of /api/v1/calculations: validated input, one database call, a JSON response."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import math
import random
from typing import Any

from aiohttp import web
from aiohttp_apigami import (
    docs,
    headers_schema,
    json_schema,
    querystring_schema,
    response_schema,
)

from service import db, memory
from service.compression import accepts_gzip, gzip_parts
from service.db import Form
from service.errors import CalculationNotFound, Conflict, InvalidRequest, QueueFull, client_gone
from service.keys import CONFIG, CONSUMER, DB, EVENTS, METRICS
from service.models import TERMINAL, Calculation, Status, point_count
from service.schemas import (
    MAX_SEED,
    CalculationCreated,
    CalculationOut,
    CalculationPage,
    CalculationQuery,
    CalculationRequest,
    CreateHeaders,
    Deleted,
    DeleteQuery,
    ErrorOut,
    ListQuery,
)

log = logging.getLogger(__name__)

DELETE_BATCH = 200  # runs a filtered DELETE removes per statement
CHUNK = 256 * 1024  # bodies larger than this are streamed, a part at a time
CLIENT_CHECK = 0.5  # seconds between looks at a waiting request's connection and run
ELSEWHERE_CHECK = 0.1  # the same, where the end of a run computed elsewhere is not told

# A seed only needs to differ between runs, not to be secret: drawing it from the system's
# random source would cost a system call per request.
SEEDS = random.Random()


@functools.lru_cache(maxsize=64)
def calculation_schema(shown: tuple[str, ...]) -> CalculationOut:
    return CalculationOut(only=shown)


def error(description: str) -> dict[str, Any]:
    return {"schema": ErrorOut, "description": description}


INVALID = {422: error("Some fields are invalid; `fields` says which and why.")}
NOT_FOUND = {404: error("No calculation has this id.")}
CREATE_ERRORS = {
    400: error("The body is not a JSON object."),
    409: error("The Idempotency-Key was used before with another body; nothing was written."),
    **INVALID,
    429: error("MAX_QUEUED runs are waiting; retry after `Retry-After` seconds."),
}


@docs(tags=["calculations"], summary="Queue a calculation", responses=CREATE_ERRORS)
@headers_schema(CreateHeaders)
@json_schema(CalculationRequest)
@response_schema(CalculationCreated, 201, description="Queued; `Location` is its URL.")
@response_schema(CalculationCreated, 200, description="Created before with this Idempotency-Key.")
async def create_calculation(request: web.Request) -> web.Response:
    params, key = request["json"], request["headers"].get("key")
    config = request.app[CONFIG]
    points = point_count(params["date_start"], params["date_fin"], params["lag"])
    if points > config.max_points:
        message = f"The result would have {points} rows; the limit is {config.max_points}."
        raise InvalidRequest("some fields are invalid", {"lag": [message]})
    # Hashed before a seed is drawn, so that a retry of the same body matches.
    request_hash = None if key is None else params_hash(params)
    params.setdefault("seed", SEEDS.randint(0, MAX_SEED))
    calc_id = await request.app[DB].insert(
        db.insert_params(
            **params, max_queued=config.max_queued, idempotency_key=key, request_hash=request_hash
        )
    )
    if calc_id is None:
        return await replay_or_refuse(request, key, request_hash)
    log.info("calculation %d queued", calc_id, extra={"calc_id": calc_id})
    request.app[METRICS].runs_created.inc()
    # This process's consumer, at once; on PostgreSQL the database tells every worker.
    request.app[EVENTS].queued()
    return created_response(request, calc_id, Status.QUEUED, 201)


def params_hash(params: dict[str, Any]) -> str:
    """The validated request, in key order: the same run asked for twice hashes the same."""
    canonical = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def replay_or_refuse(
    request: web.Request, key: str | None, request_hash: str | None
) -> web.Response:
    """Nothing was inserted: the key was used before, or the queue is full."""
    if key is not None:
        found = await request.app[DB].get_by_idempotency_key(key)
        if found is not None:
            calc, first_hash = found
            if first_hash != request_hash:
                raise Conflict(
                    f"Idempotency-Key {key!r} was used for calculation {calc.id} with another"
                    " body; nothing was written"
                )
            return created_response(request, calc.id, calc.status, 200)
    limit = request.app[CONFIG].max_queued
    raise QueueFull(f"{limit} calculations are already queued; retry later")


def created_response(
    request: web.Request, calc_id: int, calc_status: Status, status: int
) -> web.Response:
    location = request.app.router["calculation"].url_for(calc_id=str(calc_id))
    body = {"id": calc_id, "status": calc_status.value}  # the shape of CalculationCreated
    return web.json_response(body, status=status, headers={"Location": str(location)})


@docs(tags=["calculations"], summary="List calculations by launch date", responses=INVALID)
@querystring_schema(ListQuery)
@response_schema(CalculationPage, 200)
async def list_calculations(request: web.Request) -> web.Response:
    query = request["querystring"]
    per_page, status = query["per_page"], query.get("status")
    calcs, total = await request.app[DB].list_calculations(
        limit=per_page,
        offset=(query["page"] - 1) * per_page,
        descending=query["order"] == "desc",
        status=status,
    )
    page = {
        "items": [calc._asdict() for calc in calcs],  # the shape of CalculationSummary
        "page": query["page"],
        "per_page": per_page,
        "total": total,
        "pages": math.ceil(total / per_page),
    }
    return web.json_response(page)


@docs(
    tags=["calculations"],
    summary="One calculation, with its result once done",
    description="With `wait=S`, the answer comes when the run ends or after S seconds.",
    responses={**NOT_FOUND, **INVALID},
)
@querystring_schema(CalculationQuery)
@response_schema(CalculationOut, 200)
async def get_calculation(request: web.Request) -> web.StreamResponse:
    calc_id = int(request.match_info["calc_id"])
    query = request["querystring"]
    form: Form = "gzip" if accepts_gzip(request.headers.get("Accept-Encoding", "")) else "plain"
    wait = query.get("wait")
    if wait is None:
        calc = await request.app[DB].get(calc_id, form)
    else:
        calc = await get_when_ended(request, calc_id, form, wait)
    if calc is None:
        raise CalculationNotFound(f"calculation {calc_id} does not exist")
    return await send_calculation(request, calc, query["fields_"])


async def get_when_ended(
    request: web.Request, calc_id: int, form: Form, wait: float
) -> Calculation | None:
    """The run once it has ended, or as it is after `wait` seconds. The end of a run is told
    (`RunEvents.ended`) by this process's consumer and, on PostgreSQL, by the database
    whichever process ended it; the row is looked at too, every CLIENT_CHECK seconds, or
    every ELSEWHERE_CHECK where other processes' ends are not told (SQLite, role api). A
    waiter whose client has left stops within a second."""
    app = request.app
    told = app[EVENTS].shared or CONSUMER in app
    check = CLIENT_CHECK if told else ELSEWHERE_CHECK
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:  # again after a wake-up by a run that went back to the queue (a full disk)
        with app[EVENTS].watch(calc_id) as ended:
            calc = await app[DB].get(calc_id, form)
            if calc is None or calc.status in TERMINAL or loop.time() >= deadline:
                return calc
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    while not ended.is_set():
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(check):
                                await ended.wait()
                        if not ended.is_set() and await ended_elsewhere(request, calc_id):
                            break


async def ended_elsewhere(request: web.Request, calc_id: int) -> bool:
    """Whether the run has ended; ConnectionResetError once the client has gone. aiohttp does
    not cancel a handler whose client leaves, so a waiter looks at its connection too."""
    if client_gone(request):
        raise ConnectionResetError("the client left while waiting")
    calc = await request.app[DB].get_calculation(calc_id)
    return calc is None or calc.status in TERMINAL


@docs(
    tags=["calculations"],
    summary="Cancel a queued or running calculation",
    description="A running kernel process is ended, and replaced by a fresh one.",
    responses={**NOT_FOUND, 409: error("The run has already ended.")},
)
@response_schema(CalculationOut, 200, description="Cancelled.")
async def cancel_calculation(request: web.Request) -> web.StreamResponse:
    calc_id = int(request.match_info["calc_id"])
    database, events = request.app[DB], request.app[EVENTS]
    calc = await database.cancel(calc_id)
    if calc is None:
        existing = await database.get_calculation(calc_id)
        if existing is None:
            raise CalculationNotFound(f"calculation {calc_id} does not exist")
        raise Conflict(f"calculation {calc_id} is already {existing.status}")
    # A kernel of this process stops now; another process's, when the database tells it.
    events.cancelled(calc_id)
    events.ended(calc_id)
    request.app[METRICS].finished(Status.CANCELLED)
    log.info("calculation %d cancelled", calc_id, extra={"calc_id": calc_id})
    return await send_calculation(request, calc, ())


@docs(
    tags=["calculations"],
    summary="Delete a calculation",
    description="Whatever its status: a queued run never starts, a running run's kernel is"
    " stopped as by a cancel. Its result, CSV and record are gone; its id is never given"
    " again.",
    responses={**NOT_FOUND, 204: {"description": "Deleted."}},
)
async def delete_calculation(request: web.Request) -> web.StreamResponse:
    calc_id = int(request.match_info["calc_id"])
    status = await request.app[DB].delete(calc_id)
    if status is None:
        raise CalculationNotFound(f"calculation {calc_id} does not exist")
    if status not in TERMINAL:  # as for a cancel: another process's kernel, by the database
        request.app[EVENTS].cancelled(calc_id)
        request.app[EVENTS].ended(calc_id)
    request.app[METRICS].deleted(1, "request")
    log.info("calculation %d deleted (it was %s)", calc_id, status, extra={"calc_id": calc_id})
    return web.Response(status=204)


@docs(
    tags=["calculations"],
    summary="Delete ended calculations by filter",
    description="Deletes the done, failed or cancelled runs that match every filter given;"
    " queued and running runs are never deleted this way. At least one filter is needed.",
    responses=INVALID,
)
@querystring_schema(DeleteQuery)
@response_schema(Deleted, 200)
async def delete_calculations(request: web.Request) -> web.Response:
    query = request["querystring"]
    status, before = query.get("status"), query.get("finished_before")
    before_text = None if before is None else db.utc_text(before)
    deleted = 0
    while True:  # a batch at a time: other writes pass between them
        batch = await request.app[DB].delete_finished(status, before_text, DELETE_BATCH)
        deleted += batch
        if batch < DELETE_BATCH:
            break
    request.app[METRICS].deleted(deleted, "request")
    log.info("deleted %d ended calculation(s) by filter", deleted)
    return web.json_response({"deleted": deleted})


async def send_calculation(
    request: web.Request, calc: Calculation, extra: tuple[str, ...] | list[str]
) -> web.StreamResponse:
    """The run as JSON, with its stored result spliced in as it is, never parsed: as stored
    JSON, or, for a gzip answer, as the deflate blocks compressed once when it was stored."""
    shown = ["id", "created_at", "status", *dict.fromkeys(extra)]
    if calc.status is Status.FAILED:
        shown.append("error")
    meta: dict[str, Any] = calculation_schema(tuple(shown)).dump(calc)
    prefix, suffix = (json.dumps(meta)[:-1] + ', "result": ').encode(), b"}"
    headers = {"Vary": "Accept-Encoding"}
    if calc.status is not Status.DONE:
        parts = [prefix, b"null", suffix]
    elif calc.deflated is not None:
        parts = gzip_parts(prefix, calc.deflated, suffix)
        headers["Content-Encoding"] = "gzip"
    else:
        assert calc.result is not None
        parts = [prefix, *calc.result, suffix]
    return await send_parts(request, parts, "application/json", headers)


async def send_parts(
    request: web.Request,
    parts: list[bytes],
    content_type: str,
    headers: dict[str, str],
    charset: str | None = None,
) -> web.StreamResponse:
    """A body made of parts: the database hands stored results over in pieces under `CHUNK`.
    A large one goes out a part at a time, each written when the socket has room, with the
    loop's other work served between two parts; no copy of the whole body is ever made."""
    size = sum(len(part) for part in parts)
    if size <= CHUNK:
        return web.Response(
            body=b"".join(parts), content_type=content_type, charset=charset, headers=headers
        )
    response = web.StreamResponse(headers=headers)
    response.content_type, response.content_length = content_type, size
    if charset is not None:
        response.charset = charset
    with memory.large_answer():
        try:
            await response.prepare(request)
            for part in parts:
                await response.write(part)
                # A write to a socket that keeps up returns without yielding: yield here, or
                # a 7 MB answer would be written in one go while every other request waits.
                await asyncio.sleep(0)
            await response.write_eof()
        except ConnectionError:  # aiohttp raises several kinds: reset, broken pipe, lost
            log.debug("the client left before the whole answer was sent")
    return response
