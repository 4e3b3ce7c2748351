"""The consumer, step by step: claim order, outcomes recorded, a dead kernel process survived."""

from __future__ import annotations

import contextlib
import os
import signal
import zlib
from collections.abc import AsyncIterator
from datetime import date

import aiosqlite
import pytest

import kernel
from service.config import Config
from service.consumer import Consumer
from service.db import sqlite
from service.db import sqlite_runs as db
from service.db.sqlite import SqliteDatabase
from service.events import RunEvents
from service.leases import Leases
from service.metrics import Metrics
from service.models import Calculation, Status
from service.pool import KernelDied, KernelPool
from tests.conftest import claim_run, insert_run

DAY = date(2024, 1, 1)


@pytest.fixture
async def pool(config: Config) -> AsyncIterator[KernelPool]:
    kernel_pool = KernelPool(workers=1, database_url=config.database_url)
    kernel_pool.start()
    yield kernel_pool
    await kernel_pool.close()


@pytest.fixture
async def sqlite_db(conn: aiosqlite.Connection, config: Config) -> AsyncIterator[SqliteDatabase]:
    """The database as the app opens it, on the file `conn` has made ready."""
    async with sqlite.open_database(config) as database:
        yield database


async def started_leases(database: SqliteDatabase, max_attempts: int = 3) -> Leases:
    """This process recorded as a worker, after the rescue a server makes at start-up."""
    leases = Leases(database, Metrics(), lease=15, max_attempts=max_attempts)
    await leases.start()
    return leases


@pytest.fixture
async def consumer(sqlite_db: SqliteDatabase, pool: KernelPool) -> Consumer:
    leases = await started_leases(sqlite_db)
    return Consumer(sqlite_db, RunEvents(), leases, pool, Metrics(), poll_interval=0.05)


async def insert(conn: aiosqlite.Connection, lag: int = 1, days: int = 0) -> int:
    fin = date.fromordinal(DAY.toordinal() + days)
    calc_id = await insert_run(conn, name="n", date_start=DAY, date_fin=fin, lag=lag, seed=1)
    assert calc_id is not None
    return calc_id


async def stored_result(conn: aiosqlite.Connection, calc_id: int) -> bytes | None:
    """The result's JSON as stored: deflated, read back as another program would."""
    sql = "SELECT result_deflated FROM calculations WHERE id = ?"
    stored = next(iter(await conn.execute_fetchall(sql, (calc_id,))))[0]
    return None if stored is None else zlib.decompressobj(-zlib.MAX_WBITS).decompress(stored)


def output(data: bytes) -> kernel.Output:
    return kernel.Output(data, kernel.deflate_for_splicing(data), zlib.crc32(data))


def store(config: Config, calc: Calculation, data: bytes) -> bool:
    """What a kernel process does once it has computed the attempt `calc`."""
    with contextlib.closing(db.connect_worker(config.db_path)) as worker_conn:
        return db.store_result(worker_conn, calc.id, calc.attempts, output(data), 0.1)


async def test_empty_queue_does_nothing(consumer: Consumer) -> None:
    assert await consumer.run_once() is False


async def test_runs_are_claimed_in_submission_order(
    consumer: Consumer, conn: aiosqlite.Connection
) -> None:
    ids = [await insert(conn) for _ in range(3)]
    for expected in ids:
        assert await consumer.run_once() is True
        calcs = [await db.get_calculation(conn, i) for i in ids]
        statuses = [c.status for c in calcs if c is not None]
        done_upto = ids.index(expected) + 1
        assert statuses == [Status.DONE] * done_upto + [Status.QUEUED] * (3 - done_upto)
    assert await consumer.run_once() is False


async def test_done_row_holds_the_kernel_result_and_timings(
    consumer: Consumer, conn: aiosqlite.Connection
) -> None:
    calc_id = await insert(conn, lag=2, days=30)
    await consumer.run_once()
    calc = await db.get_calculation(conn, calc_id)
    assert calc is not None
    assert calc.status is Status.DONE
    assert await stored_result(conn, calc_id) == kernel.run(DAY, date(2024, 1, 31), 2, 1).json
    assert calc.attempts == 1
    assert calc.duration is not None
    assert calc.started_at is not None
    assert calc.finished_at is not None
    assert calc.created_at <= calc.started_at <= calc.finished_at
    assert calc.error is None


