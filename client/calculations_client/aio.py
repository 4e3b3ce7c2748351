"""`AsyncClient`: the methods of `Client`, awaited, over one aiohttp session."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import aiohttp

from calculations_client import protocol
from calculations_client.frames import frame_of
from calculations_client.models import Run
from calculations_client.progress import bar
from calculations_client.protocol import CONCURRENCY, DEFAULT_RETRY, Call, Retry
from calculations_client.waiting import Deadline, no_result

if TYPE_CHECKING:
    import pandas


class AsyncClient:
    """As `Client`, with every method a coroutine and `runs` an async iterator. Open it with
    `async with`, or call `aclose()` when done."""

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
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def session(self) -> aiohttp.ClientSession:
        """Made on first use, inside the running loop, as aiohttp wants."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def send(self, call: Call) -> bytes | None:
        """One request, retried within `retry`; the body, or None (see `Call.done_before`)."""
        attempts = protocol.Attempts(call, self.retry, self.url)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeout, sock_read=self.timeout + call.holds
        )
        while True:
            attempts.start()
            try:
                async with self.session().request(
                    call.method,
                    call.url(self.url),
                    data=call.body,
                    headers=call.headers(self.token),
                    timeout=timeout,
                    allow_redirects=False,
                ) as answer:
                    status, body = answer.status, await answer.read()
                    retry_after = answer.headers.get("Retry-After")
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                pause = attempts.unanswered(exc)
            else:
                if (later := attempts.retry_after(status, retry_after)) is None:
                    return attempts.result(status, body)
                pause = later
            await asyncio.sleep(pause)

    async def json(self, call: Call) -> Any:
        body = await self.send(call)
        return None if body is None else json.loads(body)

    async def submit(
        self,
        date_start: str | date,
        date_fin: str | date,
        lag: int,
        *,
        name: str | None = None,
        seed: int | None = None,
        idempotency_key: str | None = None,
    ) -> Run:
        call = protocol.create(date_start, date_fin, lag, name, seed, idempotency_key)
        return Run.from_json(await self.json(call))

    async def get(self, calc_id: int) -> Run:
        return Run.from_json(await self.json(protocol.get(calc_id)))

    async def wait(self, calc_id: int, timeout: float | None = None) -> Run:
        deadline = Deadline(calc_id, timeout)
        while True:
            run = Run.from_json(await self.json(protocol.get(calc_id, deadline.hold())))
            if run.ended:
                return run
            deadline.check(run)

    async def result(self, calc_id: int, timeout: float | None = None) -> pandas.DataFrame:
        run = await self.wait(calc_id, timeout)
        if run.result is None:
            raise no_result(run)
        return frame_of(run.result)

    async def map(
        self, params: Any, *, progress: bool = True, concurrency: int = CONCURRENCY
    ) -> list[Run]:
        sets = protocol.sweep(params)
        runs: list[Run | None] = [None] * len(sets)
        todo = iter(enumerate(sets))
        submitted: asyncio.Queue[tuple[int, int] | None] = asyncio.Queue()
        shown = bar(len(sets), progress)

        async def create_all() -> None:
            for number, one in todo:  # one iterator shared by all: each set is taken once
                submitted.put_nowait((number, (await self.submit(**one)).id))

        pace = Pace()

        async def wait_all() -> None:
            while (item := await submitted.get()) is not None:
                number, calc_id = item
                asked = time.monotonic()
                runs[number] = await self.wait(calc_id)
                shown.update()
                if pace.held(time.monotonic() - asked):
                    await asyncio.sleep(PAUSE)

        try:
            async with asyncio.TaskGroup() as group:
                waiters = [group.create_task(wait_all()) for _ in range(WAITS)]
                async with asyncio.TaskGroup() as creators:
                    for _ in range(concurrency):
                        creators.create_task(create_all())
                for _ in waiters:
                    submitted.put_nowait(None)
        except BaseExceptionGroup as failures:
            raise first(failures) from None
        finally:
            shown.close()
        return [run for run in runs if run is not None]

    async def runs(self, status: str | None = None, order: str = "desc") -> AsyncIterator[Run]:
        seen: set[int] = set()
        for number in itertools.count(1):
            page = await self.json(protocol.page(number, status, order))
            for run in protocol.fresh(page, seen):
                yield run
            if protocol.last_page(page, number):
                return

    async def cancel(self, calc_id: int) -> Run:
        body = await self.json(protocol.cancel(calc_id))
        return await self.get(calc_id) if body is None else Run.from_json(body)

    async def csv(self, calc_id: int, path: str | Path | IO[bytes]) -> None:
        body = await self.send(protocol.csv(calc_id)) or b""
        await asyncio.to_thread(write, path, body)

    async def delete(self, calc_id: int) -> None:
        await self.send(protocol.delete(calc_id))


# How `map` waits. A wait the service holds (its run has not ended) costs it twice the CPU
# of one answered at once, taken from the consumer on the same event loop. So two waits at a
# time, in submission order, and after one that was held a pause, in which the runs behind
# end: each is then fetched by a quick request (docs/client.md#decisions).
WAITS = 2
PAUSE = 0.05


class Pace:
    """Whether the service held a wait: slower than twice the quickest answer so far, plus
    2 ms, so that a distant service is judged by its own pace."""

    def __init__(self) -> None:
        self.quickest = float("inf")

    def held(self, seconds: float) -> bool:
        self.quickest = min(self.quickest, seconds)
        return seconds > 2 * self.quickest + 0.002


def write(path: str | Path | IO[bytes], body: bytes) -> None:
    if isinstance(path, (str, Path)):
        Path(path).write_bytes(body)
    else:
        path.write(body)


def first(failures: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that stopped `map`, out of the task groups it is wrapped in."""
    found: BaseException = failures
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found
