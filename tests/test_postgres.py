"""The PostgreSQL backend's own parts, on a real server: the schema applied by instances
starting together, notices across processes, the kernel processes' store (fenced, and
retried after a lost answer), results read in pieces, and 503s while the server is away."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import date
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from pytest_aiohttp import AiohttpClient

import kernel
from bench.postgres import throwaway_server
from service.app import create_app
from service.config import Config
from service.db import Database, Saved, insert_params, open_database, postgres
from service.db import postgres_sql as sql
from service.events import RunEvents
from service.leases import is_gone, this_host
from service.models import Status, Worker
from tests.conftest import (
    SMALL_RUN,
    TEST_SERVER_SETTINGS,
    admin,
    app_client,
    create,
    on_database,
    recorded_worker,
    wait_for_terminal,
)

SSL_REQUEST = (80877103).to_bytes(4, "big")
LARGE = (date(1800, 1, 1), date(2073, 10, 15), 1)  # 100,000 rows: several pieces


@pytest.fixture
def backend() -> str:
    return "postgresql"


def one_day(seed: int = 1) -> dict[str, Any]:
    day = date(2024, 1, 1)
    return insert_params(name="day", date_start=day, date_fin=day, lag=1, seed=seed)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_instances_starting_together_on_an_empty_database_all_start(
    pg_server: str, config: Config
) -> None:
    name = f"together_{time.monotonic_ns()}"
    admin(pg_server, f'CREATE DATABASE "{name}"')
    url = on_database(pg_server, name)
    try:
        async with contextlib.AsyncExitStack() as stack:
            opened = await asyncio.gather(
                *(
                    stack.enter_async_context(open_database(Config(database_url=url), RunEvents()))
                    for _ in range(6)
                )
            )
            ids = [await database.insert(one_day(i)) for i, database in enumerate(opened)]
            assert ids == [1, 2, 3, 4, 5, 6]
    finally:
        admin(pg_server, f'DROP DATABASE "{name}" WITH (FORCE)')


async def test_one_process_prunes_at_a_time(store: Database, pg_url: str) -> None:
    """While another process holds the pruner's lock, a turn of the retention does nothing;
    once it is free, the turn deletes."""
    calc_id = await store.insert(one_day(0))
    assert calc_id is not None
    assert await store.cancel(calc_id) is not None
    later = "2999-01-01T00:00:00.000000+00:00"
    with psycopg.connect(pg_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (postgres.sql.PRUNER_LOCK,))
        assert await store.prune(later, 10) is None
        assert (await store.get_calculation(calc_id)) is not None
        other.execute("SELECT pg_advisory_unlock(%s)", (postgres.sql.PRUNER_LOCK,))
    assert await store.prune(later, 10) == 1
    assert await store.get_calculation(calc_id) is None


async def test_notices_tell_another_process_what_happened_to_runs(
    config: Config, store: Database
) -> None:
    heard: list[str] = []
    events = RunEvents()
    events.on_queued.append(lambda: heard.append("queued"))
    events.on_cancelled.append(lambda calc_id: heard.append(f"cancelled {calc_id}"))
    async with open_database(config, events) as elsewhere:
        assert events.shared
        await until(lambda: "queued" in heard)  # told once it listens: look at the queue
        heard.clear()
        calc_id = await store.insert(one_day())
        assert calc_id is not None
        await until(lambda: heard == ["queued"])
        with events.watch(calc_id) as ended:
            claimed = await store.claim(await recorded_worker(store))
            assert claimed is not None
            assert await store.cancel(calc_id) is not None
            await until(ended.is_set)
        await until(lambda: heard == ["queued", f"cancelled {calc_id}"])
        assert (await elsewhere.get(calc_id)) is not None


async def test_the_kernel_processes_store_is_fenced_and_idempotent(
    config: Config, store: Database
) -> None:
    calc_id = await store.insert(one_day())
    assert calc_id is not None
    claimed = await store.claim(await recorded_worker(store))
    assert claimed is not None
    output = kernel.run(claimed.date_start, claimed.date_fin, claimed.lag, claimed.seed, 0.0)
    # Another attempt's write is refused; this attempt's is taken, and taken again when
    # retried after a lost answer (the row is done by this very attempt).
    stored = await asyncio.to_thread(
        store_in_thread, config, [(calc_id, 2), (calc_id, 1), (calc_id, 1)], output
    )
    assert stored == [False, True, True]
    done = await store.get(calc_id)
    assert done is not None
    assert (done.status, done.attempts) == (Status.DONE, 1)
    assert done.result is not None
    assert b"".join(done.result) == output.json


async def test_a_large_result_is_read_back_in_pieces_in_every_form(
    config: Config, store: Database
) -> None:
    calc_id = await store.insert(
        insert_params(name="large", seed=3, lag=1, date_start=LARGE[0], date_fin=LARGE[1])
    )
    assert calc_id is not None
    claimed = await store.claim(await recorded_worker(store))
    assert claimed is not None
    output = await asyncio.to_thread(kernel.run, *LARGE, 3, 0.0)
    assert await asyncio.to_thread(store_in_thread, config, [(calc_id, 1)], output) == [True]

    plain, gzip, csv = (
        await store.get(calc_id),
        await store.get(calc_id, "gzip"),
        await store.csv(calc_id),
    )
    assert plain is not None
    assert plain.result is not None
    assert gzip is not None
    assert gzip.deflated is not None
    assert csv is not None
    for pieces, whole in (
        (plain.result, output.json),
        (gzip.deflated.data, output.deflated),
        (csv, b"".join(kernel.csv_of_records_json([output.json]))),
    ):
        assert len(pieces) > 1
        assert all(len(piece) <= postgres.PIECE for piece in pieces)
        assert b"".join(pieces) == whole
    assert (gzip.deflated.crc, gzip.deflated.size) == (output.crc, len(output.json))


async def test_a_store_claims_the_next_run_for_its_worker_in_the_same_commit(
    config: Config, store: Database
) -> None:
    """As a kernel process ends a run on PostgreSQL: the next run is claimed with the store;
    a store retried after its answer was lost finds the run it claimed; a refused store
    claims nothing."""
    worker = await recorded_worker(store)
    ids = [await store.insert(one_day()) for _ in range(3)]
    first = await store.claim(worker)
    assert first is not None
    output = kernel.run(first.date_start, first.date_fin, first.lag, first.seed, 0.0)

    def store_twice_then_refused() -> list[Saved]:
        result_store = postgres.ResultStore(config.database_url)
        try:
            saved = result_store.store(first.id, 1, output, 0.1, claim_for=worker)
            again = result_store.store(first.id, 1, output, 0.1, claim_for=worker)
            refused = result_store.store(first.id, 2, output, 0.1, claim_for=worker)
            return [saved, again, refused]
        finally:
            result_store.close()

    saved, again, refused = await asyncio.to_thread(store_twice_then_refused)
    claimed = saved.claimed
    assert claimed is not None
    assert (saved.written, saved.looked) == (True, True)
    assert (claimed.id, claimed.status, claimed.attempts) == (ids[1], Status.RUNNING, 1)
    assert again.written
    assert again.claimed == claimed  # found again, not a third run claimed
    assert refused == Saved(written=False, claimed=None, looked=False)
    rows = [await store.get_calculation(calc_id) for calc_id in ids]
    statuses = [(row.status, row.started_at, row.finished_at) for row in rows if row is not None]
    assert [status for status, _, _ in statuses] == [Status.DONE, Status.RUNNING, Status.QUEUED]
    assert statuses[1][1] >= statuses[0][2]  # started once the run before it finished


async def test_a_claim_whose_answer_was_lost_is_queued_again_and_computed(
    aiohttp_client: AiohttpClient, config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    """The server claims a run and commits, and the connection breaks before the answer
    reaches the worker: the worker lives on, so no rescue takes the run. It goes back to the
    queue when the database answers again, and is computed once."""
    caplog.set_level(logging.WARNING, logger="service.consumer")
    async with AnswerCutter(config.database_url, sql.CLAIM_NEXT) as cutter:
        changed = replace(config, database_url=cutter.url)
        client = await app_client(aiohttp_client, changed, poll_interval=0.2)
        cutter.armed = True
        calc_id = await create(client)
        async with asyncio.timeout(10):
            await cutter.cut.wait()
        body = await wait_for_terminal(client, calc_id, query="?fields=attempts")
    assert (body["status"], body["attempts"]) == ("done", 1)  # the lost claim not counted
    assert f"calculation {calc_id} was claimed as the database went away" in caplog.text


@pytest.mark.parametrize("per_page", [1, 3, 10, 23, 30])
@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("near", [0, 5, 1000])  # which pages take the one-statement path
async def test_every_page_from_either_end_is_the_same_slice(
    store: Database, per_page: int, descending: bool, near: int
) -> None:
    ids = [await store.insert(one_day()) for _ in range(23)]
    expected = ids[::-1] if descending else ids
    assert isinstance(store, postgres.PostgresDatabase)
    for page in range(1, 23 // per_page + 3):
        offset = (page - 1) * per_page
        rows, count = await store.list_calculations(
            limit=per_page, offset=offset, descending=descending, status=None, near=near
        )
        assert [r.id for r in rows] == expected[offset : offset + per_page]
        assert count == 23


def store_in_thread(
    config: Config, attempts: list[tuple[int, int]], output: kernel.Output
) -> list[bool]:
    """As a kernel process stores: synchronously, with a loop and a connection of its own."""
    result_store = postgres.ResultStore(config.database_url)
    try:
        return [
            result_store.store(calc_id, attempt, output, 0.1).written
            for calc_id, attempt in attempts
        ]
    finally:
        result_store.close()


def test_a_password_never_appears_in_messages() -> None:
    assert postgres.redacted("postgresql://calc:s3cret@db:5432/calc") == (
        "postgresql://calc:***@db:5432/calc"
    )
    assert postgres.redacted("postgresql://calc@db/calc") == "postgresql://calc@db/calc"


def test_heartbeats_are_not_judged_without_a_lease_to_judge_by() -> None:
    """Just after an outage (no lease to judge by yet) only the pid rule applies."""
    stale = Worker(1, "elsewhere/boot", 1, 1, time.time() - 3600)
    assert is_gone(stale, this_host(), time.time(), lease=15)
    assert not is_gone(stale, this_host(), time.time(), lease=None)


async def test_every_request_answers_503_while_the_server_is_away(
    aiohttp_client: AiohttpClient, config: Config
) -> None:
    with throwaway_server(*TEST_SERVER_SETTINGS) as server:
        settings = Config(
            database_url=server.url, kernel_delay=0, poll_interval=0.05, shutdown_grace=0.5
        )
        app = create_app(settings)
        client = await aiohttp_client(app)
        created = await client.post("/api/v1/calculations", json=SMALL_RUN)
        assert created.status == 201
        await asyncio.to_thread(server.stop)
        for method, path in [
            ("POST", "/api/v1/calculations"),
            ("GET", "/api/v1/calculations"),
            ("GET", "/api/v1/calculations/1"),
            ("GET", "/api/v1/calculations/1?wait=5"),
            ("GET", "/api/v1/calculations/1/result.csv"),
            ("POST", "/api/v1/calculations/1/cancel"),
            ("GET", "/metrics"),
            ("GET", "/pingpong/traces"),
        ]:
            started = time.monotonic()
            resp = await client.request(method, path, json=SMALL_RUN if method == "POST" else None)
            assert resp.status == 503, (method, path)
            assert resp.headers["Retry-After"] == "2"
            assert (await resp.json())["error"]["code"] == "database_unavailable"
            assert time.monotonic() - started < 10
        health = await client.get("/health")
        assert (health.status, (await health.json())["database"]) == (503, "error: DatabaseDown")
        await asyncio.to_thread(server.start)
        again = await client.post("/api/v1/calculations", json=SMALL_RUN)
        assert again.status == 201  # reconnected by itself
        waited = await client.get("/api/v1/calculations/1?wait=30")
        assert (await waited.json())["status"] == "done"  # the run from before the outage
        await asyncio.to_thread(server.stop)
        await client.close()  # a shutdown with the database away ends too


class AnswerCutter:
    """A TCP relay to PostgreSQL standing in for a network that breaks at the worst moment
    (not our code, so a fake is fair): armed, it lets the next run of `statement` whose
    answer's first row has a second column (what a claim claimed) run and commit on the
    server, then closes the client's connection before that answer reaches
    it. Messages are read as the protocol frames them: a Parse names a statement, a Bind
    runs one by name (asyncpg prepares each statement once a connection)."""

    def __init__(self, target: str, statement: str) -> None:
        self._target = target
        self.statement = statement.encode()
        self.armed = False
        self.cut = asyncio.Event()

    async def __aenter__(self) -> AnswerCutter:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    @property
    def url(self) -> str:
        """The target reached through the relay, in plain text that it can read."""
        port = self._server.sockets[0].getsockname()[1]
        parts = urlsplit(self._target)
        login = parts.netloc.rpartition("@")[0]
        netloc = f"{login}@127.0.0.1:{port}" if login else f"127.0.0.1:{port}"
        query = "&".join(q for q in (parts.query, "sslmode=disable") if q)
        return parts._replace(netloc=netloc, query=query).geturl()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        target = urlsplit(self._target)
        server_r, server_w = await asyncio.open_connection(target.hostname, target.port)
        watched = asyncio.Event()  # the statement went: its answer is held until read

        async def upstream() -> None:
            statements: dict[bytes, bytes] = {}
            async for message in messages(client_r, from_client=True):
                kind, fields = message[:1], message[5:].split(b"\0")
                if kind == b"P":
                    statements[fields[0]] = fields[1]
                elif kind == b"B" and self.armed and statements.get(fields[1]) == self.statement:
                    watched.set()
                server_w.write(message)
            server_w.close()

        async def downstream() -> None:
            answer: list[bytes] = []
            async for message in messages(server_r):
                if not watched.is_set():
                    client_w.write(message)
                    continue
                answer.append(message)
                if message[:1] != b"Z":  # ReadyForQuery: run, committed, answered
                    continue
                watched.clear()
                rows = [m for m in answer if m[:1] == b"D"]
                if rows and claimed(rows[0]):
                    self.armed = False
                    self.cut.set()
                    break
                client_w.write(b"".join(answer))
                answer = []
            client_w.close()
            server_w.close()

        with contextlib.suppress(ConnectionError):
            await asyncio.gather(upstream(), downstream())


async def messages(reader: asyncio.StreamReader, from_client: bool = False) -> AsyncIterator[bytes]:
    """The protocol's messages as they come: a type byte and a length that counts itself.
    A client's first message has no type byte, nor the one after an SSL request."""
    untyped = from_client
    while True:
        head = 0 if untyped else 1
        try:
            start = await reader.readexactly(head + 4)
            body = await reader.readexactly(int.from_bytes(start[head:], "big") - 4)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        untyped = untyped and body[:4] == SSL_REQUEST
        yield start + body  # untyped, its first byte is the length's: 0, never a type


def claimed(row: bytes) -> bool:
    """Whether a DataRow's second column has a value (a length of -1 is NULL)."""
    first = int.from_bytes(row[7:11], "big", signed=True)
    second_at = 11 + max(first, 0)
    return int.from_bytes(row[second_at : second_at + 4], "big", signed=True) != -1
