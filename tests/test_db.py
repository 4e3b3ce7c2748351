"""The database module: counts kept by triggers, pages read from either end, schema re-runs."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import pytest

from service.config import Config
from service.db import insert_params
from service.db import sqlite_runs as db
from service.models import Status
from tests.conftest import claim_run, insert_run, insert_runs, recorded_worker

DAY = date(2024, 1, 1)
Part = TypeVar("Part", db.Reader, db.Queue)


@asynccontextmanager
async def opened(part: Part) -> AsyncIterator[Part]:
    """A `db.Reader` or `db.Queue`, open for the block."""
    await part.open()
    try:
        yield part
    finally:
        await part.close()


def reading(db_path: Path) -> AbstractAsyncContextManager[db.Reader]:
    return opened(db.Reader(db_path))


def queue_on(db_path: Path) -> AbstractAsyncContextManager[db.Queue]:
    return opened(db.Queue(db_path))


async def total(reader: db.Reader, status: Status | None = None) -> int:
    """The total a list page reports."""
    _, count = await reader.list_calculations(limit=1, offset=10**6, descending=True, status=status)
    return count


async def real_counts(conn: aiosqlite.Connection) -> dict[Status, int]:
    counts = dict.fromkeys(Status, 0)
    for status, n in await conn.execute_fetchall(
        "SELECT status, count(*) FROM calculations GROUP BY status"
    ):
        counts[Status(status)] = n
    return counts


async def test_counts_follow_every_change(conn: aiosqlite.Connection, config: Config) -> None:
    ids = await insert_runs(conn, 6)
    claimed = await claim_run(conn)
    assert claimed is not None
    await db.cancel(conn, ids[1])
    await db.cancel(conn, ids[0])  # the running one
    second = await claim_run(conn)
    assert second is not None
    await db.mark_failed(conn, second, "boom", 0.1)
    await conn.execute("DELETE FROM calculations WHERE id = ?", (ids[5],))
    async with reading(config.db_path) as reader:
        counts = reader.count_by_status()
        assert counts == await real_counts(conn)
        assert counts == {
            Status.QUEUED: 2,
            Status.RUNNING: 0,
            Status.DONE: 0,
            Status.FAILED: 1,
            Status.CANCELLED: 2,
        }
        assert await total(reader) == 5
        assert await total(reader, Status.QUEUED) == 2


@pytest.mark.parametrize("per_page", [1, 3, 10, 23, 30])
@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("near", [0, 5, 1000])  # which pages take the one-statement path
async def test_every_page_from_either_end_is_the_same_slice(
    conn: aiosqlite.Connection, config: Config, per_page: int, descending: bool, near: int
) -> None:
    ids = await insert_runs(conn, 23)
    expected = ids[::-1] if descending else ids
    async with reading(config.db_path) as reader:
        for page in range(1, 23 // per_page + 3):
            offset = (page - 1) * per_page
            rows, count = await reader.list_calculations(
                limit=per_page, offset=offset, descending=descending, status=None, near=near
            )
            assert [r.id for r in rows] == expected[offset : offset + per_page]
            assert count == 23


async def test_schema_applies_twice(config: Config) -> None:
    for _ in range(2):
        async with db.connect(config.db_path, config.schema_path) as conn:
            await insert_runs(conn, 1)
    async with reading(config.db_path) as reader:
        assert await total(reader) == 2


def new_run(seed: int, **extra: Any) -> dict[str, Any]:
    return insert_params(name="r", date_start=DAY, date_fin=DAY, lag=1, seed=seed, **extra)


async def test_concurrent_creates_are_each_written_and_committed_before_their_answer(
    conn: aiosqlite.Connection, config: Config
) -> None:
    async with queue_on(config.db_path) as batcher:
        ids = await asyncio.gather(*(batcher.insert(new_run(i)) for i in range(50)))
        # Answered means committed: another connection sees every row at once.
        async with reading(config.db_path) as reader:
            assert reader.count_by_status()[Status.QUEUED] == 50
    assert sorted(ids) == list(range(1, 51))  # type: ignore[type-var]
    seeds = await conn.execute_fetchall("SELECT id, seed FROM calculations ORDER BY id")
    assert [tuple(row) for row in seeds] == [(calc_id, i) for i, calc_id in enumerate(ids)]


async def test_queue_limit_and_idempotency_hold_inside_one_batch(
    conn: aiosqlite.Connection, config: Config
) -> None:
    async with queue_on(config.db_path) as batcher:
        limited = await asyncio.gather(
            *(batcher.insert(new_run(i, max_queued=10)) for i in range(25))
        )
        assert sum(calc_id is not None for calc_id in limited) == 10
        await conn.execute("DELETE FROM calculations")
        keyed = await asyncio.gather(
            *(batcher.insert(new_run(i, idempotency_key="k", request_hash="h")) for i in range(5))
        )
    assert sum(calc_id is not None for calc_id in keyed) == 1


async def test_an_insert_that_fails_fails_alone(conn: aiosqlite.Connection, config: Config) -> None:
    broken = {**new_run(99), "name": None}  # NOT NULL: what a bug upstream could send
    async with queue_on(config.db_path) as batcher:
        answers = await asyncio.gather(
            *(batcher.insert(params) for params in (new_run(1), broken, new_run(2))),
            return_exceptions=True,
        )
    assert answers[0] == 1
    assert isinstance(answers[1], sqlite3.IntegrityError)
    assert answers[2] == 2
    seeds = await conn.execute_fetchall("SELECT seed FROM calculations ORDER BY id")
    assert [row[0] for row in seeds] == [1, 2]


async def test_no_run_is_started_before_it_was_created(
    conn: aiosqlite.Connection, config: Config
) -> None:
    """Another producer inserts runs now and then, while claims keep the queue empty: each
    claim takes its time holding the write lock, so after every commit it can see."""
    produced = asyncio.Event()
    worker = await recorded_worker(conn)

    async def claims() -> None:
        while not produced.is_set():
            await batcher.claim(worker)

    async def other_producer() -> None:
        for i in range(50):
            await insert_run(conn, name="other", date_start=DAY, date_fin=DAY, lag=1, seed=i)
            await asyncio.sleep(0.002)
        produced.set()

    async with queue_on(config.db_path) as batcher:
        await asyncio.gather(claims(), other_producer())
    rows = await conn.execute_fetchall(
        "SELECT created_at, started_at FROM calculations WHERE started_at IS NOT NULL"
    )
    assert len(rows) >= 49
    assert all(created <= started for created, started in rows)


async def test_a_start_waits_for_another_process_holding_a_new_file(config: Config) -> None:
    """Two processes starting together on a new file (ping-pong's A and B): the second
    switches the file to WAL once the first lets go, instead of failing to start."""
    other = sqlite3.connect(config.db_path, isolation_level=None)
    other.execute("CREATE TABLE first_process (x)")
    other.execute("BEGIN IMMEDIATE")  # the write lock, as a first process's schema script holds
    asyncio.get_running_loop().call_later(0.3, other.execute, "ROLLBACK")
    try:
        async with db.connect(config.db_path, config.schema_path) as conn:
            assert list((await conn.execute_fetchall("PRAGMA journal_mode"))[0]) == ["wal"]
    finally:
        other.close()
