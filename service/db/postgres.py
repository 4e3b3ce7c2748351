"""The PostgreSQL backend: `PostgresDatabase`, the interface (`service.db.Database`) on one
server shared by any number of processes on any number of machines, through asyncpg.

- A pool of connections; every call is bounded in time and a server that is gone or does
  not answer raises `DatabaseDown` (a 503 for a request), never hangs.
- Claims are one `UPDATE … FOR UPDATE SKIP LOCKED`: two workers never take the same run.
- Every process listens on the channel `calculations` (`Listener`): the schema's trigger
  tells of runs queued, ended and cancelled, whichever process changed them.
- Results are `bytea` stored uncompressed out of line, and read back in pieces under
  `PIECE`, as on SQLite.

The statements are in `postgres_sql`, the schema in the numbered migrations of
`migrations/postgres/` (`service.db.migrate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

import kernel
from service.compression import csv_of, inflate
from service.config import Config
from service.db import (
    DatabaseDown,
    DatabaseUnavailable,
    DiskState,
    Form,
    GroupCommit,
    Saved,
    StorageFull,
    WorkerGone,
    from_the_other_end,
    utcnow,
)
from service.db import postgres_sql as sql
from service.db.migrate import migrate_postgres
from service.events import RunEvents as Events
from service.models import Calculation, Deflated, Hop, Pieces, Status, Summary, Trace, Worker

log = logging.getLogger(__name__)

POOL_SIZE = 10
CONNECT_TIMEOUT = 3.0  # seconds to open a connection
# Seconds a statement may take, or a request wait for a free connection, before its request
# gets a 503: a server cut off by the network answers nothing, and nothing may hang on it.
COMMAND_TIMEOUT = 5.0
LISTEN_CHECK = 5.0  # seconds between looks at the listening connection when nothing arrives
RECONNECT_DELAY = 0.5  # seconds between attempts to reach a server that is gone
PIECE = 256 * 1024 - 64  # as on SQLite: each piece stays under glibc's mmap threshold
NEAR_OFFSET = 1000  # a page this near an end is read in one statement, with the total
INLINE_INFLATE = 64 * 1024  # a plain result this small is inflated on the loop: less than a hop
NEAR_LIMIT = "QL001"  # raised by enqueue_calculation near MAX_QUEUED: ask again, alone

# What a server that is gone, restarting or cut off raises: the request gets a 503.
GONE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, and TimeoutError
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,  # shutting down, starting up
    asyncpg.InterfaceError,  # the connection was closed under the statement
    asyncpg.InternalClientError,  # the same, seen by the protocol mid-statement
)
T = TypeVar("T")


def connection_settings(url: str) -> dict[str, Any]:
    return {"dsn": url, "timeout": CONNECT_TIMEOUT, "command_timeout": COMMAND_TIMEOUT}


@asynccontextmanager
async def open_database(config: Config, events: Events) -> AsyncIterator[PostgresDatabase]:
    """A pool on a ready database (schema applied), and this process listening."""
    try:
        pool = await asyncpg.create_pool(
            # No floor: a pool that keeps one would reconnect in the background, and log
            # each failure, all the while the server is away.
            **connection_settings(config.database_url),
            min_size=0,
            max_size=POOL_SIZE,
            reset=without_reset,
        )
        async with pool.acquire() as conn:
            await migrate_postgres(conn, redacted(config.database_url))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseUnavailable(
            f"the database {redacted(config.database_url)} cannot be reached: {exc}"
        ) from None
    listener = Listener(config.database_url, events)
    events.shared = True  # what other processes do is told here from now on
    listening = asyncio.create_task(listener.run(), name="listener")
    database = PostgresDatabase(pool)
    try:
        yield database
    finally:
        await database.drain()
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
        # A server that is gone cannot be told goodbye: close without waiting for it.
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await pool.close()
        except GONE:  # TimeoutError among them
            pool.terminate()


async def without_reset(conn: asyncpg.Connection) -> None:
    """What a connection goes back to the pool with. asyncpg's default resets the session
    (UNLISTEN, RESET ALL, …) in one more round trip per call. Our statements leave no session
    state (transaction-scoped locks, no SET, the listener on a connection of its own), so
    only an open transaction is ended."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    credentials, at, place = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{place}"


