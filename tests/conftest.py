"""Fixtures and helpers shared by the tests: real SQLite files, a real PostgreSQL server,
process pools and servers.

A module that sets `ON_BOTH_BACKENDS = True` runs each test that uses the `backend` fixture
(through `config`, `database_url`, `client`, `store` or `start_server`) once on SQLite and
once on PostgreSQL. PostgreSQL is the server at PG_TEST_URL if one answers there, else a
throwaway server from Debian's binaries (`make tools`); each module gets a fresh database,
emptied before each test.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import itertools
import json
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiosqlite
import psycopg
import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from bench.postgres import throwaway_server
from service.app import create_app
from service.config import Config, is_postgres
from service.db import Database, insert_params, open_database, utcnow
from service.db import sqlite_runs as db
from service.events import RunEvents
from service.models import TERMINAL, Calculation

ROOT = Path(__file__).resolve().parents[1]
SMALL_RUN = {"date_start": "2024-01-01", "date_fin": "2024-01-31", "lag": 7}
CSV_HEADER = ["date", "liquid", "oil", "water", "wct"]


PG_TEST_URL = os.environ.get("PG_TEST_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
BACKENDS = ("sqlite", "postgresql")
# The throwaway server may lose its last commits in a crash of the machine: tests need speed.
# Autovacuum looks every second, not every minute, so that a test sees it within its time.
TEST_SERVER_SETTINGS = (
    "fsync=off", "full_page_writes=off", "max_connections=200", "autovacuum_naptime=1"
)  # fmt: skip


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames and getattr(metafunc.module, "ON_BOTH_BACKENDS", False):
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "sqlite")


def answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The URL of a PostgreSQL server the tests may create databases on."""
    if answers(PG_TEST_URL):
        yield PG_TEST_URL
        return
    with throwaway_server(*TEST_SERVER_SETTINGS) as server:
        yield server.url


def admin(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement.encode())


def on_database(url: str, name: str) -> str:
    return urlsplit(url)._replace(path=f"/{name}").geturl()


