"""Crash safety, proven by killing real processes: nothing lost, nothing run twice, nothing stuck.

The harness replays with CRASH_SEED=<seed> (the seed of every run is printed and is part of
each failure message).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from service.app import create_app
from service.config import Config
from tests.conftest import (
    SMALL_RUN,
    children,
    create,
    database,
    json_log_lines,
    wait_for_terminal,
    wait_gone,
    wait_until_up,
)

CYCLES = int(os.environ.get("CRASH_CYCLES", "20"))  # kills of the server in one harness run
MAX_ATTEMPTS = 3
CLIENTS = 4
POSTS_PER_CLIENT = 8  # per cycle: enough to keep a backlog, few enough to drain in seconds


async def submit_until(
    session: aiohttp.ClientSession, base: str, acknowledged: list[int], stop: asyncio.Event
) -> None:
    """Post runs one after another until told to stop or the server dies under it."""
    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
        for _ in range(POSTS_PER_CLIENT):
            if stop.is_set():
                return
            async with session.post(f"{base}/api/v1/calculations", json=SMALL_RUN) as resp:
                if resp.status == 201:
                    acknowledged.append((await resp.json())["id"])


async def wait_until_drained(session: aiohttp.ClientSession, base: str) -> None:
    async with asyncio.timeout(120):
        while True:
            async with session.get(f"{base}/health") as resp:
                health = await resp.json()
            if health["queued"] == 0 and health["running"] == 0:
                return
            await asyncio.sleep(0.05)


async def test_kill_restart_harness_keeps_every_promise(start_server: Any, tmp_path: Path) -> None:
    seed = int(os.environ.get("CRASH_SEED", random.randrange(2**32)))
    print(f"crash harness: CRASH_SEED={seed}")
    rng, why = random.Random(seed), f"replay with CRASH_SEED={seed}"
    db = tmp_path / "calc.db"
    env = {"KERNEL_DELAY": "0.02", "LOG_FORMAT": "json", "MAX_ATTEMPTS": str(MAX_ATTEMPTS)}
    acknowledged: list[int] = []
    kernels: set[int] = set()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for _ in range(CYCLES):
            proc, base = start_server(env, measured=False)
            await wait_until_up(base)
            stop = asyncio.Event()
            clients = [submit_until(session, base, acknowledged, stop) for _ in range(CLIENTS)]
            tasks = [asyncio.create_task(client) for client in clients]
            # The kill lands at a random moment: mid-insert, mid-claim, mid-kernel, mid-write.
            await asyncio.sleep(rng.uniform(0.0, 0.6))
            kernels |= children(proc.pid)
            proc.kill()
            await asyncio.to_thread(proc.wait)
            stop.set()
            await asyncio.gather(*tasks)
            assert database(db, "PRAGMA integrity_check") == [("ok",)], why
        # The last server is left to drain the backlog: no kill is aimed at its kernels.
        _, base = start_server({**env, "KERNEL_DELAY": "0"})
        await wait_until_up(base)
        await wait_until_drained(session, base)
    await wait_gone(kernels)  # no kernel process outlives the server killed under it

    rows = dict(database(db, "SELECT id, status FROM calculations"))
    assert acknowledged, why
    assert set(acknowledged) <= set(rows), f"runs answered 201 were lost; {why}"
    assert set(rows.values()) <= {"done", "failed"}, why
    attempts = [a for (a,) in database(db, "SELECT attempts FROM calculations")]
    assert max(attempts) <= MAX_ATTEMPTS, why
    without_result = database(
        db, "SELECT id FROM calculations WHERE status = 'done' AND result_deflated IS NULL"
    )
    assert without_result == [], why
    lines = json_log_lines(tmp_path / "server.log")
    done_lines = Counter(
        line["calc_id"]
        for line in lines
        if line["message"].startswith(f"calculation {line.get('calc_id')} done")
    )
    # A run stored just before its server was killed has no line; every other done run has one.
    assert done_lines, f"no 'done' log line was found; {why}"
    assert set(done_lines) <= {i for i, status in rows.items() if status == "done"}, why
    assert all(count == 1 for count in done_lines.values()), f"a result was written twice; {why}"
    assert database(db, "PRAGMA integrity_check") == [("ok",)], why


async def test_a_run_that_kills_the_server_each_time_fails_after_max_attempts(
    start_server: Any, tmp_path: Path
) -> None:
    slow = {"KERNEL_DELAY": "60", "MAX_ATTEMPTS": str(MAX_ATTEMPTS)}
    async with aiohttp.ClientSession() as session:
        for attempt in range(MAX_ATTEMPTS):
            proc, base = start_server(slow)
            await wait_until_up(base)
            if attempt == 0:
                for _ in range(3):  # the poison run first, then two ordinary ones
                    async with session.post(f"{base}/api/v1/calculations", json=SMALL_RUN):
                        pass
            async with asyncio.timeout(30):
                while True:
                    async with session.get(f"{base}/api/v1/calculations/1") as resp:
                        if (await resp.json())["status"] == "running":
                            break
                    await asyncio.sleep(0.02)
            proc.kill()  # what a calculation that crashes the server does to it
            await asyncio.to_thread(proc.wait)
        _, base = start_server({"KERNEL_DELAY": "0", "MAX_ATTEMPTS": str(MAX_ATTEMPTS)})
        await wait_until_up(base)
        await wait_until_drained(session, base)
        async with session.get(f"{base}/api/v1/calculations/1?fields=attempts") as resp:
            poison = await resp.json()
        statuses = [
            (await (await session.get(f"{base}/api/v1/calculations/{i}")).json())["status"]
            for i in (2, 3)
        ]
    assert poison["status"] == "failed"
    assert poison["attempts"] == MAX_ATTEMPTS
    assert poison["error"].startswith(f"the run was interrupted {MAX_ATTEMPTS} times")
    assert statuses == ["done", "done"]


async def test_a_kernel_process_that_dies_fails_only_its_run(
    aiohttp_client: AiohttpClient, config: Config
) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(create_app(config))
    killed = multiprocessing.active_children()
    first = await create(client, date_start="0001-01-01", date_fin="9999-12-31", lag=37)
    async with asyncio.timeout(30):
        while (await (await client.get(f"/api/v1/calculations/{first}")).json())[
            "status"
        ] != "running":
            await asyncio.sleep(0.005)
    for process in killed:
        process.kill()  # as the OOM killer would
    second = await create(client)
    failed = await wait_for_terminal(client, first)
    assert failed["status"] == "failed"
    assert failed["error"] == "the kernel process died while computing this run"
    assert (await wait_for_terminal(client, second))["status"] == "done"
