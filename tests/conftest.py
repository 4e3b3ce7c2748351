"""Fixtures and helpers shared by the tests: real SQLite files, process pools and servers."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from service.app import create_app
from service.config import Config
from service.db import insert_params, utcnow
from service.db import sqlite_runs as db
from service.models import TERMINAL, Calculation

ROOT = Path(__file__).resolve().parents[1]
SMALL_RUN = {"date_start": "2024-01-01", "date_fin": "2024-01-31", "lag": 7}
CSV_HEADER = ["date", "liquid", "oil", "water", "wct"]


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(
        database_url=f"sqlite:///{tmp_path / 'calc.db'}",
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


async def app_client(
    aiohttp_client: AiohttpClient, config: Config, **changes: Any
) -> TestClient[Any, Any]:
    """A client of an app made with these settings changed."""
    return await aiohttp_client(create_app(replace(config, **changes)))


async def insert_runs(conn: aiosqlite.Connection, count: int) -> list[int]:
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


async def insert_run(conn: aiosqlite.Connection, **fields: Any) -> int | None:
    """A queued run written straight into the table, as another producer would: the same
    statement as the API's, one at a time. Its id, or None if nothing was inserted."""
    row = await db.fetch_one(conn, db.INSERT_CALCULATION, insert_params(**fields))
    return None if row is None else int(row[0])


async def claim_run(conn: aiosqlite.Connection, worker_id: int | None = None) -> Calculation | None:
    """The oldest queued run claimed, as another consumer would: the consumer's statement.
    With no worker, as a process that has since gone (or an older version) would."""
    row = await db.fetch_one(conn, db.CLAIM_NEXT, {"now": utcnow(), "worker": worker_id})
    return None if row is None else Calculation.from_row(row)


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


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Any]:
    """Start `python -m service` as a subprocess; every server started is stopped at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(
        env: dict[str, str], log_name: str = "server.log"
    ) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        full_env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'calc.db'}",
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
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
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
    except FileNotFoundError:
        return False
    return state != "Z"


def database(db_path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows read straight from the file, as another program would."""
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        return conn.execute(sql, params).fetchall()


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
