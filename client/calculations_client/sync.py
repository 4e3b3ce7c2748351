"""`Client`: the API in plain calls, over kept-alive http.client connections (safe to share
between threads)."""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from datetime import date
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, TypeVar

from calculations_client import protocol
from calculations_client.aio import AsyncClient, write
from calculations_client.connections import Connections
from calculations_client.frames import frame_of
from calculations_client.models import Run
from calculations_client.protocol import CONCURRENCY, DEFAULT_RETRY, Call, Retry
from calculations_client.waiting import Deadline, no_result

if TYPE_CHECKING:
    import pandas

T = TypeVar("T")


class Client:
    """The calculations service. `url` defaults to CALCULATIONS_URL, then
    http://127.0.0.1:8080; `token` to CALCULATIONS_TOKEN. `timeout` bounds the connect and
    each read of one request (a `?wait=` read gets its own seconds on top)."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retry: Retry = DEFAULT_RETRY,
    ) -> None:
        self.url, self.token = protocol.settings(url, token)
        self.timeout, self.retry = timeout, retry
        self._connections = Connections(self.url, timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._connections.close()

    def send(self, call: Call) -> bytes | None:
        """One request, retried within `retry`; the body, or None (see `Call.done_before`)."""
        attempts = protocol.Attempts(call, self.retry, self.url)
        while True:
            attempts.start()
            try:
                status, retry_after, body = self._connections.request(
                    call.method,
                    call.url(""),
                    call.body,
                    call.headers(self.token),
                    self.timeout + call.holds,
                )
            except (OSError, http.client.HTTPException) as exc:
                pause = attempts.unanswered(exc)
            else:
                if (later := attempts.retry_after(status, retry_after)) is None:
                    return attempts.result(status, body)
                pause = later
            time.sleep(pause)

    def json(self, call: Call) -> Any:
        body = self.send(call)
        return None if body is None else json.loads(body)

    def submit(
        self,
        date_start: str | date,
        date_fin: str | date,
        lag: int,
        *,
        name: str | None = None,
        seed: int | None = None,
        idempotency_key: str | None = None,
    ) -> Run:
        """Create a run: its `id` and `status`. Retried under one Idempotency-Key (made here
        unless given), so a lost answer never makes a second run."""
        call = protocol.create(date_start, date_fin, lag, name, seed, idempotency_key)
        return Run.from_json(self.json(call))

    def get(self, calc_id: int) -> Run:
        return Run.from_json(self.json(protocol.get(calc_id)))

    def wait(self, calc_id: int, timeout: float | None = None) -> Run:
        """The run once it has ended, long-polling `?wait=`; TimeoutError after `timeout` s."""
        deadline = Deadline(calc_id, timeout)
        while True:
            run = Run.from_json(self.json(protocol.get(calc_id, deadline.hold())))
            if run.ended:
                return run
            deadline.check(run)

    def result(self, calc_id: int, timeout: float | None = None) -> pandas.DataFrame:
        """The result as a DataFrame, once the run has ended; Conflict if it is not done."""
        run = self.wait(calc_id, timeout)
        if run.result is None:
            raise no_result(run)
        return frame_of(run.result)

    def map(
        self, params: Any, *, progress: bool = True, concurrency: int = CONCURRENCY
    ) -> list[Run]:
        """Submit every parameter set (dicts, or a DataFrame's rows), wait for all, and return
        the runs in input order. The bar counts the runs that have ended. The requests go
        through an `AsyncClient` on an event loop of its own thread: one thread keeps a
        thousand of them under way for less than a pool of threads costs, and it runs in a
        notebook too, whose own thread already has a loop."""
        sets = protocol.sweep(params)  # refused here, in the caller's thread, if wrong

        async def sweep() -> list[Run]:
            async with AsyncClient(
                self.url, self.token, timeout=self.timeout, retry=self.retry
            ) as client:
                return await client.map(sets, progress=progress, concurrency=concurrency)

        return apart(sweep)

    def runs(self, status: str | None = None, order: str = "desc") -> Iterator[Run]:
        """Every run (of one status), by launch date, one page of 100 at a time."""
        seen: set[int] = set()
        for number in itertools.count(1):
            page = self.json(protocol.page(number, status, order))
            yield from protocol.fresh(page, seen)
            if protocol.last_page(page, number):
                return

    def cancel(self, calc_id: int) -> Run:
        """Stop a queued or running run; Conflict if it had ended."""
        body = self.json(protocol.cancel(calc_id))
        return self.get(calc_id) if body is None else Run.from_json(body)

    def csv(self, calc_id: int, path: str | Path | IO[bytes]) -> None:
        """Write the result's CSV to a file (a path, or a binary file object)."""
        write(path, self.send(protocol.csv(calc_id)) or b"")

    def delete(self, calc_id: int) -> None:
        """Delete a run, whatever its status (a running one is stopped first)."""
        self.send(protocol.delete(calc_id))


def apart(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """The coroutine's result, run to its end on a new event loop in a thread of its own.
    Ctrl-C here cancels it there, and waits until it has cleaned up."""
    box: dict[str, Any] = {}
    ready = threading.Event()

    async def main() -> T:
        box["loop"], box["task"] = asyncio.get_running_loop(), asyncio.current_task()
        ready.set()
        return await make()

    def target() -> None:
        try:
            box["result"] = asyncio.run(main())
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=target, name="calculations-map", daemon=True)
    thread.start()
    try:
        thread.join()
    except BaseException:
        ready.wait()
        if "task" in box:
            box["loop"].call_soon_threadsafe(box["task"].cancel)
        thread.join()
        raise
    if "error" in box:
        raise box["error"]
    result: T = box["result"]
    return result
