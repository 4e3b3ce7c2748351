"""Roles: a process that serves the API and computes nothing, beside a worker that computes
and serves only /health and /metrics, both on one database."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from service.config import Config
from tests.conftest import SMALL_RUN, children, running, wait_until_up

ON_BOTH_BACKENDS = True  # see conftest


async def start_worker_and_api(
    start_server: Any, kernel_delay: str
) -> tuple[subprocess.Popen[bytes], str, subprocess.Popen[bytes], str]:
    """A worker (polling the queue every 0.2 s) and an api process on one file, both up."""
    worker, worker_url = start_server(
        {"ROLE": "worker", "KERNEL_DELAY": kernel_delay, "POLL_INTERVAL": "0.2"}, "worker.log"
    )
    api, api_url = start_server({"ROLE": "api"}, "api.log")
    # Any answer will do, the worker's 404 for the API included.
    await asyncio.gather(wait_until_up(worker_url), wait_until_up(api_url))
    return worker, worker_url, api, api_url


async def status_of(session: aiohttp.ClientSession, calc_id: int) -> str:
    async with session.get(f"/api/v1/calculations/{calc_id}") as resp:
        status: str = (await resp.json())["status"]
        return status


async def test_an_api_process_and_a_worker_share_the_queue(
    start_server: Any, tmp_path: Path
) -> None:
    _, worker_url, api, api_url = await start_worker_and_api(start_server, "1")

    async with aiohttp.ClientSession(worker_url) as session:
        for path in ("/api/v1/calculations", "/", "/api/docs", "/pingpong/traces"):
            async with session.get(path) as resp:
                assert resp.status == 404, path
        async with session.get("/health") as resp:
            assert (resp.status, (await resp.json())["consumer"]) == (200, "ok")
        async with session.get("/metrics") as resp:
            assert resp.status == 200

    async with aiohttp.ClientSession(api_url) as session:
        async with session.get("/health") as resp:
            health = await resp.json()
            assert resp.status == 200
            assert health["consumer"].startswith("none")
        async with session.post("/api/v1/calculations", json=SMALL_RUN) as resp:
            calc_id = (await resp.json())["id"]
        started = time.monotonic()
        async with session.get(f"/api/v1/calculations/{calc_id}?wait=30&fields=attempts") as resp:
            body = await resp.json()
        # Computed by the worker (a second's kernel), answered by the API process.
        assert (body["status"], body["attempts"]) == ("done", 1)
        assert 0.9 < time.monotonic() - started < 10
    assert children(api.pid) == set()  # no kernel process: it computes nothing
    async with asyncio.timeout(10):  # the kernel stores the row, then the worker logs it
        while "calculation 1 done" not in (tmp_path / "worker.log").read_text():
            await asyncio.sleep(0.05)
    assert "calculation 1 started" not in (tmp_path / "api.log").read_text()


async def test_a_cancel_sent_to_the_api_stops_the_workers_kernel(
    start_server: Any, tmp_path: Path
) -> None:
    worker, _, _, api_url = await start_worker_and_api(start_server, "60")
    async with aiohttp.ClientSession(api_url) as session:
        async with session.post("/api/v1/calculations", json=SMALL_RUN) as resp:
            calc_id = (await resp.json())["id"]
        async with asyncio.timeout(30):
            while await status_of(session, calc_id) != "running":
                await asyncio.sleep(0.05)
        before = children(worker.pid)  # its kernel process, and multiprocessing's tracker
        async with session.post(f"/api/v1/calculations/{calc_id}/cancel") as resp:
            assert resp.status == 200
        cancelled = time.monotonic()
        async with asyncio.timeout(10):  # the kernel is ended (a zombie until reaped)
            while all(running(pid) for pid in before):
                await asyncio.sleep(0.05)
        assert time.monotonic() - cancelled < 5
        assert await status_of(session, calc_id) == "cancelled"
    async with asyncio.timeout(10):  # logged once the worker has seen its kernel end
        while "cancelled while running" not in (tmp_path / "worker.log").read_text():
            await asyncio.sleep(0.05)


def test_an_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="ROLE must be one of all, api, worker"):
        Config(role="both")