class PostgresDatabase:
    """`service.db.Database` on a pool of asyncpg connections."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._creates = GroupCommit(self._enqueue)
        self.disk = DiskState()
        self.claims_on_store = True

    async def _run(self, use: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """`use` on a connection of the pool. A server that is gone or does not answer
        within COMMAND_TIMEOUT raises DatabaseDown."""
        try:
            async with self._pool.acquire(timeout=COMMAND_TIMEOUT) as conn:
                return await use(conn)
        except GONE as exc:
            raise DatabaseDown(f"{type(exc).__name__}: {exc}") from exc
        except asyncpg.DiskFullError as exc:
            raise self.disk.refused(exc) from exc

    async def _read(self, use: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """A read, asked once more on a fresh connection when the first was broken: after
        a restart of the server, each pooled connection fails once. A server that cannot be
        reached (refused, timed out) is not asked twice: the 503 comes as soon."""
        try:
            return await self._run(use)
        except DatabaseDown as exc:
            if isinstance(exc.__cause__, OSError):
                raise
            return await self._run(use)

    async def _row(self, query: str, *args: Any) -> asyncpg.Record | None:
        return await self._run(lambda conn: conn.fetchrow(query, *args))

    async def insert(self, params: dict[str, Any]) -> int | None:
        """Creates go in batches, as on SQLite: those asked for while one batch is being
        written all go in the next, one statement and one commit for them all. Measured:
        each commit that notifies holds the server's notification lock while it ends, so
        creates committed one by one reached 34 % of a bare INSERT's rate."""
        calc_id = await self._creates.insert(params)
        self.disk.wrote()
        return calc_id

    async def drain(self) -> None:
        await self._creates.drain()

    async def _enqueue(self, batch: list[dict[str, Any]]) -> list[int | None]:
        """One create alone; several in one statement, refused whole near MAX_QUEUED (and
        then written one by one, each taking the limit's lock alone)."""
        if len(batch) == 1:
            return [await self._run(functools.partial(enqueue_one, batch[0]))]
        return await self._run(functools.partial(enqueue_many, batch))

    async def claim(self, worker_id: int) -> Calculation | None:
        row = await self._row(sql.CLAIM_NEXT, worker_id)
        assert row is not None  # one row, whatever was claimed
        if not row["recorded"]:
            raise WorkerGone(worker_id)
        return None if row["id"] is None else Calculation.from_row(row)

    async def get(self, calc_id: int, form: Form = "plain") -> Calculation | None:
        gzip = form == "gzip"
        row = await self._read(lambda conn: conn.fetchrow(sql.GET_WITH_SIZES, calc_id, gzip, PIECE))
        if row is None:
            return None
        calc = Calculation.from_row(row)
        if calc.status is not Status.DONE:
            return calc
        if row["plain_size"] is not None and not gzip:  # stored before schema version 2
            result = await self._pieces("result", calc_id, row["plain_size"], row)
            if result is not None:
                return replace(calc, result=result)
            return await self.get(calc_id, form)  # rewritten the compact way meanwhile
        data = await self._pieces("result_deflated", calc_id, row["deflated_size"], row)
        if data is None:  # deleted meanwhile
            return None
        if gzip:
            return replace(calc, deflated=Deflated(data, row["result_crc"], row["result_size"]))
        return replace(calc, result=await inflated(data, row["result_size"]))

    async def _pieces(
        self, column: str, calc_id: int, size: int, row: asyncpg.Record | None = None
    ) -> Pieces | None:
        """A stored column in pieces under PIECE, in one statement: each piece is a slice
        the server reads from the column's own chunks. One that came with `row` already is
        not asked for again. None if the column was emptied, or the row deleted, since
        `size` was read."""
        inline = None if row is None else row[f"inline_{column.removeprefix('result_')}"]
        if inline is not None:
            return (inline,)
        if size <= PIECE:
            query = sql.COLUMN[column]
            value = await self._read(lambda conn: conn.fetchval(query, calc_id))
            return None if value is None else (value,)
        query = sql.PIECES[column]
        rows = await self._read(lambda conn: conn.fetch(query, calc_id, PIECE))
        return tuple(row[0] for row in rows) or None

    async def get_calculation(self, calc_id: int) -> Calculation | None:
        row = await self._read(lambda conn: conn.fetchrow(sql.GET_CALCULATION, calc_id))
        return None if row is None else Calculation.from_row(row)

    async def get_by_idempotency_key(self, key: str) -> tuple[Calculation, str] | None:
        row = await self._read(lambda conn: conn.fetchrow(sql.GET_BY_IDEMPOTENCY_KEY, key))
        return None if row is None else (Calculation.from_row(row), row["request_hash"])

    async def csv(self, calc_id: int) -> Pieces | None:
        """As stored before schema version 2, else made from the deflated JSON (which rows of
        every version have): a row emptied between the reads is still found."""
        sizes = await self._read(lambda conn: conn.fetchrow(sql.CSV_SIZES, calc_id))
        if sizes is None:
            return None
        plain, deflated = sizes
        if plain is not None:
            stored = await self._pieces("result_csv", calc_id, plain)
            if stored is not None:
                return stored
        if deflated is None:
            return None
        data = await self._pieces("result_deflated", calc_id, deflated)
        if data is None:
            return None
        return await asyncio.to_thread(csv_of, data, PIECE)

    async def list_calculations(
        self,
        *,
        limit: int,
        offset: int,
        descending: bool,
        status: Status | None,
        near: int = NEAR_OFFSET,
    ) -> tuple[list[Summary], int]:
        """One page in launch order, and how many runs there are in all. A near page takes
        one statement, which carries the total. A page in the far half is read from the other
        end of the index and turned around, so that the last page costs what the first does
        (measured: 6 % of the first page's rate when the OFFSET walked 100,000 rows)."""
        if offset <= near:
            rows = await self._page(limit, offset, descending, status)
            if rows:
                return [Summary(*row[:4]) for row in rows], int(rows[0]["total"])
        total_query = sql.COUNT_CALCULATIONS[status is not None]
        total_args = () if status is None else (status.value,)
        total = int(await self._read(lambda conn: conn.fetchval(total_query, *total_args)))
        flipped = offset > total // 2
        if flipped:
            turned = from_the_other_end(limit, offset, total)
            if turned is None:
                return [], total
            limit, offset = turned
        rows = await self._page(limit, offset, descending ^ flipped, status)
        summaries = [Summary(*row[:4]) for row in rows]
        return (summaries[::-1] if flipped else summaries), total

    async def _page(
        self, limit: int, offset: int, descending: bool, status: Status | None
    ) -> list[asyncpg.Record]:
        query = sql.LIST_CALCULATIONS["DESC" if descending else "ASC", status is not None]
        args = (limit, offset) if status is None else (limit, offset, status.value)
        rows: list[asyncpg.Record] = await self._read(lambda conn: conn.fetch(query, *args))
        return rows

    async def count_by_status(self) -> dict[Status, int]:
        counts = dict.fromkeys(Status, 0)
        for row in await self._read(lambda conn: conn.fetch(sql.COUNT_BY_STATUS)):
            counts[Status(row[0])] = int(row[1])
        return counts

    async def cancel(self, calc_id: int) -> Calculation | None:
        row = await self._row(sql.CANCEL, calc_id)
        return None if row is None else Calculation.from_row(row)

    async def cancelled_among(self, calc_ids: list[int]) -> list[int]:
        rows = await self._read(lambda conn: conn.fetch(sql.CANCELLED_AMONG, calc_ids))
        return [row[0] for row in rows]

    async def delete(self, calc_id: int) -> Status | None:
        row = await self._row(sql.DELETE, calc_id)
        return None if row is None else Status(row[0])

    async def delete_finished(self, status: Status | None, before: str | None, limit: int) -> int:
        return await self._run(functools.partial(delete_finished, status, before, limit))

    async def prune(self, before: str, limit: int) -> int | None:
        """One batch of the retention; None while another process holds the pruner's lock."""

        async def batch(conn: asyncpg.Connection) -> int | None:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", sql.PRUNER_LOCK):
                return None
            try:
                return await delete_finished(None, before, limit, conn)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", sql.PRUNER_LOCK)

        return await self._run(batch)

    async def compact(self, limit: int) -> int:
        return rows_changed(await self._run(lambda conn: conn.execute(sql.COMPACT, limit)))

    async def mark_failed(
        self, calc: Calculation, error: str, duration: float | None, ended_at: str | None = None
    ) -> bool:
        seconds = None if duration is None else round(duration, 6)
        args = (calc.id, calc.attempts, error, seconds, ended_at or utcnow())
        return await self._row(sql.MARK_FAILED, *args) is not None

    async def requeue(self, calc: Calculation) -> bool:
        return await self._row(sql.REQUEUE, calc.id, calc.attempts) is not None

    async def requeue_unheld(self, worker_id: int, held: list[int]) -> list[int]:
        rows = await self._run(lambda conn: conn.fetch(sql.REQUEUE_UNHELD, worker_id, held))
        return sorted(row[0] for row in rows)

    async def register_worker(self, host: str, pid: int, pid_started: int, now: float) -> int:
        # The database's clock, not `now`: heartbeats from many machines are compared.
        row = await self._row(sql.REGISTER_WORKER, host, pid, pid_started)
        assert row is not None  # an INSERT without conditions returns its row
        return int(row[0])

    async def heartbeat(self, worker_id: int, now: float) -> bool:
        return await self._row(sql.HEARTBEAT, worker_id) is not None

    async def list_workers(self) -> list[Worker]:
        rows = await self._read(lambda conn: conn.fetch(sql.LIST_WORKERS))
        # Each heartbeat's age by the database's clock, as a time on this one.
        here = time.time()
        return [
            Worker(r["id"], r["host"], r["pid"], r["pid_started"], here - r["age"]) for r in rows
        ]

    async def forget_worker(self, worker_id: int) -> None:
        await self._run(lambda conn: conn.execute(sql.FORGET_WORKERS, [worker_id]))

    async def rescue_orphans(
        self, gone: list[int], max_attempts: int
    ) -> tuple[list[int], list[int]]:
        async def rescue(conn: asyncpg.Connection) -> tuple[list[int], list[int]]:
            async with conn.transaction():
                # Forgotten first: the DELETE waits for a claim holding a gone worker's row,
                # and the statements after it see what that claim took.
                if gone:
                    await conn.execute(sql.FORGET_WORKERS, gone)
                failed = await conn.fetch(sql.FAIL_EXHAUSTED, gone, max_attempts)
                queued = await conn.fetch(sql.REQUEUE_ORPHANED, gone)
            return sorted(row[0] for row in failed), sorted(row[0] for row in queued)

        return await self._run(rescue)

    async def add_trace(self, trace_id: str) -> bool:
        return await self._row(sql.ADD_TRACE, trace_id) is not None

    async def insert_hop(self, **hop: Any) -> Hop | None:
        args = [hop[key] for key in sql.INSERT_HOP_ARGS]
        row = await self._row(sql.INSERT_HOP, *args)
        return None if row is None else Hop.from_row(row)

    async def finish_hop(self, **hop: Any) -> Hop | None:
        args = [hop[key] for key in sql.FINISH_HOP_ARGS]
        row = await self._row(sql.FINISH_HOP, *args)
        return None if row is None else Hop.from_row(row)

    async def list_hops(self, trace_id: str) -> list[Hop]:
        rows = await self._read(lambda conn: conn.fetch(sql.LIST_HOPS, trace_id))
        return [Hop.from_row(row) for row in rows]

    async def trace_created_at(self, trace_id: str) -> datetime | None:
        found = await self._read(lambda conn: conn.fetchval(sql.TRACE_CREATED_AT, trace_id))
        return None if found is None else datetime.fromisoformat(found)

    async def list_traces(self, *, limit: int, offset: int) -> list[Trace]:
        rows = await self._read(lambda conn: conn.fetch(sql.LIST_TRACES, limit, offset))
        return [Trace.from_row(row) for row in rows]

    async def count_traces(self) -> int:
        return int(await self._read(lambda conn: conn.fetchval(sql.COUNT_TRACES)))


