"""The database module: counts kept by triggers, pages read from either end, schema re-runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from pathlib import Path

import aiosqlite
import pytest

from service import db
from service.config import Config
from service.models import Status

DAY = date(2024, 1, 1)


async def insert(conn: aiosqlite.Connection, count: int) -> list[int]:
    ids = []
    for i in range(count):
        calc_id = await db.insert_calculation(
            conn, name=f"r{i}", date_start=DAY, date_fin=DAY, lag=1, seed=i
        )
        assert calc_id is not None
        ids.append(calc_id)
    return ids


@asynccontextmanager
async def reading(db_path: Path) -> AsyncIterator[db.Reader]:
    reader = db.Reader(db_path)
    await reader.open()
    try:
        yield reader
    finally:
        await reader.close()


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
    ids = await insert(conn, 6)
    claimed = await db.claim_next(conn)
    assert claimed is not None
    await db.cancel(conn, ids[1])
    await db.cancel(conn, ids[0])  # the running one
    second = await db.claim_next(conn)
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


async def test_counts_are_rebuilt_for_a_database_made_without_them(config: Config) -> None:
    async with db.connect(config.db_path, config.schema_path) as conn:
        await insert(conn, 3)
        await db.claim_next(conn)
        await conn.execute("DROP TABLE calculation_counts")
    async with (
        db.connect(config.db_path, config.schema_path) as conn,
        reading(config.db_path) as reader,
    ):
        # The running row was put back in the queue on start.
        assert reader.count_by_status() == await real_counts(conn)
        assert await total(reader, Status.QUEUED) == 3


@pytest.mark.parametrize("per_page", [1, 3, 10, 23, 30])
@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("near", [0, 5, 1000])  # which pages take the one-statement path
async def test_every_page_from_either_end_is_the_same_slice(
    conn: aiosqlite.Connection, config: Config, per_page: int, descending: bool, near: int
) -> None:
    ids = await insert(conn, 23)
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
            await insert(conn, 1)
    async with reading(config.db_path) as reader:
        assert await total(reader) == 2
