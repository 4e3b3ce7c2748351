"""The background side: the kernel process pool and the consumer that drains the queue into it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import aiosqlite
from aiohttp import web

import kernel
from service import db
from service.keys import CONFIG, CONSUMER, DB, POOL
from service.models import Calculation

log = logging.getLogger(__name__)

T = TypeVar("T")


class KernelPool:
    """A process pool that replaces itself when one of its processes dies."""

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        # spawn, not fork: the server process has threads (aiosqlite keeps one per connection).
        executor = ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=kernel.warm_up,
        )
        # Start the processes now, so the first run does not wait for them and pandas to load.
        for _ in range(self._workers):
            executor.submit(kernel.warm_up)
        return executor

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except BrokenProcessPool:
            log.error("a kernel process died; starting a new pool")
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._start()
            raise

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class Consumer:
    """Claims queued runs one at a time, in submission order, and records how each ends."""

    def __init__(
        self,
        conn: aiosqlite.Connection,
        pool: KernelPool,
        *,
        kernel_delay: float,
        poll_interval: float,
    ) -> None:
        self._conn = conn
        self._pool = pool
        self._kernel_delay = kernel_delay
        self._poll_interval = poll_interval
        self._wakeup = asyncio.Event()

    def notify(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            # Cleared before draining, so a run submitted mid-drain still wakes the next wait.
            self._wakeup.clear()
            while await self.run_once():
                pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._poll_interval)

    async def run_once(self) -> bool:
        """Run the oldest queued calculation; False when the queue is empty."""
        calc = await db.claim_next(self._conn)
        if calc is None:
            return False
        log.info("calculation %d running (attempt %d)", calc.id, calc.attempts)
        await self._compute(calc)
        return True

    async def _compute(self, calc: Calculation) -> None:
        started = time.perf_counter()
        try:
            result = await self._pool.run(
                kernel.result_json, calc.date_start, calc.date_fin, calc.lag, calc.seed,
                self._kernel_delay,
            )  # fmt: skip
        except Exception as exc:
            duration = round(time.perf_counter() - started, 6)
            log.exception("calculation %d failed", calc.id)
            await asyncio.shield(db.mark_failed(self._conn, calc.id, describe(exc), duration))
        else:
            duration = round(time.perf_counter() - started, 6)
            await asyncio.shield(db.mark_done(self._conn, calc.id, result, duration))
            log.info("calculation %d done in %.3f s", calc.id, duration)


def describe(exc: Exception) -> str:
    """The message a user reads on a failed run: what went wrong, without a traceback."""
    if isinstance(exc, BrokenProcessPool):
        return "the kernel process died while computing this run"
    return f"{type(exc).__name__}: {exc}"


async def pool_context(app: web.Application) -> AsyncIterator[None]:
    pool = KernelPool(app[CONFIG].workers)
    app[POOL] = pool
    yield
    # In a thread: shutting down waits for a running kernel, and the loop still has work.
    await asyncio.to_thread(pool.shutdown)


async def consumer_context(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    consumer = Consumer(
        app[DB], app[POOL], kernel_delay=config.kernel_delay, poll_interval=config.poll_interval
    )
    app[CONSUMER] = consumer
    task = asyncio.create_task(consumer.run(), name="consumer")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
