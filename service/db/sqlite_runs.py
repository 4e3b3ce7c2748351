"""The SQLite backend's runs and workers: connections and their migration, the `Queue` and the
`Reader`, and one function per SQL statement."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

import kernel
from service.compression import csv_of, inflate
from service.db import Form, GroupCommit, WorkerGone, from_the_other_end, utcnow
from service.db.migrate import migrate_sqlite_file
from service.models import Calculation, Deflated, Pieces, Status, Summary, Worker

log = logging.getLogger(__name__)

MIN_SQLITE = (3, 35)  # the first version with RETURNING
BUSY_TIMEOUT_MS = 5000
READER_PRAGMAS = (f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}", "PRAGMA query_only = 1")

# Added to the process's priority for the reader thread alone (Linux schedules threads): with
# the cores busy, the event loop answers before a large result is read.
READER_NICENESS = 5
MMAP_SIZE = 1 << 30  # address space only: pages are mapped in as they are read
# Under glibc's mmap threshold (256 KiB, set by service.memory): see models.Pieces.
PIECE = 256 * 1024 - 64  # with the bytes object's header, still under it
INLINE_MAX = 64 * 1024  # a result this small is read on the loop: the read costs less than a hop
T = TypeVar("T")
NEAR_OFFSET = 1000  # scanning this many index entries costs less than a second statement

COLUMNS = (
    "id, name, status, date_start, date_fin, lag, seed, attempts,"
    " created_at, started_at, finished_at, duration, error"
)

# One statement, so that the queue limit and the idempotency key are checked atomically with
# the insert. Nothing is returned when the queue is full or the key is taken.
INSERT_CALCULATION = """
INSERT INTO calculations
    (name, date_start, date_fin, lag, seed, created_at, idempotency_key, request_hash)
SELECT :name, :date_start, :date_fin, :lag, :seed, :now, :key, :hash
WHERE (SELECT n FROM calculation_counts WHERE status = 'queued') < :max_queued
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id
"""

GET_BY_IDEMPOTENCY_KEY = f"""
SELECT {COLUMNS}, request_hash FROM calculations WHERE idempotency_key = :key
"""

GET_CALCULATION = f"SELECT {COLUMNS} FROM calculations WHERE id = :id"

# length() of a BLOB comes from the row's header: the result itself is not read. A row
# stored before schema version 3 has its JSON as it is (`plain_size`), and no result_size.
GET_CALCULATION_FOR_RESULT = f"""
SELECT {COLUMNS}, result_crc, coalesce(result_size, length(result)) AS result_size,
       length(result_deflated) AS deflated_size, length(result) AS plain_size
FROM calculations WHERE id = :id
"""

ANY_QUEUED = "SELECT 1 FROM calculations WHERE status = 'queued' LIMIT 1"

CLAIM_NEXT = f"""
UPDATE calculations
SET status = 'running', started_at = :now, attempts = attempts + 1, worker_id = :worker
WHERE id = (SELECT id FROM calculations WHERE status = 'queued' ORDER BY id LIMIT 1)
RETURNING {COLUMNS}
"""

WORKER_RECORDED = "SELECT 1 FROM workers WHERE id = :worker"

# Writes for one attempt of a run apply only while that attempt is the current one: a run
# cancelled, timed out or recovered after a restart is never written over.
FENCE = "WHERE id = :id AND attempts = :attempt AND status = 'running' RETURNING id"

MARK_DONE = f"""
UPDATE calculations
SET status = 'done', result_deflated = :deflated, result_crc = :crc, result_size = :size,
    duration = :duration, finished_at = :now, error = NULL
{FENCE}
"""

MARK_FAILED = f"""
UPDATE calculations
SET status = 'failed', error = :error, duration = :duration, finished_at = :now
{FENCE}
"""

# A shutdown is not the run's fault: the attempt it cut off does not count.
REQUEUE = f"""
UPDATE calculations SET status = 'queued', started_at = NULL, attempts = attempts - 1
{FENCE}
"""

CANCEL = f"""
UPDATE calculations SET status = 'cancelled', finished_at = :now
WHERE id = :id AND status IN ('queued', 'running')
RETURNING {COLUMNS}
"""

# The runs of processes that are gone: `:gone` is a JSON list of their workers' ids. A run
# with no worker was claimed by a version that recorded none, by a process now gone.
ORPHANED = """
status = 'running'
AND (worker_id IS NULL OR worker_id IN (SELECT value FROM json_each(:gone)))
"""

FAIL_EXHAUSTED = f"""
UPDATE calculations
SET status = 'failed', finished_at = :now, worker_id = NULL,
    error = 'the run was interrupted ' || attempts || ' times by a crash, kill or stall of'
            || ' its server; it is not started again (MAX_ATTEMPTS = ' || :max_attempts || ')'