async def test_kernel_error_fails_the_run_and_the_next_one_runs(
    consumer: Consumer, conn: aiosqlite.Connection
) -> None:
    bad, good = await insert(conn, lag=0), await insert(conn)
    await consumer.run_once()
    await consumer.run_once()
    failed, done = await db.get_calculation(conn, bad), await db.get_calculation(conn, good)
    assert failed is not None
    assert done is not None
    assert failed.status is Status.FAILED
    assert failed.error == "ValueError: lag must be at least 1 day, got 0"
    assert await stored_result(conn, bad) is None
    assert done.status is Status.DONE


async def test_dead_kernel_process_is_replaced(pool: KernelPool) -> None:
    (slot,) = pool.slots
    pid = await slot.run(os.getpid)
    # A kernel killed from outside, as the OOM killer would.
    with pytest.raises(KernelDied):
        await slot.run(os.kill, pid, signal.SIGKILL)
    new_pid = await slot.run(os.getpid)
    assert new_pid != pid
    assert await slot.run(abs, -3) == 3


async def test_interrupted_runs_are_queued_again_on_start(config: Config) -> None:
    async with sqlite.open_database(config) as database:
        conn = database.writer
        first, second = await insert(conn), await insert(conn)
        claimed = await claim_run(conn)
        assert claimed is not None
        assert claimed.id == first
    # The process is gone with `first` still running; the next start recovers it.
    async with sqlite.open_database(config) as database:
        conn = database.writer
        await started_leases(database)
        calc = await db.get_calculation(conn, first)
        assert calc is not None
        assert calc.status is Status.QUEUED
        assert calc.started_at is None
        assert calc.attempts == 1
        again = await claim_run(conn)
        assert again is not None
        assert again.id == first
        assert again.attempts == 2
        assert second > first


async def test_only_the_current_attempt_may_write_its_outcome(
    conn: aiosqlite.Connection, config: Config
) -> None:
    calc_id = await insert(conn)
    first = await claim_run(conn)
    assert first is not None
    # The run was recovered after a crash and claimed again: the first attempt is stale.
    await db.rescue_orphans(conn, [], max_attempts=3)
    second = await claim_run(conn)
    assert second is not None
    assert second.attempts == first.attempts + 1
    assert store(config, first, b"[1]") is False
    assert await db.mark_failed(conn, first, "stale", None) is False
    assert store(config, second, b"[2]") is True
    assert await db.mark_failed(conn, second, "late", None) is False
    calc = await db.get_calculation(conn, calc_id)
    assert calc is not None
    assert calc.status is Status.DONE
    assert await stored_result(conn, calc_id) == b"[2]"


async def test_a_cancelled_run_is_not_written_over(
    conn: aiosqlite.Connection, config: Config
) -> None:
    calc_id = await insert(conn)
    claimed = await claim_run(conn)
    assert claimed is not None
    assert await db.cancel(conn, calc_id) is not None
    assert store(config, claimed, b"[]") is False
    assert await db.cancel(conn, calc_id) is None
    calc = await db.get_calculation(conn, calc_id)
    assert calc is not None
    assert calc.status is Status.CANCELLED
    assert await stored_result(conn, calc_id) is None


async def test_runs_interrupted_max_attempts_times_are_failed_on_start(config: Config) -> None:
    async with db.connect(config.db_path, config.schema_path) as conn:
        calc_id = await insert(conn)
        await claim_run(conn)
    for _ in range(2):  # the second start requeues; the one after fails it
        async with sqlite.open_database(config) as database:
            await started_leases(database, max_attempts=2)
            await claim_run(database.writer)
    async with sqlite.open_database(config) as database:
        await started_leases(database, max_attempts=2)
        calc = await db.get_calculation(database.writer, calc_id)
    assert calc is not None
    assert calc.status is Status.FAILED
    assert calc.attempts == 2
    assert calc.error is not None
    assert calc.error.startswith("the run was interrupted 2 times")
