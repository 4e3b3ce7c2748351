"""What the scenarios share: the sizes of a full or tiny run, the servers, and our HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bench import procs
from bench.ceilings import kernel_calls
from bench.loadgen import run_wrk
from bench.postgres import Server as PostgresServer
from bench.postgres import throwaway_server
from service.config import is_postgres

CREATE = "/api/v1/calculations"
SMALL_RUN = {"date_start": "2024-01-01", "date_fin": "2024-01-31", "lag": 1}


@dataclass(frozen=True)
class Settings:
    """How much each scenario does: the full benchmark, or `--tiny` (about a second each)."""

    intake_seconds: int = 10
    intake_connections: int = 32
    tail_seconds: int = 2  # intake's wrk waits this long for the answers still in flight
    warm_rss_after: float = 3.0  # seconds into our intake run
    queue_runs: int = 1000
    queue_in_flight: int = 32
    client_threads: int = 4  # the create-rate loops of the client scenario
    client_creates: int = 500  # by each thread, each turn
    latency_samples: int = 50
    large_run: tuple[str, str] = ("1925-01-01", "2024-12-31")  # 36,525 rows
    large_seconds: int = 10
    large_connections: int = 8
    list_rows: int = 100_000
    prune_rows: int = 10_000  # ended runs the retention deletes while intake is measured
    list_seconds: int = 3
    list_connections: int = 8
    # (order, status filter) of each list case; the tiny mode measures one
    list_cases: tuple[tuple[str, str | None], ...] = (
        ("desc", None), ("desc", "done"), ("asc", None), ("asc", "done"),
    )  # fmt: skip
    # kernel processes in each worker process, one layout after another
    scaling_layouts: tuple[tuple[int, ...], ...] = ((1,), (2,), (1, 1), (4,), (2, 2))
    busy_runs: int = 10
    busy_run: tuple[str, str] = ("1800-01-01", "2073-10-15")  # 100,000 rows
    probe_samples: int = 300  # idle; under load, as many as fit until the runs end
    starts: int = 3
    scenario_timeout: float = 180.0


TINY = Settings(
    intake_seconds=1,
    tail_seconds=1,
    warm_rss_after=0.5,
    queue_runs=50,
    client_creates=20,
    latency_samples=3,
    large_run=("2019-01-09", "2024-07-01"),  # 2,001 rows
    large_seconds=1,
    list_rows=2_000,
    prune_rows=1_000,
    list_seconds=1,
    list_cases=(("asc", "done"),),
    scaling_layouts=((1, 1),),
    busy_runs=2,
    busy_run=("2000-01-01", "2054-10-03"),  # 20,000 rows
    probe_samples=30,
    starts=1,
    scenario_timeout=60.0,
)


def say(message: str) -> None:
    """Progress, on stderr: stdout carries only the table."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


