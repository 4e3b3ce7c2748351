"""The ping-pong pipeline: random draws, hop records, background forwards, and their context.

Random draws. Each app owns one `random.Random(config.pingpong_seed)`. A service handling a
valid payload makes all its draws at once, before it records the hop, in this order:

1. `rng.random() < pingpong_reject_rate`: the payload is refused. Every valid hop draws this,
   the hop of a kick and the last hop included.
2. Nothing more if it was refused, or if this hop's number reached `pingpong_max_hops`.
3. Service A only: `rng.randint(0, 100)`, the digit it appends.

An invalid payload draws nothing. The hops of one pipeline happen one after another, so in one
process, where A and B share the generator, the draws follow the hops: hop 1 (A), hop 2 (B),
and so on. With two processes each one's generator serves only its own hops. Pipelines running
at the same time in one process share the generator, so only a lone pipeline is predictable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from service.config import Config
from service.db import Database
from service.keys import CONFIG, DB, PINGPONG
from service.models import Hop, Outcome, Peer
from service.pingpong.errors import PipelinesFull

log = logging.getLogger(__name__)

# A hop is answered once validated and recorded, so a partner that takes longer is stuck.
FORWARD_TIMEOUT = aiohttp.ClientTimeout(total=10, connect=5)
MAX_ANSWER = 2000  # bytes of a partner's answer read for its error code
ERROR_CODE = re.compile(r"[a-z_]{1,40}")  # the shape of this service's error codes
LOUD = frozenset(
    {Outcome.INVALID, Outcome.PARTNER_UNREACHABLE, Outcome.PARTNER_ERROR, Outcome.INTERRUPTED}
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the draws decided for one hop: a stop with its reason, or a digit for A to append."""

    outcome: Outcome | None
    digit: int | None
    detail: str | None


def new_trace_id() -> str:
    return uuid.uuid4().hex


def partner_base(config: Config, partner: Peer) -> URL | None:
    """The configured base URL of a partner; None means this same server."""
    text = config.pingpong_a_url if partner is Peer.A else config.pingpong_b_url
    if not text:
        return None
    url = URL(text)
    if url.scheme not in ("http", "https") or not url.host:
        setting = f"PINGPONG_{partner.upper()}_URL"
        raise ValueError(
            f"{setting} must be an http(s) URL like http://127.0.0.1:8081, got {text!r}"
        )
    return url


def advance(service: Peer, payload: dict[str, Any], hop: int, digit: int | None) -> dict[str, Any]:
    """The payload as `service` sends it on after handling `hop`."""
    digits = payload["digits"] if digit is None else [*payload["digits"], digit]
    step = {"hop": hop, "service": service}
    onward = {**payload, "digits": digits, "hop": hop, "sequence": [*payload["sequence"], step]}
    if service is Peer.B:
        onward |= statistics(digits)
    return onward


def statistics(digits: list[int]) -> dict[str, Any]:
    if not digits:
        return {"avg": None, "max": None, "min": None}
    return {"avg": sum(digits) / len(digits), "max": max(digits), "min": min(digits)}


def log_hop(hop: Hop) -> None:
    level = logging.WARNING if hop.outcome in LOUD else logging.INFO
    log.log(
        level,
        "pingpong trace=%s hop=%d service=%s outcome=%s detail=%s",
        hop.trace_id, hop.hop, hop.service, hop.outcome, hop.detail,
        extra={"trace_id": hop.trace_id},
    )  # fmt: skip


def partner_said(body: bytes) -> str:
    """The error code of a partner's answer in our error shape, else a word for what it was. A
    partner's own words are never shown: a server that is not ours could put anything there."""
    with contextlib.suppress(ValueError, TypeError, KeyError):
        code = json.loads(body)["error"]["code"]
        if isinstance(code, str) and ERROR_CODE.fullmatch(code):
            return code
    return "an answer not in this service's error shape"


