"""Kernel processes: one single-process executor per slot, so that one run can be stopped alone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from service import worker

log = logging.getLogger(__name__)

T = TypeVar("T")


class KernelStopped(Exception):
    """The kernel process was ended on purpose (cancel, time limit, shutdown)."""


class KernelDied(Exception):
    """The kernel process died by itself (killed from outside, out of memory, a crash)."""


class Slot:
    """One kernel process. A `ProcessPoolExecutor` of one worker, whose pid is known, so that
    killing it stops exactly the run it computes; a new process then takes its place."""

    def __init__(self, number: int, db_path: Path) -> None:
        self.number = number
        self._db_path = db_path
        self._executor: ProcessPoolExecutor | None = None
        self._ready: asyncio.Future[int] | None = None
        self._pid: int | None = None
        self._stopping = False

    def start(self) -> None:
        """Start the process without waiting for it: it imports pandas while the server starts."""
        # spawn, not fork: the server process has threads (aiosqlite keeps one per connection).
        self._executor = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=worker.init,
            # Given, not read in the child: the server may already be gone when it starts.
            initargs=(os.getpid(), self._db_path),
        )
        self._ready = asyncio.get_running_loop().run_in_executor(self._executor, os.getpid)
        self._stopping = False

    async def ready(self) -> None:
        """Wait until the process has started; a run's time limit counts from then."""
        if self._executor is None:
            self.start()
        assert self._ready is not None
        try:
            self._pid = await self._ready
        except BrokenProcessPool:
            self._fail()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        await self.ready()
        assert self._executor is not None
        if self._stopping:  # stopped while it was starting: the run must not begin
            self._fail()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except BrokenProcessPool:
            self._fail()

    def _fail(self) -> NoReturn:
        """The process is gone or must go: a fresh one takes its place, and the run ends."""
        stopped = self._stopping
        self.close()
        self.start()
        if stopped:
            raise KernelStopped
        raise KernelDied

    def kill(self) -> None:
        """End the process now; the run it computes raises `KernelStopped`."""
        self._stopping = True
        if self._pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)

    def close(self) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor, self._ready, self._pid = None, None, None


class KernelPool:
    """`workers` slots, started together so that the first run does not wait for pandas."""

    def __init__(self, workers: int, db_path: Path) -> None:
        self.slots = [Slot(number, db_path) for number in range(workers)]

    def start(self) -> None:
        for slot in self.slots:
            slot.start()

    def close(self) -> None:
        for slot in self.slots:
            slot.kill()
            slot.close()