async def enqueue_one(params: dict[str, Any], conn: asyncpg.Connection) -> int | None:
    """One create; near MAX_QUEUED it is asked again to take the limit's lock alone."""
    args = [params[key] for key in sql.ENQUEUE_ARGS]
    try:
        found = await conn.fetchval(sql.ENQUEUE, *args, False)
    except asyncpg.PostgresError as exc:
        if exc.sqlstate != NEAR_LIMIT:
            raise
        found = await conn.fetchval(sql.ENQUEUE, *args, True)
    return None if found is None else int(found)


async def enqueue_many(batch: list[dict[str, Any]], conn: asyncpg.Connection) -> list[int | None]:
    """Several creates in one statement, each still checked on its own, in order; near
    MAX_QUEUED the whole statement is refused (QL001) and each is asked again alone."""
    columns = [[params[key] for params in batch] for key in sql.ENQUEUE_ARGS[:-1]]
    rows = await conn.fetch(sql.ENQUEUE_MANY, *columns, batch[0]["max_queued"])
    return [None if row[0] is None else int(row[0]) for row in rows]


async def delete_finished(
    status: Status | None, before: str | None, limit: int, conn: asyncpg.Connection
) -> int:
    done = await conn.execute(sql.DELETE_FINISHED, status and status.value, before, limit)
    return rows_changed(done)