WHERE {ORPHANED} AND attempts >= :max_attempts
RETURNING id
"""

# The interrupted attempt counts: `attempts` keeps it.
REQUEUE_ORPHANED = f"""
UPDATE calculations SET status = 'queued', started_at = NULL, worker_id = NULL
WHERE {ORPHANED}
RETURNING id
"""

REGISTER_WORKER = """
INSERT INTO workers (host, pid, pid_started, started_at, heartbeat_at)
VALUES (:host, :pid, :pid_started, :now, :heartbeat)
RETURNING id
"""

HEARTBEAT = "UPDATE workers SET heartbeat_at = :heartbeat WHERE id = :id RETURNING id"

LIST_WORKERS = "SELECT id, host, pid, pid_started, heartbeat_at FROM workers"

FORGET_WORKERS = "DELETE FROM workers WHERE id IN (SELECT value FROM json_each(:gone))"

# Launch order is created_at with id breaking ties; each variant has an index that serves it.
TOTAL = {
    False: "(SELECT sum(n) FROM calculation_counts)",
    True: "(SELECT n FROM calculation_counts WHERE status = :status)",
}

LIST_CALCULATIONS = {
    (order, filtered): f"""
SELECT id, name, created_at, status, {TOTAL[filtered]} AS total FROM calculations
{"WHERE status = :status" if filtered else ""}
ORDER BY created_at {order}, id {order}
LIMIT :limit OFFSET :offset
"""
    for order in ("ASC", "DESC")
    for filtered in (False, True)
}

COUNT_CALCULATIONS = {filtered: f"SELECT {total}" for filtered, total in TOTAL.items()}

COUNT_BY_STATUS = "SELECT status, n FROM calculation_counts"

# Cancelled, or deleted: either way its kernel is to stop. One key lookup per id asked.
CANCELLED_AMONG = """
SELECT value FROM json_each(:ids) AS asked
WHERE NOT EXISTS (SELECT 1 FROM calculations WHERE id = asked.value AND status <> 'cancelled')
"""

DELETE = "DELETE FROM calculations WHERE id = :id RETURNING status"

# At most :limit finished runs, oldest first: one batch holds the writer for a few
# milliseconds, however many runs match.
DELETE_FINISHED = """
DELETE FROM calculations WHERE id IN (
    SELECT id FROM calculations
    WHERE status IN ('done', 'failed', 'cancelled')
    AND (:status IS NULL OR status = :status)
    AND (:before IS NULL OR finished_at < :before)
    ORDER BY finished_at LIMIT :limit
)
"""

# Rows stored before results were kept compact (migration 3) lose their JSON and CSV as
# they are, a few at a time: each row frees about four fifths of its pages.
COMPACT = """
UPDATE calculations
SET result_size = length(CAST(result AS BLOB)), result = NULL, result_csv = NULL
WHERE id IN (SELECT id FROM calculations WHERE result IS NOT NULL ORDER BY id LIMIT :limit)
"""


async def fetch_one(
    conn: aiosqlite.Connection, sql: str, params: dict[str, Any]
) -> aiosqlite.Row | None:
    """The first row of one statement, in one trip to the database thread. A write with
    RETURNING commits here too: the statement runs to completion."""
    rows = list(await conn.execute_fetchall(sql, params))
    return rows[0] if rows else None


@asynccontextmanager
async def connect(db_path: Path, schema_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    """An autocommit connection to a ready database: pragmas set, schema applied."""
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        raise RuntimeError(
            f"SQLite {sqlite3.sqlite_version} is too old: 3.35 or newer is needed for RETURNING"
        )
    db_path.parent.mkdir(parents=True, exist_ok=True)
    async with aiosqlite.connect(db_path, isolation_level=None) as conn:
        conn.row_factory = aiosqlite.Row
        await prepare(conn, db_path, schema_path)
        yield conn


async def prepare(conn: aiosqlite.Connection, db_path: Path, schema_path: Path) -> None:
    await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    await switch_to_wal(conn)
    # In WAL mode NORMAL loses no committed row when the process dies; only an OS crash
    # or power cut can drop the last commits, and it never corrupts the file.
    await conn.execute("PRAGMA synchronous = NORMAL")
    await asyncio.to_thread(migrate_sqlite_file, db_path, schema_path, BUSY_TIMEOUT_MS)


async def switch_to_wal(conn: aiosqlite.Connection) -> None:
    """WAL mode, once any other connection lets go of the file. The switch needs the file to
    itself for a moment, and SQLite answers "locked" at once instead of using the busy
    timeout: two processes starting together on a new file (ping-pong's A and B) met that."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            await conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or loop.time() > deadline:
                raise
        await asyncio.sleep(0.01)


async def rescue_orphans(
    conn: aiosqlite.Connection, gone: list[int], max_attempts: int
) -> tuple[list[int], list[int]]:
    """The runs of workers that are gone (and of none): failed once they have used up their
    attempts (a run that kills its server must not do it forever), queued again otherwise.
    Their ids, failed and queued again; the gone workers are forgotten first, so that a run
    one of them claims meanwhile is either among these or refused (`WorkerGone`)."""
    params = {"gone": json.dumps(gone), "now": utcnow(), "max_attempts": max_attempts}
    if gone:
        await conn.execute(FORGET_WORKERS, {"gone": params["gone"]})
    failed = await conn.execute_fetchall(FAIL_EXHAUSTED, params)
    queued = await conn.execute_fetchall(REQUEUE_ORPHANED, {"gone": params["gone"]})
    return sorted(row[0] for row in failed), sorted(row[0] for row in queued)


async def register_worker(
    conn: aiosqlite.Connection, host: str, pid: int, pid_started: int, heartbeat: float
) -> int:
    params = {
        "host": host,
        "pid": pid,
        "pid_started": pid_started,
        "now": utcnow(),
        "heartbeat": heartbeat,
    }
    row = await fetch_one(conn, REGISTER_WORKER, params)
    assert row is not None  # an INSERT without conditions returns its row
    return int(row[0])


async def heartbeat(conn: aiosqlite.Connection, worker_id: int, now: float) -> bool:
    """Record that the worker is alive; False if it was forgotten (found gone meanwhile)."""
    return await fetch_one(conn, HEARTBEAT, {"id": worker_id, "heartbeat": now}) is not None


async def list_workers(conn: aiosqlite.Connection) -> list[Worker]:
    return [Worker(*row) for row in await conn.execute_fetchall(LIST_WORKERS)]


async def forget_worker(conn: aiosqlite.Connection, worker_id: int) -> None:
    await conn.execute(FORGET_WORKERS, {"gone": json.dumps([worker_id])})


class Queue:
    """Where runs enter the queue and leave it, in a thread and on a connection of their own.

    Creates go in batches: the inserts asked for while one transaction is being written all
    go in the next, so that concurrent creates share one trip to the thread and one commit (a
    group commit). Each insert is still its own statement, with its own queue limit and
    idempotency checks, and none is answered before its transaction has committed.

    A claim takes its time while its transaction holds the write lock, after every commit it
    can see, whichever process or connection made it: a run is never started before it was
    created. SQLite lets one connection write at a time; the busy timeout makes the others
    (the writer's, a kernel process's) wait their turn."""

    def __init__(self, db_path: Path) -> None:
        self._path = db_path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="queue")
        self._conn: sqlite3.Connection | None = None
        self._creates = GroupCommit(self._insert_many)

    async def open(self) -> None:
        self._conn = await in_thread(self._thread, connect_worker, self._path)
        self._conn.row_factory = sqlite3.Row

    async def close(self) -> None:
        await self._creates.drain()
        if self._conn is not None:
            await in_thread(self._thread, self._conn.close)
        self._thread.shutdown()

    async def insert(self, params: dict[str, Any]) -> int | None:
        """The id of the new queued run (`insert_params`); None if the queue is full or the
        idempotency key is taken."""
        return await self._creates.insert(params)

    async def claim(self, worker_id: int) -> Calculation | None:
        """The oldest queued run, now running for this worker (one more attempt); None if
        none is queued."""
        assert self._conn is not None, "open() first"
        return await in_thread(self._thread, claim_next, self._conn, worker_id)

    async def _insert_many(self, batch: list[dict[str, Any]]) -> list[int | None]:
        assert self._conn is not None, "open() first"
        return await in_thread(self._thread, insert_many, self._conn, batch)