@pytest.fixture(scope="module")
def pg_module_url(pg_server: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database for the module, dropped after it."""
    module = request.module.__name__.rpartition(".")[2]
    name = f"{module}_{os.getpid()}_{secrets.token_hex(3)}"
    admin(pg_server, f'CREATE DATABASE "{name}"')
    yield on_database(pg_server, name)
    admin(pg_server, f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_module_url: str) -> str:
    """The module's database with no runs, workers or traces, as a new SQLite file has."""
    with psycopg.connect(pg_module_url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('calculations')").fetchone() != (None,):
            conn.execute(
                b"TRUNCATE calculations, workers, pingpong_traces, pingpong_hops RESTART IDENTITY;"
                b" UPDATE calculation_counts SET n = 0"
            )
    return pg_module_url


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "postgresql":
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite:///{tmp_path / 'calc.db'}"


@pytest.fixture
def config(database_url: str) -> Config:
    return Config(
        database_url=database_url,
        workers=1,
        kernel_delay=0.0,
        poll_interval=0.05,
        shutdown_grace=0.5,  # tests that leave a long kernel running end quickly
    )


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, config: Config) -> TestClient[Any, Any]:
    return await aiohttp_client(create_app(config))


@pytest.fixture
async def conn(config: Config) -> AsyncIterator[aiosqlite.Connection]:
    """A connection to the same database file the app uses, ready as at start-up."""
    async with db.connect(config.db_path, config.schema_path) as connection:
        yield connection


@pytest.fixture
async def store(config: Config) -> AsyncIterator[Database]:
    """The database the app uses, opened beside it as another process would, ready."""
    async with open_database(config, RunEvents()) as database:
        yield database


async def app_client(
    aiohttp_client: AiohttpClient, config: Config, **changes: Any
) -> TestClient[Any, Any]:
    """A client of an app made with these settings changed."""
    return await aiohttp_client(create_app(replace(config, **changes)))


async def insert_runs(conn: aiosqlite.Connection | Database, count: int) -> list[int]:
    """Queued one-day runs written straight into the table, so the consumer is not involved."""
    ids = []
    day = date(2024, 1, 1)
    for i in range(count):
        calc_id = await insert_run(
            conn, name=f"run {i}", date_start=day, date_fin=day, lag=1, seed=i
        )
        assert calc_id is not None
        ids.append(calc_id)
    return ids


async def insert_run(conn: aiosqlite.Connection | Database, **fields: Any) -> int | None:
    """A queued run written straight into the database, as another producer would: the same
    statement as the API's, one at a time. Its id, or None if nothing was inserted."""
    if not isinstance(conn, aiosqlite.Connection):
        return await conn.insert(insert_params(**fields))
    row = await db.fetch_one(conn, db.INSERT_CALCULATION, insert_params(**fields))
    return None if row is None else int(row[0])


async def claim_run(
    conn: aiosqlite.Connection | Database, worker_id: int | None = None
) -> Calculation | None:
    """The oldest queued run claimed, as another consumer would: the consumer's statement.
    With no worker, as a process that has since gone (or an older version) would."""
    if not isinstance(conn, aiosqlite.Connection):
        return await conn.claim(worker_id or await recorded_worker(conn))
    row = await db.fetch_one(conn, db.CLAIM_NEXT, {"now": utcnow(), "worker": worker_id})
    return None if row is None else Calculation.from_row(row)


async def recorded_worker(where: aiosqlite.Connection | Database) -> int:
    """A worker record, as a process that computes makes at its start: a claim names one."""
    args = ("test-host", os.getpid(), 1, time.time())
    if isinstance(where, aiosqlite.Connection):
        return await db.register_worker(where, *args)
    return await where.register_worker(*args)


async def wait_for_terminal(
    client: TestClient[Any, Any], calc_id: int, timeout: float = 30.0, query: str = ""
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            resp = await client.get(f"/api/v1/calculations/{calc_id}{query}")
            body: dict[str, Any] = await resp.json()
            if body["status"] in TERMINAL:
                return body
            await asyncio.sleep(0.02)


async def create(client: TestClient[Any, Any], **overrides: Any) -> int:
    resp = await client.post("/api/v1/calculations", json={**SMALL_RUN, **overrides})
    assert resp.status == 201, await resp.text()
    calc_id: int = (await resp.json())["id"]
    return calc_id


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def imported_of(modules: str, among: set[str]) -> list[str]:
    """Which of the top-level packages `among` a fresh interpreter has imported once it
    imported `modules` (a comma-separated list)."""
    top = "{m.split('.')[0] for m in sys.modules}"
    code = f"import json, sys, {modules}; print(json.dumps(sorted({top} & {among!r})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    found: list[str] = json.loads(done.stdout)
    return found


def unmeasured_environ() -> dict[str, str]:
    """This environment without coverage's request to measure subprocesses: for a server
    that will be SIGKILLed, which never writes its data, so measuring it is only a cost."""
    return {key: value for key, value in os.environ.items() if key != "COVERAGE_PROCESS_CONFIG"}


@pytest.fixture
def start_server(tmp_path: Path, database_url: str) -> Iterator[Any]:
    """Start `python -m service` as a subprocess, on the test's database unless `env` says
    otherwise; every server started is stopped at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(
        env: dict[str, str], log_name: str = "server.log", *, measured: bool = True
    ) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        full_env = {
            **(os.environ if measured else unmeasured_environ()),
            "DATABASE_URL": database_url,
            "KERNEL_DELAY": "0",
            "PORT": str(port),
            **env,
        }
        with (tmp_path / log_name).open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "service"], cwd=ROOT, env=full_env, stdout=log, stderr=log
            )
        started.append(proc)
        return proc, f"http://127.0.0.1:{port}"

    yield start
    stop_servers(started)


def serve(start_server: Any, **env: str) -> str:
    """A server started with `env` (on the test's database), once it answers: its URL. A
    kernel left running (a long KERNEL_DELAY) is not waited for at the test's end."""
    _, url = start_server({"SHUTDOWN_GRACE": "0.5", **env})
    asyncio.run(wait_until_up(url))
    return url


@pytest.fixture
def service_url(start_server: Any) -> str:
    """A server with the test's settings, answering, for tests without a running loop."""
    return serve(start_server)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if it has not stopped 20 s later."""
    stop_servers([proc])


def stop_servers(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to all at once, so that their grace periods overlap; SIGKILL to any that has
    not stopped 20 s later."""
    alive = [proc for proc in procs if proc.poll() is None]
    for proc in alive:
        proc.terminate()
    deadline = time.monotonic() + 20
    for proc in alive:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_until_up(base_url: str, timeout: float = 30.0) -> None:
    """Poll until the server answers HTTP, whatever the status."""
    import aiohttp

    async with aiohttp.ClientSession() as session, asyncio.timeout(timeout):
        while True:
            try:
                async with session.get(f"{base_url}/api/v1/calculations"):
                    return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(child) for child in (task / "children").read_text().split())
    return found


def running(pid: int) -> bool:
    """Alive, and not a zombie waiting for its parent to collect it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or before the read
        return False
    return state != "Z"


def database(where: Path | str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows read straight from the database (a SQLite file, or a URL of either backend), as
    another program would. Parameters are written `?`, as sqlite3 takes them."""
    if isinstance(where, str) and is_postgres(where):
        with psycopg.connect(where, autocommit=True) as conn:
            return conn.execute(sql.replace("?", "%s").encode(), params).fetchall()
    path = Path(where.removeprefix("sqlite:///")) if isinstance(where, str) else where
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


def none_ahead_of_an_older_one(runs: list[dict[str, Any]]) -> bool:
    """Whether, of these runs in id order, each began before any newer one ended: none was
    computed ahead of an older one. Kernel processes claiming at once may record their starts
    some microseconds apart in either order (docs/scaling-out.md)."""
    latest_starts = itertools.accumulate((run["started_at"] for run in runs), max)
    return all(start < run["finished_at"] for start, run in zip(latest_starts, runs, strict=True))


def json_log_lines(path: Path) -> list[dict[str, Any]]:
    """A server's JSON log lines; a killed server's resource tracker adds plain warnings."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


async def wait_gone(pids: set[int], timeout: float = 10.0) -> None:
    """Until none of these processes runs any more."""
    async with asyncio.timeout(timeout):
        while any(running(pid) for pid in pids):
            await asyncio.sleep(0.05)


def csv_records(text: str) -> list[dict[str, Any]]:
    """The CSV rows as the JSON result writes them: numbers as numbers, an empty cell as null."""
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == CSV_HEADER
    return [
        {
            "date": day,
            **{
                k: None if v == "" else float(v)
                for k, v in zip(CSV_HEADER[1:], values, strict=True)
            },
        }
        for day, *values in rows[1:]
    ]
