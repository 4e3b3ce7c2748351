"""Kernel processes: one per slot, each driven from the event loop through a pipe of its own,
so that one run can be stopped alone and no thread stands between the loop and a process."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, NoReturn, TypeVar

from service import worker

T = TypeVar("T")
EXIT_PATIENCE = 2.0  # seconds a kernel process may take to leave once the server lets go


class KernelStopped(Exception):
    """The kernel process was ended on purpose (cancel, time limit, shutdown)."""


class KernelDied(Exception):
    """The kernel process died by itself (killed from outside, out of memory, a crash)."""


class KernelTraceback(Exception):
    """Where in the kernel process an exception was raised: the cause of the one re-raised."""

    def __str__(self) -> str:
        return f"\n{self.args[0]}"


class ProcessGone(Exception):
    """The pipe to the process reached its end: the process exited or was killed."""


class Slot:
    """One spawned kernel process whose pid is known, so that killing it stops exactly the run
    it computes; a new process then takes its place. Calls and answers are small (the process
    stores results itself) and go through a pipe the event loop watches."""

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._process: BaseProcess | None = None
        self._pipe: Connection | None = None
        self._ready: asyncio.Future[None] | None = None
        self._answer: asyncio.Future[Any] | None = None
        self._stopping = False

    def start(self) -> None:
        """Start the process without waiting for it: it imports pandas while the server starts."""
        # spawn, not fork: the server process has threads (one per database connection).
        context = multiprocessing.get_context("spawn")
        self._pipe, child_end = context.Pipe()
        # Given, not read in the child: the server may already be gone when it starts.
        args = (child_end, os.getpid(), self._database_url)
        self._process = context.Process(target=worker.serve, args=args, daemon=True)
        self._process.start()
        child_end.close()
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        loop.add_reader(self._pipe.fileno(), self._on_message)
        self._stopping = False

    @property
    def started(self) -> bool:
        """Whether the process has told it is ready, and is still watched."""
        ready = self._ready
        return (
            ready is not None and ready.done() and not ready.cancelled() and not ready.exception()
        )

    async def ready(self) -> None:
        """Wait until the process has started; a run's time limit counts from then."""
        if self._process is None:
            self.start()
        assert self._ready is not None
        try:
            await asyncio.shield(self._ready)
        except ProcessGone:
            self._fail()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        await self.ready()
        assert self._pipe is not None
        if self._stopping:  # stopped while it was starting: the run must not begin
            self._fail()
        self._answer = asyncio.get_running_loop().create_future()
        try:
            self._pipe.send((fn, args))
            result: T = await self._answer
            return result
        except (ProcessGone, BrokenPipeError):
            self._fail()
        finally:
            self._answer = None

    def _on_message(self) -> None:
        assert self._pipe is not None
        try:
            kind, value, *rest = self._pipe.recv()
        except (EOFError, OSError):
            self._gone()
            return
        if kind == worker.READY:
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
            return
        if self._answer is None or self._answer.done():  # pragma: no cover (one call at a time)
            return
        if kind == worker.RAISED:
            value.__cause__ = KernelTraceback(rest[0])
            self._answer.set_exception(value)
        else:
            self._answer.set_result(value)

    def _gone(self) -> None:
        self._unwatch()
        for future in (self._ready, self._answer):
            if future is not None and not future.done():
                future.set_exception(ProcessGone())
                # Marked as seen: nobody may be waiting yet, and whoever awaits it still gets it.
                future.exception()

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
        if self._process is not None and self._process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._process.pid, signal.SIGKILL)

    def _unwatch(self) -> None:
        if self._pipe is not None and not self._pipe.closed:
            asyncio.get_running_loop().remove_reader(self._pipe.fileno())
            self._pipe.close()

    def close(self) -> BaseProcess | None:
        """Let go of the process, and return it; one still running sees the pipe end and
        leaves."""
        process = self._process
        self._unwatch()
        if self._ready is not None and not self._ready.done():
            self._ready.cancel()
        self._process, self._pipe, self._ready = None, None, None
        return process


class KernelPool:
    """`workers` slots, started together so that the first run does not wait for pandas."""

    def __init__(self, workers: int, database_url: str) -> None:
        self.slots = [Slot(database_url) for _ in range(workers)]

    def start(self) -> None:
        for slot in self.slots:
            slot.start()

    async def close(self) -> None:
        """Each process that has started sees its pipe end and leaves as a program does (its
        connection closed, its exit handlers run); one still there after EXIT_PATIENCE, in
        the middle of a run, is killed, and so is one still starting (importing pandas)."""
        processes = []
        for slot in self.slots:
            started = slot.started
            process = slot.close()
            if process is None:
                continue
            if started:
                processes.append(process)
            elif process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
        deadline = time.monotonic() + EXIT_PATIENCE
        for process in processes:
            await asyncio.to_thread(process.join, max(0.0, deadline - time.monotonic()))
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
