"""The database interface the rest of the code calls, and the backend chosen from DATABASE_URL.

Handlers, the consumer, the leases, the ping-pong pipeline and the kernel processes call a
`Database` (or, in a kernel process, a `ResultStore`) and never ask which backend runs. Each
backend keeps its SQL beside its functions, in its own modules (`sqlite*.py`,
`postgres*.py`), and returns the same frozen records (`service.models`). DATABASE_URL picks
the backend: `sqlite:///…` (the default, embedded) or `postgresql://…`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from service.config import is_postgres

if TYPE_CHECKING:
    import kernel
    from service.config import Config
    from service.events import RunEvents as Events
    from service.models import Calculation, Hop, Pieces, Status, Summary, Trace, Worker

log = logging.getLogger(__name__)

# How a done run's result is wanted: the stored JSON, or deflated for a gzip answer.
Form = Literal["plain", "gzip"]


def utc_text(moment: datetime) -> str:
    """A moment as the rows keep it: ISO 8601 in UTC, to the microsecond, so that text order
    is time order."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def utcnow() -> str:
    return utc_text(datetime.now(UTC))


def insert_params(
    *,
    name: str,
    date_start: date,
    date_fin: date,
    lag: int,
    seed: int,
    max_queued: int = 2**62,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> dict[str, Any]:
    """What `Database.insert` takes for one new run."""
    return {
        "name": name,
        "date_start": date_start.isoformat(),
        "date_fin": date_fin.isoformat(),
        "lag": lag,
        "seed": seed,
        "now": utcnow(),
        "max_queued": max_queued,
        "key": idempotency_key,
        "hash": request_hash,
    }


Answer = asyncio.Future[int | None]


class GroupCommit:
    """Creates in batches, for either backend: the inserts asked for while one batch is being
    written all go in the next, so that concurrent creates share one trip and one commit.
    `write` inserts a batch in order and returns each run's id (None where nothing was
    inserted); each insert stays its own check of the queue limit and the idempotency key,
    and none is answered before its batch has committed. A batch that fails is written again
    one by one, so that one bad insert fails only itself; a database that is down fails them
    all at once."""

    def __init__(
        self, write: Callable[[list[dict[str, Any]]], Awaitable[list[int | None]]]
    ) -> None:
        self._write_batch = write
        self._waiting: list[tuple[dict[str, Any], Answer]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def insert(self, params: dict[str, Any]) -> int | None:
        answer: Answer = asyncio.get_running_loop().create_future()
        self._waiting.append((params, answer))
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush())
        return await answer

    async def drain(self) -> None:
        """Until the creates asked for are written (or refused)."""
        if self._flushing is not None:
            await self._flushing

    async def _flush(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                await self._write(batch)
        finally:
            self._flushing = None

    async def _write(self, batch: list[tuple[dict[str, Any], Answer]]) -> None:
        try:
            ids = await self._write_batch([params for params, _ in batch])
        except DatabaseDown as exc:
            for _, answer in batch:
                if not answer.done():
                    answer.set_exception(type(exc)(*exc.args))  # StorageFull stays one
            return
        except Exception as exc:
            if len(batch) > 1:
                for one in batch:
                    await self._write([one])
            elif not batch[0][1].done():
                batch[0][1].set_exception(exc)
            return
        for (_, answer), calc_id in zip(batch, ids, strict=True):
            if not answer.done():
                answer.set_result(calc_id)


class Database(Protocol):
    """Every read and write of runs, workers and ping-pong traces."""

    disk: DiskState  # whether writes were last refused for a full disk
    # Whether a kernel process's store also claims the next run (`ResultStore.store`'s
    # `claim_for`), so that the consumer need not claim when a slot's run ends.
    claims_on_store: bool

    async def insert(self, params: dict[str, Any]) -> int | None:
        """The id of the new queued run (`insert_params`); None if the queue is full or the
        idempotency key is taken. Answered once committed."""

    async def claim(self, worker_id: int) -> Calculation | None:
        """The oldest queued run, now running for this worker; None if none is queued.
        WorkerGone, claiming nothing, if the database no longer records this worker."""

    async def get(self, calc_id: int, form: Form = "plain") -> Calculation | None:
        """The run, with its result once done."""

    async def get_calculation(self, calc_id: int) -> Calculation | None:
        """The run's row alone, never its result."""

    async def get_by_idempotency_key(self, key: str) -> tuple[Calculation, str] | None:
        """The run created with this key, and the hash of the request that created it."""

    async def csv(self, calc_id: int) -> Pieces | None:
        """The stored CSV of a done run; None if there is none (yet)."""

    async def list_calculations(
        self, *, limit: int, offset: int, descending: bool, status: Status | None
    ) -> tuple[list[Summary], int]:
        """One page in launch order, and how many runs there are in all."""

    async def count_by_status(self) -> dict[Status, int]:
        """How many runs are in each status, every status present."""

    async def cancel(self, calc_id: int) -> Calculation | None:
        """Cancel a queued or running run; None if there is no such run still going."""

    async def cancelled_among(self, calc_ids: list[int]) -> list[int]:
        """Which of these runs are cancelled."""

    async def delete(self, calc_id: int) -> Status | None:
        """Delete the run, whatever its status; the status it had, None if there is none."""

    async def delete_finished(self, status: Status | None, before: str | None, limit: int) -> int:
        """Delete at most `limit` ended runs, oldest first, of this status (any ended one if
        None) and ended before this time (ISO text, UTC); how many."""

    async def prune(self, before: str, limit: int) -> int | None:
        """One batch of the retention: `delete_finished` of any ended status; None when
        another process is pruning (PostgreSQL)."""

    async def compact(self, limit: int) -> int:
        """Store at most `limit` runs kept the old way (their JSON and CSV as they are, beside
        the deflated JSON) the compact way, the deflated JSON alone; how many."""

    async def mark_failed(
        self, calc: Calculation, error: str, duration: float | None, ended_at: str | None = None
    ) -> bool:
        """Record why this attempt failed; False if it is no longer the current one."""

    async def requeue(self, calc: Calculation) -> bool:
        """Put this attempt's run back in the queue, the attempt not counted."""

    async def requeue_unheld(self, worker_id: int, held: list[int]) -> list[int]:
        """Put back in the queue, their attempts not counted, the runs this worker claimed
        for itself that it does not hold (`held`): a claim whose answer was lost with the
        connection. Not those its kernel processes claimed as they stored, of which it may
        not have heard yet. Their ids."""

    async def register_worker(self, host: str, pid: int, pid_started: int, now: float) -> int:
        """Record a process that computes runs; its worker id."""

    async def heartbeat(self, worker_id: int, now: float) -> bool:
        """Record that the worker is alive; False if it was forgotten meanwhile."""

    async def list_workers(self) -> list[Worker]: ...

    async def forget_worker(self, worker_id: int) -> None: ...

    async def rescue_orphans(
        self, gone: list[int], max_attempts: int
    ) -> tuple[list[int], list[int]]:
        """Fail or queue again the runs of gone workers (and of none); the ids of each, and
        the gone workers forgotten."""

    async def add_trace(self, trace_id: str) -> bool:
        """Record a trace the first time one of its hops arrives; False if it was known."""

    async def insert_hop(self, **hop: Any) -> Hop | None:
        """Record a hop as it arrives; None if this trace already has a hop with that number."""

    async def finish_hop(self, **hop: Any) -> Hop | None:
        """Record how a forwarded hop ended; None if it had ended already."""

    async def list_hops(self, trace_id: str) -> list[Hop]: ...

    async def trace_created_at(self, trace_id: str) -> datetime | None: ...

    async def list_traces(self, *, limit: int, offset: int) -> list[Trace]:
        """Traces newest first."""

    async def count_traces(self) -> int: ...


class ResultStore(Protocol):
    """What a kernel process stores a computed run with, so that a large result never passes
    through the server process."""

    def store(
        self,
        calc_id: int,
        attempt: int,
        output: kernel.Output,
        duration: float,
        claim_for: int | None = None,
    ) -> Saved:
        """Store the result of this attempt. With `claim_for` (a worker id), a backend may
        also claim the oldest queued run for that worker in the same commit."""


class Saved(NamedTuple):
    """What a kernel process's store did. `written` is False if the attempt was no longer
    the current one (cancelled, timed out, rescued), and nothing was written. `claimed` is
    the next run, claimed for the worker; `looked` says whether the queue was looked at
    (not when no worker was named, the backend claims in the server, or the database no
    longer records the worker)."""

    written: bool
    claimed: Calculation | None = None
    looked: bool = False


def open_result_store(database_url: str) -> ResultStore:
    """A kernel process's own connection to the database the server uses."""
    # Imported here: a backend's driver is loaded only where that backend is used.
    if is_postgres(database_url):
        from service.db import postgres

        return postgres.ResultStore(database_url)
    from service.config import sqlite_path
    from service.db import sqlite

    return sqlite.ResultStore(sqlite_path(database_url))


def from_the_other_end(limit: int, offset: int, total: int) -> tuple[int, int] | None:
    """The limit and offset of the same page in the opposite order, read from the other end
    of the index (then turned around); None for a page past the end."""
    end = min(offset + limit, total)
    if end <= offset:
        return None
    return end - offset, total - end


class DatabaseUnavailable(Exception):
    """The database cannot be opened or reached: the service cannot start."""


class WorkerGone(Exception):
    """A claim named a worker the database no longer records: it was taken for gone while
    it was silent (cut off, paused) and its runs were rescued. A run must never name an
    unrecorded worker, which no rescue would look for: the worker registers anew first."""

    def __init__(self, worker_id: int) -> None:
        super().__init__(f"worker {worker_id} is no longer recorded")
        self.worker_id = worker_id


class DatabaseDown(Exception):
    """The database is gone, restarting or does not answer in time: a request gets a 503,
    and the consumer and the leases try again."""


class StorageFull(DatabaseDown):
    """The database's disk is full: nothing was written. Handled as the database being down
    (tried again, never lost), and told as what it is: a 507 `storage_full`. Its text is
    the database's own reason."""


class DiskState:
    """Whether this process's last write was refused for a full disk: what /health says. Told
    in the log once per change, not once per refused write."""

    def __init__(self) -> None:
        self.full: str | None = None

    def refused(self, why: object) -> StorageFull:
        """Record a write refused for this reason (the database's error); what to raise."""
        if self.full is None:
            log.warning("the disk of the database is full: writes wait for space (%s)", why)
        self.full = str(why)
        return StorageFull(str(why))

    def wrote(self) -> None:
        if self.full is not None:
            log.info("the database writes again: the disk has space")
        self.full = None


@asynccontextmanager
async def open_database(config: Config, events: Events) -> AsyncIterator[Database]:
    """The backend DATABASE_URL names, ready: schema applied, and on PostgreSQL this process
    listening for what other processes do (told to `events`)."""
    if is_postgres(config.database_url):
        from service.db import postgres

        async with postgres.open_database(config, events) as database:
            yield database
        return
    from service.db import sqlite

    async with sqlite.open_database(config) as sqlite_database:
        yield sqlite_database