class Pipeline:
    """What one app needs to play A and B: the random source, the records, the forwards."""

    def __init__(self, database: Database, session: aiohttp.ClientSession, config: Config) -> None:
        self._db = database
        self._session = session
        self._rng = random.Random(config.pingpong_seed)
        self._reject_rate = config.pingpong_reject_rate
        self._max_hops = config.pingpong_max_hops
        self._max_in_flight = config.pingpong_max_in_flight
        self._partners = {peer: partner_base(config, peer) for peer in Peer}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def max_hops(self) -> int:
        return self._max_hops

    def partner_url(self, partner: Peer, origin: Callable[[], URL]) -> URL:
        """Where to send `partner` the payload; `origin()`, this server's own address, is
        asked only if the partner's is unset."""
        base = self._partners[partner] or origin()
        return base.joinpath("pingpong", partner.value)

    def _draw(self, service: Peer, hop: int) -> Verdict:
        """Every random draw of one hop, in the order the module docstring gives."""
        if self._rng.random() < self._reject_rate:
            rate = f"{self._reject_rate:.3g}"
            return Verdict(Outcome.REFUSED, None, f"{service} refused it at random (rate {rate})")
        if hop >= self._max_hops:
            return Verdict(Outcome.MAX_HOPS, None, f"the hop limit of {self._max_hops} is reached")
        return Verdict(None, self._rng.randint(0, 100) if service is Peer.A else None, None)

    async def receive(
        self, service: Peer, received_json: str, payload: dict[str, Any], partner_url: URL
    ) -> Hop | None:
        """Handle one valid payload: draw, record the hop, and forward it in the background.

        A payload without a trace starts a new one. None if the trace already has this hop.
        """
        if len(self._tasks) >= self._max_in_flight:
            raise PipelinesFull(
                f"{self._max_in_flight} ping-pong forwards are under way; retry later"
            )
        trace_id = payload["trace_id"] or new_trace_id()
        number = payload["hop"] + 1
        verdict = self._draw(service, number)
        await self._db.add_trace(trace_id)
        hop = await self._db.insert_hop(
            trace_id=trace_id,
            hop=number,
            service=service,
            outcome=verdict.outcome,
            http_status=400 if verdict.outcome is Outcome.REFUSED else 202,
            detail=verdict.detail,
            payload_json=received_json,
        )
        if hop is not None and hop.outcome is None:
            onward = advance(service, {**payload, "trace_id": trace_id}, number, verdict.digit)
            self._spawn(self._forward(hop, onward, partner_url))
        elif hop is not None:
            log_hop(hop)
        return hop

    async def record_invalid(
        self, service: Peer, trace_id: str, hop: int, received_json: str, detail: str
    ) -> Hop | None:
        """Record a payload the schema refused as hop `hop` of its trace."""
        await self._db.add_trace(trace_id)
        recorded = await self._db.insert_hop(
            trace_id=trace_id,
            hop=hop,
            service=service,
            outcome=Outcome.INVALID,
            http_status=400,
            detail=detail,
            payload_json=received_json,
        )
        if recorded is not None:
            log_hop(recorded)
        return recorded

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward(self, hop: Hop, payload: dict[str, Any], url: URL) -> None:
        try:
            outcome, status, detail = await self._post(hop.service.partner, url, payload)
        except asyncio.CancelledError:
            detail = f"{hop.service} shut down before {hop.service.partner} answered"
            await asyncio.shield(self._finish(hop, Outcome.INTERRUPTED, None, detail))
            raise
        try:
            await asyncio.shield(self._finish(hop, outcome, status, detail))
        except Exception:
            log.exception(
                "pingpong trace=%s hop=%d: recording the forward failed",
                hop.trace_id,
                hop.hop,
                extra={"trace_id": hop.trace_id},
            )

    async def _post(
        self, partner: Peer, url: URL, payload: dict[str, Any]
    ) -> tuple[Outcome, int | None, str]:
        """Send the payload on, and read what the partner answered as the hop's outcome."""
        try:
            async with self._session.post(url, json=payload) as resp:
                status, body = resp.status, await resp.content.read(MAX_ANSWER)
        except TimeoutError:
            timeout = FORWARD_TIMEOUT.total
            return (
                Outcome.PARTNER_UNREACHABLE,
                None,
                f"{partner} at {url} gave no answer in {timeout} s",
            )
        except aiohttp.ClientError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            return Outcome.PARTNER_UNREACHABLE, None, f"{partner} at {url} is unreachable: {reason}"
        except Exception as exc:  # still an end the trace shows, never a task dying unseen
            log.exception("pingpong: sending to %s at %s failed", partner, url)
            reason = f"{type(exc).__name__}: {exc}"
            return Outcome.PARTNER_UNREACHABLE, None, f"{partner} at {url} failed: {reason}"
        if status == 202:
            return Outcome.FORWARDED, status, f"{partner} accepted it"
        if status == 400:  # the partner records its own refusal
            return Outcome.FORWARDED, status, f"{partner} answered 400, {partner_said(body)}"
        return Outcome.PARTNER_ERROR, status, f"{partner} answered {status}, {partner_said(body)}"

    async def _finish(
        self, hop: Hop, outcome: Outcome, partner_status: int | None, detail: str
    ) -> None:
        finished = await self._db.finish_hop(
            trace_id=hop.trace_id,
            hop=hop.hop,
            outcome=outcome,
            partner_status=partner_status,
            detail=detail,
        )
        if finished is not None:
            log_hop(finished)

    async def close(self) -> None:
        """Stop every forward in flight; each records itself as interrupted."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def pingpong_context(app: web.Application) -> AsyncIterator[None]:
    token = app[CONFIG].api_token
    # The partner asks for the token this server asks for: the hops carry it.
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # No pool limit: one partner that never answers must not make the others' forwards wait
    # for a connection. PINGPONG_MAX_IN_FLIGHT bounds the forwards instead.
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        timeout=FORWARD_TIMEOUT, headers=headers, connector=connector
    ) as session:
        pipeline = Pipeline(app[DB], session, app[CONFIG])
        app[PINGPONG] = pipeline
        yield
        await pipeline.close()
