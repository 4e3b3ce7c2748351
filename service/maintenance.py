"""Work on stored runs that no request waits for: the retention, and the rewrite of runs stored
before results were kept compact.

Both go a bounded batch at a time, each its own short write, so that creates, claims and
reads pass between batches: the writer is never held for long, whatever the number of rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from aiohttp import web

from service.db import utc_text
from service.keys import CONFIG, DB, METRICS

log = logging.getLogger(__name__)

PRUNE_BATCH = 200  # runs deleted per statement: a few milliseconds of the writer
MAX_PRUNE_PERIOD = 60.0  # seconds between looks at most, whatever RETENTION is
REWRITE_BATCH = 10  # old runs rewritten per statement: each frees a few MB of pages at most
REWRITE_PERIOD = 60.0  # seconds between looks for runs stored the old way
MAINTENANCE = web.AppKey("maintenance", asyncio.Task[None])


def cutoff(retention: float) -> str:
    """The finish time before which runs are deleted, in the text the rows keep."""
    return utc_text(datetime.now(UTC) - timedelta(seconds=retention))


async def prune(app: web.Application) -> int:
    """Delete every run that ended more than RETENTION seconds ago, a batch at a time; how
    many. Nothing while another process prunes."""
    database, retention = app[DB], app[CONFIG].retention
    assert retention
    deleted = 0
    while True:
        batch = await database.prune(cutoff(retention), PRUNE_BATCH)
        if not batch:
            break
        deleted += batch
        app[METRICS].deleted(batch, "retention")
        await asyncio.sleep(0)  # the loop's other work between batches
    if deleted:
        log.info("retention: deleted %d run(s) that ended over %g s ago", deleted, retention)
    return deleted


async def rewrite_old_rows(app: web.Application) -> int:
    """Store every run kept the old way the compact way, a few runs a write; how many."""
    database, rewritten = app[DB], 0
    while batch := await database.compact(REWRITE_BATCH):
        rewritten += batch
        await asyncio.sleep(0)  # the loop's other work between batches
    if rewritten:
        log.info("stored %d run(s) of an older release the compact way", rewritten)
    return rewritten


async def maintain(app: web.Application) -> None:
    retention = app[CONFIG].retention
    period = min(retention, MAX_PRUNE_PERIOD) if retention else REWRITE_PERIOD
    loop, rewritten_at, failing = asyncio.get_running_loop(), float("-inf"), ""
    while True:
        try:
            if loop.time() - rewritten_at >= REWRITE_PERIOD:
                await rewrite_old_rows(app)
                rewritten_at = loop.time()
            if retention:
                await prune(app)
            if failing:
                log.info("maintenance goes on: the database answers again")
            failing = ""
        except Exception as exc:  # it tries again next period; said once, not each time
            if str(exc) != failing:
                log.warning("maintenance waits: %s: %s", type(exc).__name__, exc)
            failing = str(exc)
        await asyncio.sleep(period)


async def maintenance_context(app: web.Application) -> AsyncIterator[None]:
    app[MAINTENANCE] = asyncio.create_task(maintain(app))
    yield
    app[MAINTENANCE].cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await app[MAINTENANCE]
