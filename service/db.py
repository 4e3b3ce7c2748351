"""Database access: the connection context, schema loading, and one function per SQL statement."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from pathlib import Path

import aiosqlite
from aiohttp import web

from service.keys import CONFIG, DB
from service.models import Calculation, Status

log = logging.getLogger(__name__)

MIN_SQLITE = (3, 35)  # the first version with RETURNING
BUSY_TIMEOUT_MS = 5000

COLUMNS = (
    "id, name, status, date_start, date_fin, lag, seed, attempts,"
    " created_at, started_at, finished_at, duration, error"
)

INSERT_CALCULATION = f"""
INSERT INTO calculations (name, date_start, date_fin, lag, seed, created_at)
VALUES (:name, :date_start, :date_fin, :lag, :seed, :now)
RETURNING {COLUMNS}
"""

GET_CALCULATION = "SELECT * FROM calculations WHERE id = :id"

CLAIM_NEXT = f"""
UPDATE calculations
SET status = 'running', started_at = :now, attempts = attempts + 1
WHERE id = (SELECT id FROM calculations WHERE status = 'queued' ORDER BY id LIMIT 1)
RETURNING {COLUMNS}
"""

MARK_DONE = """
UPDATE calculations
SET status = 'done', result = :result, duration = :duration, finished_at = :now, error = NULL
WHERE id = :id AND status = 'running'
"""

MARK_FAILED = """
UPDATE calculations
SET status = 'failed', error = :error, duration = :duration, finished_at = :now
WHERE id = :id AND status = 'running'
"""

REQUEUE_RUNNING = """
UPDATE calculations SET status = 'queued', started_at = NULL
WHERE status = 'running'
RETURNING id
"""

# Launch order is created_at with id breaking ties; each variant has an index that serves it.
LIST_CALCULATIONS = {
    (order, filtered): f"""
SELECT {COLUMNS} FROM calculations
{"WHERE status = :status" if filtered else ""}
ORDER BY created_at {order}, id {order}
LIMIT :limit OFFSET :offset
"""
    for order in ("ASC", "DESC")
    for filtered in (False, True)
}

COUNT_CALCULATIONS = {
    False: "SELECT count(*) FROM calculations",
    True: "SELECT count(*) FROM calculations WHERE status = :status",
}


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@asynccontextmanager
async def connect(db_path: Path, schema_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    """An autocommit connection to a ready database: pragmas set, schema applied, runs recovered."""
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        raise RuntimeError(
            f"SQLite {sqlite3.sqlite_version} is too old: 3.35 or newer is needed for RETURNING"
        )
    db_path.parent.mkdir(parents=True, exist_ok=True)
    async with aiosqlite.connect(db_path, isolation_level=None) as conn:
        conn.row_factory = aiosqlite.Row
        await prepare(conn, schema_path)
        yield conn


async def prepare(conn: aiosqlite.Connection, schema_path: Path) -> None:
    await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    await conn.execute("PRAGMA journal_mode = WAL")
    # In WAL mode NORMAL loses no committed row when the process dies; only an OS crash
    # or power cut can drop the last commits, and it never corrupts the file.
    await conn.execute("PRAGMA synchronous = NORMAL")
    await conn.executescript(await asyncio.to_thread(schema_path.read_text))
    requeued = await requeue_running(conn)
    for calc_id in requeued:
        log.warning("calculation %d was interrupted and is queued again", calc_id)


async def insert_calculation(
    conn: aiosqlite.Connection, *, name: str, date_start: date, date_fin: date, lag: int, seed: int
) -> Calculation:
    rows = list(
        await conn.execute_fetchall(
            INSERT_CALCULATION,
            {
                "name": name,
                "date_start": date_start.isoformat(),
                "date_fin": date_fin.isoformat(),
                "lag": lag,
                "seed": seed,
                "now": utcnow(),
            },
        )
    )
    return Calculation.from_row(rows[0])


async def get_calculation(conn: aiosqlite.Connection, calc_id: int) -> Calculation | None:
    async with conn.execute(GET_CALCULATION, {"id": calc_id}) as cursor:
        row = await cursor.fetchone()
    return None if row is None else Calculation.from_row(row)


async def claim_next(conn: aiosqlite.Connection) -> Calculation | None:
    rows = list(await conn.execute_fetchall(CLAIM_NEXT, {"now": utcnow()}))
    return Calculation.from_row(rows[0]) if rows else None


async def mark_done(
    conn: aiosqlite.Connection, calc_id: int, result_json: str, duration: float
) -> bool:
    """Store the result of a running calculation; False if it was no longer running."""
    params = {"id": calc_id, "result": result_json, "duration": duration, "now": utcnow()}
    async with conn.execute(MARK_DONE, params) as cursor:
        return cursor.rowcount == 1


async def mark_failed(
    conn: aiosqlite.Connection, calc_id: int, error: str, duration: float | None
) -> bool:
    """Record why a running calculation failed; False if it was no longer running."""
    params = {"id": calc_id, "error": error, "duration": duration, "now": utcnow()}
    async with conn.execute(MARK_FAILED, params) as cursor:
        return cursor.rowcount == 1


async def requeue_running(conn: aiosqlite.Connection) -> list[int]:
    """Put back in the queue every run left `running` by a process that is gone."""
    rows = await conn.execute_fetchall(REQUEUE_RUNNING)
    return sorted(row[0] for row in rows)


async def list_calculations(
    conn: aiosqlite.Connection,
    *,
    limit: int,
    offset: int,
    descending: bool,
    status: Status | None,
) -> list[Calculation]:
    sql = LIST_CALCULATIONS["DESC" if descending else "ASC", status is not None]
    params = {"limit": limit, "offset": offset, "status": status}
    return [Calculation.from_row(row) for row in await conn.execute_fetchall(sql, params)]


async def count_calculations(conn: aiosqlite.Connection, *, status: Status | None) -> int:
    sql = COUNT_CALCULATIONS[status is not None]
    rows = list(await conn.execute_fetchall(sql, {"status": status}))
    return int(rows[0][0])


async def db_context(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    async with connect(config.db_path, config.schema_path) as conn:
        app[DB] = conn
        yield
