"""Leases: a run is queued again only when the process computing it is gone (its pid no longer
runs it) or silent past LEASE, never because another process started."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
import aiosqlite
from pytest_aiohttp import AiohttpClient

from service.config import Config
from service.leases import is_gone, started_at, this_host
from service.models import Worker
from tests.conftest import (
    SMALL_RUN,
    app_client,
    children,
    claim_run,
    database,
    insert_run,
    wait_for_terminal,
    wait_until_up,
)


def test_a_worker_is_gone_when_its_pid_runs_no_more_or_runs_another_program() -> None:
    host, now = this_host(), time.time()
    me = os.getpid()
    mine = started_at(me)
    assert mine is not None
    assert not is_gone(Worker(1, host, me, mine, now), host, now, lease=15)
    # The same pid, started at another time: the pid was reused by another program.
    assert is_gone(Worker(2, host, me, mine - 1, now), host, now, lease=15)
    ended = subprocess.Popen(["true"])
    ended.wait()
    assert started_at(ended.pid) is None
    assert is_gone(Worker(3, host, ended.pid, 1, now), host, now, lease=15)


def test_a_worker_elsewhere_is_gone_only_past_its_lease() -> None:
    now = time.time()
    elsewhere = "another-host/another-boot"
    assert not is_gone(Worker(1, elsewhere, 1, 1, now - 14), this_host(), now, lease=15)
    assert is_gone(Worker(1, elsewhere, 1, 1, now - 16), this_host(), now, lease=15)
    # Alive on this host but silent (paused) past the lease: gone all the same.
    me = os.getpid()
    mine = started_at(me)
    assert mine is not None
    assert is_gone(Worker(1, this_host(), me, mine, now - 16), this_host(), now, lease=15)


async def run_status(session: aiohttp.ClientSession, calc_id: int) -> dict[str, Any]:
    query = "fields=attempts,started_at,finished_at"
    async with session.get(f"/api/v1/calculations/{calc_id}?{query}") as resp:
        body: dict[str, Any] = await resp.json()
        return body


async def wait_status(
    session: aiohttp.ClientSession, calc_id: int, status: str, timeout: float = 30
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while (body := await run_status(session, calc_id))["status"] != status:
            await asyncio.sleep(0.05)
    return body


async def test_a_second_process_leaves_the_first_ones_running_run_alone(
    start_server: Any, tmp_path: Path
) -> None:
    _, first = start_server({"KERNEL_DELAY": "3"}, "first.log")
    await wait_until_up(first)
    async with aiohttp.ClientSession(first) as session:
        async with session.post("/api/v1/calculations", json=SMALL_RUN) as resp:
            calc_id = (await resp.json())["id"]
        await wait_status(session, calc_id, "running")
        _, second = start_server({"KERNEL_DELAY": "3"}, "second.log")
        await wait_until_up(second)
        assert (await run_status(session, calc_id))["status"] == "running"
        done = await wait_status(session, calc_id, "done")
    assert done["attempts"] == 1
    assert "queued again" not in (tmp_path / "second.log").read_text()


async def test_a_paused_worker_loses_its_run_and_its_late_write_is_refused(
    start_server: Any, tmp_path: Path
) -> None:
    """SIGSTOP a server and its kernel process past LEASE: another server queues the run again
    and computes it; once resumed, the paused kernel's result is refused by the fence."""
    common = {"KERNEL_DELAY": "4", "LEASE": "1.5", "POLL_INTERVAL": "0.2"}
    paused, first = start_server(common, "paused.log")
    await wait_until_up(first)
    async with aiohttp.ClientSession(first) as session:
        async with session.post("/api/v1/calculations", json=SMALL_RUN) as resp:
            calc_id = (await resp.json())["id"]
        await wait_status(session, calc_id, "running")
    stopped = {paused.pid, *children(paused.pid)}
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        _, second = start_server(common, "rescuer.log")
        await wait_until_up(second)
        async with aiohttp.ClientSession(second) as session:
            rerun = await wait_status(session, calc_id, "done", timeout=30)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    assert rerun["attempts"] == 2
    query = "SELECT status, attempts, finished_at, result_crc FROM calculations WHERE id = ?"
    outcome = database(tmp_path / "calc.db", query, (calc_id,))
    # The paused kernel wakes with most of its 4 s run left, then tries to store attempt 1.
    await asyncio.sleep(6)
    assert database(tmp_path / "calc.db", query, (calc_id,)) == outcome
    assert outcome[0][:2] == ("done", 2)
    assert "queued again after an interruption" in (tmp_path / "rescuer.log").read_text()
    assert "was taken for gone; registering anew" in (tmp_path / "paused.log").read_text()
    assert paused.poll() is None  # it goes on, as a new worker


async def test_runs_of_gone_workers_are_rescued_at_start_and_counted(
    aiohttp_client: AiohttpClient, config: Config, conn: aiosqlite.Connection
) -> None:
    """Runs left running by a process that is gone (here: claimed by no live worker) are
    queued again before the first claim, in submission order, and counted in /metrics."""
    day = date(2024, 1, 1)
    ids = [
        await insert_run(conn, name=f"r{i}", date_start=day, date_fin=day, lag=1, seed=i)
        for i in range(3)
    ]
    for _ in ids[:2]:
        assert await claim_run(conn) is not None
    client = await app_client(aiohttp_client, config, kernel_delay=0.0)
    query = "?fields=attempts,started_at"
    ended = [await wait_for_terminal(client, calc_id, query=query) for calc_id in ids]
    started = [run["started_at"] for run in ended]
    assert started == sorted(started)
    assert [(run["status"], run["attempts"]) for run in ended] == [
        ("done", 2),
        ("done", 2),
        ("done", 1),
    ]
    metrics = await (await client.get("/metrics")).text()
    assert "calculations_rescued_total 2.0" in metrics
