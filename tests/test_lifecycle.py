"""The server process under signals: graceful shutdown with and without enough grace, SIGKILL."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import SMALL_RUN, children, database, json_log_lines, wait_gone, wait_until_up

QUERY = "?fields=attempts,duration"
ON_BOTH_BACKENDS = True  # see conftest


async def post_run(session: aiohttp.ClientSession, base: str) -> str:
    async with session.post(f"{base}/api/v1/calculations", json=SMALL_RUN) as resp:
        assert resp.status == 201
        return base + resp.headers["Location"]


async def wait_for(session: aiohttp.ClientSession, url: str, *statuses: str) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            async with session.get(url + QUERY) as resp:
                body: dict[str, Any] = await resp.json()
            if body["status"] in statuses:
                return body
            await asyncio.sleep(0.02)


def row(db: str, calc_id: int) -> tuple[str, int]:
    ((status, attempts),) = database(
        db, "SELECT status, attempts FROM calculations WHERE id = ?", (calc_id,)
    )
    return status, attempts


async def test_sigterm_lets_a_running_kernel_finish_within_the_grace(
    start_server: Any, tmp_path: Path, database_url: str
) -> None:
    proc, base = start_server({"KERNEL_DELAY": "1.5", "SHUTDOWN_GRACE": "30"})
    await wait_until_up(base)
    async with aiohttp.ClientSession() as session:
        url = await post_run(session, base)
        await wait_for(session, url, "running")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    assert row(database_url, 1) == ("done", 1)


async def test_sigterm_starts_no_other_queued_run(
    start_server: Any, tmp_path: Path, database_url: str
) -> None:
    """The running run ends; the queued ones wait for the next server, untouched (on
    PostgreSQL, the kernel process claims the next run as it stores one)."""
    proc, base = start_server({"KERNEL_DELAY": "1", "SHUTDOWN_GRACE": "30"})
    await wait_until_up(base)
    async with aiohttp.ClientSession() as session:
        urls = [await post_run(session, base) for _ in range(4)]
        await wait_for(session, urls[0], "running")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    rows = [row(database_url, calc_id) for calc_id in range(1, 5)]
    assert rows == [("done", 1), ("queued", 0), ("queued", 0), ("queued", 0)]


async def test_sigint_with_too_short_a_grace_queues_the_run_again(
    start_server: Any, tmp_path: Path, database_url: str
) -> None:
    proc, base = start_server({"KERNEL_DELAY": "60", "SHUTDOWN_GRACE": "0.5"})
    await wait_until_up(base)
    async with aiohttp.ClientSession() as session:
        url = await post_run(session, base)
        await wait_for(session, url, "running")
        proc.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(proc.wait, 30) == 0
        # Cut off by the shutdown, not by a fault of its own: the attempt does not count.
        assert row(database_url, 1) == ("queued", 0)
        _, base = start_server({"KERNEL_DELAY": "0"})
        await wait_until_up(base)
        body = await wait_for(session, base + "/api/v1/calculations/1", "done")
    assert body["attempts"] == 1


async def test_sigkill_mid_run_then_restart_completes_the_run_exactly_once(
    start_server: Any, tmp_path: Path, database_url: str
) -> None:
    proc, base = start_server({"KERNEL_DELAY": "60", "LOG_FORMAT": "json"})
    await wait_until_up(base)
    async with aiohttp.ClientSession() as session:
        url = await post_run(session, base)
        await wait_for(session, url, "running")
        kernels = children(proc.pid)
        assert kernels
        proc.kill()
        await asyncio.to_thread(proc.wait)
        await wait_gone(kernels)  # the kernel process, mid-run, does not outlive the server
        assert row(database_url, 1) == ("running", 1)
        _, base = start_server({"KERNEL_DELAY": "0", "LOG_FORMAT": "json"})
        await wait_until_up(base)
        body = await wait_for(session, base + "/api/v1/calculations/1", "done")
    assert body["attempts"] == 2
    lines = json_log_lines(tmp_path / "server.log")
    events = [(line.get("calc_id"), line["message"]) for line in lines if "calc_id" in line]
    assert events.count((1, "calculation 1 queued")) == 1
    assert events.count((1, "calculation 1 queued again after an interruption")) == 1
    assert sum(message.startswith("calculation 1 done") for _, message in events) == 1
    (created,) = [
        line
        for line in lines
        if line.get("path") == "/api/v1/calculations" and line.get("method") == "POST"
    ]
    assert created["status"] == 201
    assert len(created["request_id"]) == 32
    queued = next(line for line in lines if line["message"] == "calculation 1 queued")
    assert queued["request_id"] == created["request_id"]