def rows_changed(command_tag: str) -> int:
    """How many rows a statement changed, from its command tag ("DELETE 12")."""
    return int(command_tag.split()[-1])


async def inflated(deflated: Pieces, size: int) -> Pieces:
    """The plain bytes of a stored deflated column; a large one inflated off the event loop
    (zlib lets go of the GIL while it inflates)."""
    if size <= INLINE_INFLATE:
        return inflate(deflated, PIECE)
    return await asyncio.to_thread(inflate, deflated, PIECE)


class Listener:
    """This process's ear on the channel `calculations`: a connection of its own, outside
    the pool, that hands each notice to `events` and comes back by itself after the server
    went away. Notices sent meanwhile are lost; the callers' polling covers the gap, and a
    return wakes the consumer to look at the queue."""

    def __init__(self, url: str, events: Events) -> None:
        self._url = url
        self._events = events

    async def run(self) -> None:
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(**connection_settings(self._url))
                await conn.add_listener(sql.CHANNEL, self._on_notice)
                self._events.queued()  # what was queued while nobody listened
                while True:  # a cut-off server says nothing: ask it something now and then
                    await asyncio.sleep(LISTEN_CHECK)
                    await conn.execute("SELECT 1")
            except GONE as exc:
                log.warning("not listening for notices: %s; retrying", type(exc).__name__)
            finally:
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(RECONNECT_DELAY)

    def _on_notice(self, conn: object, pid: int, channel: str, payload: str) -> None:
        kind, _, calc_id = payload.partition(" ")
        if kind == "queued":
            self._events.queued()
        elif kind == "ended":
            self._events.ended(int(calc_id))
        elif kind == "cancelled":
            self._events.cancelled(int(calc_id))