async def in_thread(thread: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in that thread, whose connection only it may use."""
    return await asyncio.get_running_loop().run_in_executor(thread, fn, *args)


def insert_many(conn: sqlite3.Connection, batch: list[dict[str, Any]]) -> list[int | None]:
    """Each run's id, or None where nothing was inserted: one run in a statement of its own,
    several in one transaction."""
    if len(batch) == 1:
        rows = [conn.execute(INSERT_CALCULATION, batch[0]).fetchall()]
    else:
        with write_lock(conn):
            # fetchall: each statement runs to its end, as COMMIT needs.
            rows = [conn.execute(INSERT_CALCULATION, params).fetchall() for params in batch]
    return [int(found[0][0]) if found else None for found in rows]


def claim_next(conn: sqlite3.Connection, worker_id: int) -> Calculation | None:
    # A look without the lock first: a claim of an empty queue (after each run) writes nothing.
    if conn.execute(ANY_QUEUED).fetchone() is None:
        return None
    with write_lock(conn):  # the time is taken holding the lock, after every commit it sees
        # Under the same lock as the claim: no rescue can forget the worker in between.
        if conn.execute(WORKER_RECORDED, {"worker": worker_id}).fetchone() is None:
            raise WorkerGone(worker_id)
        rows = conn.execute(CLAIM_NEXT, {"now": utcnow(), "worker": worker_id}).fetchall()
    return Calculation.from_row(rows[0]) if rows else None


@contextmanager
def write_lock(conn: sqlite3.Connection) -> Iterator[None]:
    """A transaction that holds the write lock from its start, committed at the end."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


async def get_by_idempotency_key(
    conn: aiosqlite.Connection, key: str
) -> tuple[Calculation, str] | None:
    """The run created with this key, and the hash of the request that created it."""
    row = await fetch_one(conn, GET_BY_IDEMPOTENCY_KEY, {"key": key})
    return None if row is None else (Calculation.from_row(row), row["request_hash"])


async def get_calculation(conn: aiosqlite.Connection, calc_id: int) -> Calculation | None:
    row = await fetch_one(conn, GET_CALCULATION, {"id": calc_id})
    return None if row is None else Calculation.from_row(row)


class Reader:
    """Every read of runs for the API, each where it costs least. What is small and bounded (a
    run's row, a small result, a count, a page near either end of the list) is read on the
    event loop: one indexed statement there costs less than the hand-over to a thread and
    back. What can be large or long (a result over INLINE_MAX, a CSV, a page deep in the middle
    of the list) is read in a thread of its own, large results with incremental blob I/O: a
    query copies a multi-megabyte column while holding the GIL, a blob read does not."""

    def __init__(self, db_path: Path) -> None:
        self._path = db_path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reader")
        self._here: sqlite3.Connection | None = None  # used on the event loop's thread only
        self._there: sqlite3.Connection | None = None  # used in the reader thread only

    async def open(self) -> None:
        self._here = open_reader(self._path)
        # Mapped, the hundreds of pages a large result spans are read without a system call each.
        self._there = await in_thread(self._thread, open_reader, self._path, MMAP_SIZE)
        await in_thread(self._thread, os.nice, READER_NICENESS)

    async def close(self) -> None:
        if self._here is not None:
            self._here.close()
        if self._there is not None:
            await in_thread(self._thread, self._there.close)
        self._thread.shutdown()

    async def get(self, calc_id: int, form: Form) -> Calculation | None:
        """The run, and once done its result: stored JSON (`plain`) or deflated (`gzip`)."""
        row = self._conn_here.execute(GET_CALCULATION_FOR_RESULT, {"id": calc_id}).fetchone()
        if row is None:
            return None
        calc = Calculation.from_row(row)
        if calc.status is not Status.DONE:
            return calc
        if row["plain_size"] is not None and form == "plain":  # stored before version 3
            plain = await self._blob("result", calc_id, row["plain_size"])
            if plain is not None:
                return replace(calc, result=plain)
            # Rewritten the compact way since the row was read: its deflated copy is the same.
            row = self._conn_here.execute(GET_CALCULATION_FOR_RESULT, {"id": calc_id}).fetchone()
            if row is None:
                return None
        deflated = await self._blob("result_deflated", calc_id, row["deflated_size"])
        if deflated is None:  # deleted meanwhile
            return None
        if form == "gzip":
            return replace(calc, deflated=Deflated(deflated, row["result_crc"], row["result_size"]))
        if row["result_size"] <= INLINE_MAX:
            return replace(calc, result=inflate(deflated, PIECE))
        return replace(calc, result=await in_thread(self._thread, inflate, deflated, PIECE))

    async def csv(self, calc_id: int) -> Pieces | None:
        """The stored CSV of a done run; None if there is none (yet)."""
        assert self._there is not None
        return await in_thread(self._thread, read_csv, self._there, calc_id)

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
        end of the index and turned around, so that the last page costs what the first does."""
        here = self._conn_here
        if offset <= near:
            rows, total = read_page(here, limit, offset, descending, status)
            if rows:
                return rows, total
        total = count_calculations(here, status)
        flipped = offset > total // 2
        if flipped:
            turned = from_the_other_end(limit, offset, total)
            if turned is None:
                return [], total
            limit, offset = turned
        if offset <= near:
            rows, _ = read_page(here, limit, offset, descending ^ flipped, status)
        else:  # walks `offset` index entries: off the loop
            assert self._there is not None
            args = (self._there, limit, offset, descending ^ flipped, status)
            rows, _ = await in_thread(self._thread, read_page, *args)
        return (rows[::-1] if flipped else rows), total

    def row(self, calc_id: int) -> Calculation | None:
        """The run's row alone, never its result: one indexed read on the loop."""
        row = self._conn_here.execute(GET_CALCULATION, {"id": calc_id}).fetchone()
        return None if row is None else Calculation.from_row(row)

    def cancelled_among(self, calc_ids: list[int]) -> list[int]:
        rows = self._conn_here.execute(CANCELLED_AMONG, {"ids": json.dumps(calc_ids)})
        return [row[0] for row in rows]

    def count_by_status(self) -> dict[Status, int]:
        """How many runs are in each status, every status present."""
        counts = dict.fromkeys(Status, 0)
        for row in self._conn_here.execute(COUNT_BY_STATUS):
            counts[Status(row[0])] = row[1]
        return counts

    @property
    def _conn_here(self) -> sqlite3.Connection:
        assert self._here is not None, "open() first"
        return self._here

    async def _blob(self, column: str, calc_id: int, size: int | None) -> Pieces | None:
        if size is not None and size <= INLINE_MAX:
            return read_blob(self._conn_here, column, calc_id)
        assert self._there is not None
        return await in_thread(self._thread, read_blob, self._there, column, calc_id)


def open_reader(db_path: Path, mmap_size: int = 0) -> sqlite3.Connection:
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    for pragma in (*READER_PRAGMAS, f"PRAGMA mmap_size = {mmap_size}"):
        conn.execute(pragma)
    return conn


def read_blob(conn: sqlite3.Connection, column: str, calc_id: int) -> Pieces | None:
    try:
        with conn.blobopen("calculations", column, calc_id, readonly=True) as blob:
            return tuple(iter(functools.partial(blob.read, PIECE), b""))
    except sqlite3.OperationalError:  # no such row, or the column is NULL
        return None


def read_csv(conn: sqlite3.Connection, calc_id: int) -> Pieces | None:
    """The CSV as stored before schema version 3, else made from the deflated JSON (which
    rows of every version have): a row emptied between the two reads is still found."""
    stored = read_blob(conn, "result_csv", calc_id)
    if stored is not None:
        return stored
    deflated = read_blob(conn, "result_deflated", calc_id)
    if deflated is None:
        return None
    return csv_of(deflated, PIECE)


def read_page(
    conn: sqlite3.Connection, limit: int, offset: int, descending: bool, status: Status | None
) -> tuple[list[Summary], int]:
    sql = LIST_CALCULATIONS["DESC" if descending else "ASC", status is not None]
    params = {"limit": limit, "offset": offset, "status": status}
    rows = conn.execute(sql, params).fetchall()
    return [Summary(*row[:4]) for row in rows], (rows[0][4] if rows else 0)


def count_calculations(conn: sqlite3.Connection, status: Status | None) -> int:
    sql = COUNT_CALCULATIONS[status is not None]
    return int(conn.execute(sql, {"status": status}).fetchone()[0])


async def _fenced(conn: aiosqlite.Connection, sql: str, params: dict[str, Any]) -> bool:
    return await fetch_one(conn, sql, params) is not None


def connect_worker(db_path: Path) -> sqlite3.Connection:
    """A connection that writes beside the server's writer: a kernel process's, the `Queue`'s."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA synchronous = NORMAL")  # a setting of each connection, not of the file
    return conn


def store_result(
    conn: sqlite3.Connection,
    calc_id: int,
    attempt: int,
    output: kernel.Output,
    duration: float,
) -> bool:
    """Store the result of this attempt; False if the attempt is no longer the current one.
    Called in the kernel process, so that a large result never passes through the server."""
    params = {
        "id": calc_id,
        "attempt": attempt,
        "deflated": output.deflated,
        "crc": output.crc,
        "size": len(output.json),
        "duration": round(duration, 6),
        "now": utcnow(),
    }
    # fetchall, not fetchone: the statement must run to its end for the write to commit.
    return bool(conn.execute(MARK_DONE, params).fetchall())


async def mark_failed(
    conn: aiosqlite.Connection,
    calc: Calculation,
    error: str,
    duration: float | None,
    ended_at: str | None = None,
) -> bool:
    """Record why this attempt failed; False if the attempt is no longer the current one."""
    params = {
        "id": calc.id,
        "attempt": calc.attempts,
        "error": error,
        "duration": None if duration is None else round(duration, 6),
        "now": ended_at or utcnow(),
    }
    return await _fenced(conn, MARK_FAILED, params)


async def requeue(conn: aiosqlite.Connection, calc: Calculation) -> bool:
    """Put this attempt's run back in the queue, the attempt not counted."""
    return await _fenced(conn, REQUEUE, {"id": calc.id, "attempt": calc.attempts})


async def delete(conn: aiosqlite.Connection, calc_id: int) -> Status | None:
    """Delete the run; the status it had, None if there was no such run."""
    row = await fetch_one(conn, DELETE, {"id": calc_id})
    return Status(row[0]) if row else None


async def delete_finished(
    conn: aiosqlite.Connection, status: Status | None, before: str | None, limit: int
) -> int:
    """Delete at most `limit` finished runs that match, oldest first; how many."""
    params = {"status": status and status.value, "before": before, "limit": limit}
    cursor = await conn.execute(DELETE_FINISHED, params)
    return cursor.rowcount


async def compact(conn: aiosqlite.Connection, limit: int) -> int:
    """Empty the old columns of at most `limit` rows stored before migration 3; how many."""
    cursor = await conn.execute(COMPACT, {"limit": limit})
    return cursor.rowcount


async def cancel(conn: aiosqlite.Connection, calc_id: int) -> Calculation | None:
    """Cancel a queued or running run; None if there is no such run still going."""
    rows = list(await conn.execute_fetchall(CANCEL, {"id": calc_id, "now": utcnow()}))
    return Calculation.from_row(rows[0]) if rows else None


@asynccontextmanager
async def connect_reader(db_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    """A connection that only reads. In WAL mode it reads beside the writer, never waiting
    for it, and sees every commit made before each statement starts."""
    async with aiosqlite.connect(db_path, isolation_level=None) as conn:
        conn.row_factory = aiosqlite.Row
        for pragma in READER_PRAGMAS:
            await conn.execute(pragma)
        yield conn
