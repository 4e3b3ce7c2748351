"""The SQLite backend: `SqliteDatabase`, the interface (`service.db.Database`) on one file,
over the statements of `sqlite_runs` and `sqlite_traces`, and the kernel processes' store."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite

import kernel
from service.config import Config
from service.db import DatabaseUnavailable, DiskState, Form, Saved, StorageFull, sqlite_traces
from service.db.sqlite_runs import (
    Queue,
    Reader,
    cancel,
    compact,
    connect,
    connect_reader,
    connect_worker,
    delete,
    delete_finished,
    forget_worker,
    get_by_idempotency_key,
    heartbeat,
    list_workers,
    mark_failed,
    register_worker,
    requeue,
    rescue_orphans,
    store_result,
)
from service.models import Calculation, Hop, Pieces, Status, Summary, Trace, Worker


@asynccontextmanager
async def open_database(config: Config) -> AsyncIterator[SqliteDatabase]:
    """The writer, the runs' `Queue` and `Reader`, and a reader connection for the ping-pong
    traces, each with a thread of its own: no kind of work queues behind another."""
    reader, queue = Reader(config.db_path), Queue(config.db_path)
    opened = False
    try:
        async with (
            connect(config.db_path, config.schema_path) as writer,
            connect_reader(config.db_path) as traces,
        ):
            await reader.open()
            await queue.open()
            opened = True
            try:
                yield SqliteDatabase(writer, traces, reader, queue)
            finally:
                await queue.close()
                await reader.close()
    except (OSError, sqlite3.Error) as exc:
        if opened:
            raise
        raise DatabaseUnavailable(
            f"the database {config.database_url} cannot be opened: {exc}"
        ) from None


def is_disk_full(exc: sqlite3.OperationalError) -> bool:
    return exc.sqlite_errorcode == sqlite3.SQLITE_FULL


class SqliteDatabase:
    """`service.db.Database` on one SQLite file: each call on the connection that serves it
    best (see `Queue` and `Reader`); writes other than creates and claims go through the
    writer, ping-pong reads through a reader of their own."""

    def __init__(
        self,
        writer: aiosqlite.Connection,
        traces: aiosqlite.Connection,
        reader: Reader,
        queue: Queue,
    ) -> None:
        self.writer, self._traces, self._reader, self._queue = writer, traces, reader, queue
        self.disk = DiskState()
        self.claims_on_store = False

    @contextmanager
    def _writing(self, adds: bool = False) -> Iterator[None]:
        """A write: refused for a full disk, it raises StorageFull (tried again by whoever
        wrote). One that `adds` rows (a create) tells the disk has space again when it
        succeeds: a small update can pass on a disk that a result does not fit on."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if is_disk_full(exc):
                raise self.disk.refused(exc) from exc
            raise
        if adds:
            self.disk.wrote()

    async def insert(self, params: dict[str, Any]) -> int | None:
        with self._writing(adds=True):
            return await self._queue.insert(params)

    async def claim(self, worker_id: int) -> Calculation | None:
        with self._writing():
            return await self._queue.claim(worker_id)

    async def get(self, calc_id: int, form: Form = "plain") -> Calculation | None:
        return await self._reader.get(calc_id, form)

    async def get_calculation(self, calc_id: int) -> Calculation | None:
        # On the loop, like every small read: a ?wait served elsewhere looks every 0.1 s.
        return self._reader.row(calc_id)

    async def get_by_idempotency_key(self, key: str) -> tuple[Calculation, str] | None:
        return await get_by_idempotency_key(self.writer, key)

    async def csv(self, calc_id: int) -> Pieces | None:
        return await self._reader.csv(calc_id)

    async def list_calculations(
        self, *, limit: int, offset: int, descending: bool, status: Status | None
    ) -> tuple[list[Summary], int]:
        return await self._reader.list_calculations(
            limit=limit, offset=offset, descending=descending, status=status
        )

    async def count_by_status(self) -> dict[Status, int]:
        return self._reader.count_by_status()

    async def cancel(self, calc_id: int) -> Calculation | None:
        with self._writing():
            return await cancel(self.writer, calc_id)

    async def cancelled_among(self, calc_ids: list[int]) -> list[int]:
        return self._reader.cancelled_among(calc_ids)

    async def delete(self, calc_id: int) -> Status | None:
        with self._writing():
            return await delete(self.writer, calc_id)

    async def delete_finished(self, status: Status | None, before: str | None, limit: int) -> int:
        with self._writing():
            return await delete_finished(self.writer, status, before, limit)

    async def prune(self, before: str, limit: int) -> int | None:
        # One file, whose writes take turns anyway: no lock of our own.
        return await self.delete_finished(None, before, limit)

    async def compact(self, limit: int) -> int:
        with self._writing():
            return await compact(self.writer, limit)

    async def mark_failed(
        self, calc: Calculation, error: str, duration: float | None, ended_at: str | None = None
    ) -> bool:
        with self._writing():
            return await mark_failed(self.writer, calc, error, duration, ended_at)

    async def requeue(self, calc: Calculation) -> bool:
        with self._writing():
            return await requeue(self.writer, calc)

    async def requeue_unheld(self, worker_id: int, held: list[int]) -> list[int]:
        # A claim here is a call on this process's own file under its write lock: it
        # commits and answers, or rolls back. None is left without its answer.
        return []

    async def register_worker(self, host: str, pid: int, pid_started: int, now: float) -> int:
        with self._writing():
            return await register_worker(self.writer, host, pid, pid_started, now)

    async def heartbeat(self, worker_id: int, now: float) -> bool:
        with self._writing():
            return await heartbeat(self.writer, worker_id, now)

    async def list_workers(self) -> list[Worker]:
        return await list_workers(self.writer)

    async def forget_worker(self, worker_id: int) -> None:
        with self._writing():
            await forget_worker(self.writer, worker_id)

    async def rescue_orphans(
        self, gone: list[int], max_attempts: int
    ) -> tuple[list[int], list[int]]:
        with self._writing():
            return await rescue_orphans(self.writer, gone, max_attempts)

    async def add_trace(self, trace_id: str) -> bool:
        with self._writing():
            return await sqlite_traces.add_trace(self.writer, trace_id)

    async def insert_hop(self, **hop: Any) -> Hop | None:
        with self._writing():
            return await sqlite_traces.insert_hop(self.writer, **hop)

    async def finish_hop(self, **hop: Any) -> Hop | None:
        with self._writing():
            return await sqlite_traces.finish_hop(self.writer, **hop)

    async def list_hops(self, trace_id: str) -> list[Hop]:
        return await sqlite_traces.list_hops(self._traces, trace_id)

    async def trace_created_at(self, trace_id: str) -> datetime | None:
        return await sqlite_traces.trace_created_at(self._traces, trace_id)

    async def list_traces(self, *, limit: int, offset: int) -> list[Trace]:
        return await sqlite_traces.list_traces(self._traces, limit=limit, offset=offset)

    async def count_traces(self) -> int:
        return await sqlite_traces.count_traces(self._traces)


class ResultStore:
    """What a kernel process writes with: its own connection, beside the server's."""

    def __init__(self, db_path: Path) -> None:
        self._conn = connect_worker(db_path)

    def store(
        self,
        calc_id: int,
        attempt: int,
        output: kernel.Output,
        duration: float,
        claim_for: int | None = None,
    ) -> Saved:
        """Claims nothing: on SQLite the server's claim is a call in its own process."""
        try:
            return Saved(store_result(self._conn, calc_id, attempt, output, duration))
        except sqlite3.OperationalError as exc:
            if is_disk_full(exc):  # the run goes back to the queue
                raise StorageFull(str(exc)) from None
            raise
