"""File descriptors: as many as the system allows, and running out of them said once.

When a process has no descriptor left, asyncio's server cannot accept: it logs the error
with its traceback and tries again a second later, for as long as it lasts, and a log that
fills the disk turns one fault into two. Here the first such error is logged once, and the
return of free descriptors once, and the accepts themselves go on as asyncio does them.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)
RECHECK = 1.0  # seconds between looks at the descriptors in use, while they ran out
FREE_AGAIN = 0.9  # below this share of the limit, descriptors are free again


def raise_open_files_limit() -> tuple[int, int]:
    """The soft limit of open files raised to the hard one, as Go's runtime does: the
    default soft limit (often 1,024) is a relic, not a budget. The limits before and after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft >= hard:
        return soft, soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return soft, hard


def in_use() -> int | None:
    """How many descriptors are open; None when not even one is left to look with."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


class DescriptorWatch:
    """The loop's exception handler: an accept that failed for want of descriptors is said
    once, until they are free again; everything else goes to asyncio's own handler."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._out = False

    def handle(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in OUT_OF_DESCRIPTORS:
            if not self._out:
                self._out = True
                limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
                log.error(
                    "out of file descriptors (limit %d): new connections wait until some"
                    " are closed",
                    limit,
                )
                loop.call_later(RECHECK, self._recheck)
            return
        loop.default_exception_handler(context)

    def _recheck(self) -> None:
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        used = in_use()
        if used is not None and used < FREE_AGAIN * limit:
            self._out = False
            log.info("file descriptors are free again (%d in use, limit %d)", used, limit)
        else:
            self._loop.call_later(RECHECK, self._recheck)


async def descriptors_context(app: web.Application) -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(DescriptorWatch(loop).handle)
    yield
    loop.set_exception_handler(previous)
