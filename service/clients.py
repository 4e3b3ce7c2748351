"""Bounds on slow clients: a connection whose answer stops moving out is closed.

aiohttp bounds the rest: its keep-alive timer (CLIENT_TIMEOUT, set in `__main__`) closes a
connection that has not finished a request head in time, and `parser.read_body` bounds a body.
But an answer waits for its reader forever: a client that stops reading holds the connection
and the answer's buffers. Every answer's connection is watched until its bytes have left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from service.keys import CONFIG, STALLS

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 0.5  # seconds between looks at the watched connections


class StalledAnswers:
    """Connections with bytes still to send, and since when none of them has left."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._watched: dict[asyncio.Transport, tuple[int, float]] = {}

    def watch(self, transport: asyncio.Transport | None) -> None:
        if transport is not None and transport not in self._watched:
            self._watched[transport] = (0, asyncio.get_running_loop().time())

    def sweep(self, now: float) -> None:
        """Forget the connections whose answers have left; close those stalled too long."""
        for transport, (pending_before, since) in list(self._watched.items()):
            pending = 0 if transport.is_closing() else transport.get_write_buffer_size()
            if pending == 0:
                del self._watched[transport]
            elif pending < pending_before or pending_before == 0:
                self._watched[transport] = (pending, now)  # the client read some
            elif now - since >= self._timeout:
                log.info(
                    "closed a connection whose client read none of %d bytes in %g s",
                    pending,
                    self._timeout,
                )
                transport.abort()
                del self._watched[transport]
            else:
                self._watched[transport] = (pending, since)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.sweep(loop.time())


async def watch_answer(request: web.Request, response: web.StreamResponse) -> None:
    request.app[STALLS].watch(request.transport)


async def clients_context(app: web.Application) -> AsyncIterator[None]:
    stalls = StalledAnswers(app[CONFIG].client_timeout)
    app[STALLS] = stalls
    task = asyncio.create_task(stalls.run(), name="stalled answers")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