class Context:
    """Our long-lived server (intake to memory), the ceilings started, a scratch folder."""

    def __init__(
        self,
        settings: Settings,
        keep: bool = False,
        warm_up: bool = False,
        backend: str = "sqlite",
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.keep = keep
        self.warm_up = warm_up  # record the warm RSS at start, since intake will not
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-"))
        self.servers: list[procs.Server] = []
        self.main: procs.Server | None = None
        self._postgres: contextlib.ExitStack | None = None
        self.pg: PostgresServer | None = None  # the throwaway server, on PostgreSQL
        self.main_db = ""  # our long-lived server's database URL, set on entry
        self.warm_rss_kib: int | None = None
        self.rss_trace: dict[str, float] = {}  # our server's RSS (MiB) after each scenario
        self.warm_note = ""
        self._kernel: tuple[float, list[float]] | None = None
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))

    async def __aenter__(self) -> Context:
        if self.backend == "postgresql":
            self._postgres = contextlib.ExitStack()
            self.pg = await asyncio.to_thread(self._postgres.enter_context, throwaway_server())
        self.main_db = self.new_database("main")
        return self

    def new_database(self, name: str) -> str:
        """The URL of a new, empty database of the backend measured."""
        if self.pg is None:
            return procs.database_url(self.workdir / f"{name}.db")
        with contextlib.closing(psycopg_connect(self.pg.url)) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        return urlsplit(self.pg.url)._replace(path=f"/{name}").geturl()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.session.close()
        for server in self.servers:
            server.stop()
        if self._postgres is not None:
            await asyncio.to_thread(self._postgres.close)
        if self.keep:
            say(f"kept {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def start(self, server: procs.Server, ready_path: str = "/health") -> procs.Server:
        """Register a just-spawned server for the final stop, and wait until it answers."""
        self.servers.append(server)
        await self.wait_ready(server, ready_path)
        return server

    async def wait_ready(self, server: procs.Server, path: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(f"{server.name} exited: {server.log_tail()}")
            try:
                async with self.session.get(server.url(path)) as resp:
                    await resp.read()
                    return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.02)
        raise TimeoutError(f"{server.name} did not answer within {timeout:g} s")

    def stop(self, server: procs.Server) -> None:
        server.stop()
        if server in self.servers:
            self.servers.remove(server)

    async def ceiling(self, kind: str, *args: str, path: str = "/health") -> procs.Server:
        server = procs.start_ceiling(f"ceiling-{kind}", kind, self.workdir, *args)
        return await self.start(server, path)

    async def main_server(self) -> procs.Server:
        """Our server on a fresh database, started once and kept to the end (memory)."""
        if self.main is None:
            server = procs.start_service("main", self.main_db, self.workdir)
            self.main = await self.start(server)
            if self.warm_up:
                await self.warm(self.main)
        elif self.main.proc.poll() is not None:
            raise RuntimeError(f"our server exited: {self.main.log_tail()}")
        return self.main

    async def warm(self, main: procs.Server) -> None:
        """A short load (small runs, list requests), then the warm RSS."""
        for _ in range(3):
            await self.wait_ended(main, await self.create(main, SMALL_RUN), timeout=30)
        await run_wrk(main.url(f"{CREATE}?per_page=10"), connections=8, seconds=1)
        self.record_warm_rss("after a short warm-up load at start (intake did not run)")

    def record_warm_rss(self, note: str) -> None:
        if self.main is not None and self.warm_rss_kib is None:
            self.warm_rss_kib = procs.memory_kib(self.main.pid)["VmRSS"]
            self.warm_note = note

    def trace_rss(self, scenario: str) -> None:
        if self.main is not None and self.main.proc.poll() is None:
            self.rss_trace[scenario] = round(procs.memory_kib(self.main.pid)["VmRSS"] / 1024, 1)

    async def kernel_ceiling(self, count: int) -> tuple[float, list[float]]:
        """Wall time and per-call times of `count` back-to-back pool calls (cached)."""
        if self._kernel is None or len(self._kernel[1]) < count:
            self._kernel = await asyncio.to_thread(kernel_calls, count)
        return self._kernel

    async def get_json(self, url: str, **kwargs: Any) -> Any:
        async with self.session.get(url, **kwargs) as resp:
            if resp.status >= 400:
                raise RuntimeError(f"GET {url}: {resp.status} {(await resp.text())[:300]}")
            return await resp.json()

    async def create(self, server: procs.Server, body: dict[str, Any]) -> int:
        async with self.session.post(server.url(CREATE), json=body) as resp:
            if resp.status != 201:
                raise RuntimeError(f"POST: {resp.status} {(await resp.text())[:300]}")
            calc_id: int = (await resp.json())["id"]
            return calc_id

    async def wait_ended(self, server: procs.Server, calc_id: int, timeout: float) -> str:
        """The run's final status, waited for with `?wait=`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            wait = max(1, min(60, round(deadline - time.monotonic())))
            url = server.url(f"{CREATE}/{calc_id}?wait={wait}")
            async with self.session.get(url, headers={"Accept-Encoding": "identity"}) as resp:
                body = await resp.json()
            if body["status"] not in ("queued", "running"):
                status: str = body["status"]
                return status
        raise TimeoutError(f"run {calc_id} did not end within {timeout:g} s")

    async def wait_idle(self, server: procs.Server, timeout: float = 60.0) -> None:
        """Until the server has nothing queued or running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = await self.get_json(server.url("/health"))
            if health.get("queued") == 0 and health.get("running") == 0:
                return
            await asyncio.sleep(0.02)
        raise TimeoutError(f"{server.name} still busy after {timeout:g} s")


def psycopg_connect(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True)


def run_db(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """One statement on a database (parameters written `?`), beside the server that has it
    open: its rows, or for a write the rows it changed (as one row)."""
    if is_postgres(url):
        with contextlib.closing(psycopg_connect(url)) as conn:
            cursor = conn.execute(sql.replace("?", "%s").encode(), params)
            return list(cursor.fetchall()) if cursor.description else [(cursor.rowcount,)]
    path = url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn, conn:
        cursor = conn.execute(sql, params)
        return list(cursor) if cursor.description else [(cursor.rowcount,)]