class ResultStore:
    """What a kernel process writes with: one connection of its own, driven by a loop of its
    own (the process is not async). A server that is gone is waited for: the result is kept
    and stored once it is back, as long as this attempt is still the run's current one."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._loop = asyncio.new_event_loop()
        self._conn: asyncpg.Connection | None = None

    def store(
        self,
        calc_id: int,
        attempt: int,
        output: kernel.Output,
        duration: float,
        claim_for: int | None = None,
    ) -> Saved:
        args = (
            calc_id,
            attempt,
            len(output.json),
            output.deflated,
            output.crc,
            round(duration, 6),
        )
        return self._loop.run_until_complete(self._store(args, claim_for))

    def close(self) -> None:
        """Let go of the connection and the loop (a kernel process that ends needs not)."""
        if self._conn is not None:
            self._loop.run_until_complete(self._conn.close())
        self._loop.close()

    async def _store(self, args: tuple[Any, ...], claim_for: int | None) -> Saved:
        while True:
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(**connection_settings(self._url))
                row = await self._conn.fetchrow(sql.STORE_AND_CLAIM, *args, claim_for)
                assert row is not None  # one row, whatever was stored and claimed
                if row["stored"]:
                    claimed = None if row["id"] is None else Calculation.from_row(row)
                    return Saved(True, claimed, looked=row["recorded"])
                # Refused: another attempt is current, or this one stored it already and
                # the answer was lost with the connection, with what it claimed.
                if await self._conn.fetchval(sql.STORED_BY, *args[:2]) is None:
                    return Saved(False)
                if claim_for is None:
                    return Saved(True)
                found = await self._conn.fetchrow(sql.CLAIMED_WITH, *args[:2], claim_for)
                return Saved(True, None if found is None else Calculation.from_row(found))
            except GONE:
                if self._conn is not None:
                    self._conn.terminate()
                self._conn = None
                await asyncio.sleep(RECONNECT_DELAY)
            except asyncpg.DiskFullError as exc:  # the run goes back to the queue
                raise StorageFull(str(exc)) from None
