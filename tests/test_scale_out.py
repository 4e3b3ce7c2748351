"""Scale-out on PostgreSQL: API and worker processes, each a real `python -m service`, sharing
one real PostgreSQL server. Runs posted through any API process are computed once by some
worker; a worker killed or paused loses nothing; a cancel and a ?wait reach across processes;
a restart of the database loses no run that was answered 201."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.postgres import throwaway_server
from tests.conftest import (
    SMALL_RUN,
    TEST_SERVER_SETTINGS,
    children,
    database,
    running,
    wait_until_up,
)

Process = subprocess.Popen[bytes]
LEASE = 2.0


@pytest.fixture
def backend() -> str:
    return "postgresql"


async def start_processes(
    start_server: Any, apis: int, workers: int, **env: str
) -> tuple[list[str], list[tuple[Process, str]]]:
    """API processes' URLs, and worker processes with their URLs, all up."""
    settings = {"LEASE": str(LEASE), "POLL_INTERVAL": "5", "SHUTDOWN_GRACE": "1", **env}
    api_urls = [
        start_server({**settings, "ROLE": "api"}, f"api{i + 1}.log")[1] for i in range(apis)
    ]
    started = [
        start_server({**settings, "ROLE": "worker"}, f"worker{i + 1}.log") for i in range(workers)
    ]
    await asyncio.gather(*(wait_until_up(url) for url in [*api_urls, *(u for _, u in started)]))
    return api_urls, started


async def post(session: aiohttp.ClientSession, url: str, **fields: Any) -> int:
    async with session.post(f"{url}/api/v1/calculations", json={**SMALL_RUN, **fields}) as resp:
        assert resp.status == 201, await resp.text()
        calc_id: int = (await resp.json())["id"]
        return calc_id


def worker_id(database_url: str, pid: int) -> int:
    [(found,)] = database(database_url, "SELECT id FROM workers WHERE pid = ?", (pid,))
    return int(found)


async def until(condition: Any, timeout: float, step: float = 0.05) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(step)


def runs(database_url: str) -> dict[int, tuple[str, int, int | None]]:
    rows = database(database_url, "SELECT id, status, attempts, worker_id FROM calculations")
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


async def test_two_apis_and_three_workers_compute_300_runs_each_exactly_once(
    start_server: Any, database_url: str, tmp_path: Path
) -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    chooser = random.Random(seed)
    apis, _ = await start_processes(start_server, 2, 3, KERNEL_DELAY="0")
    async with aiohttp.ClientSession() as session:
        posted = await asyncio.gather(
            *(post(session, chooser.choice(apis), seed=i) for i in range(300))
        )
    assert len(set(posted)) == 300

    await until(lambda: Counter(s for s, _, _ in runs(database_url).values()) == {"done": 300}, 120)
    rows = runs(database_url)
    assert {attempts for _, attempts, _ in rows.values()} == {1}
    # Each run was started by exactly one worker, and every worker took a share.
    starts = Counter[int]()
    for i in range(3):
        for line in (tmp_path / f"worker{i + 1}.log").read_text().splitlines():
            if " started (attempt" in line:
                starts[int(line.split("calculation ")[1].split()[0])] += 1
    assert starts == Counter(dict.fromkeys(posted, 1))
    assert len({worker for _, _, worker in rows.values()}) == 3


async def test_a_worker_killed_mid_run_has_its_runs_rerun_by_another(
    start_server: Any, database_url: str
) -> None:
    apis, workers = await start_processes(start_server, 1, 2, KERNEL_DELAY="3", WORKERS="2")
    async with aiohttp.ClientSession() as session:
        ids = [await post(session, apis[0], seed=i) for i in range(4)]
    (victim, _), _ = workers
    victim_id = worker_id(database_url, victim.pid)

    def victims_runs() -> list[int]:
        return [
            i for i, (s, _, w) in runs(database_url).items() if s == "running" and w == victim_id
        ]

    await until(lambda: len(victims_runs()) == 2, 30)
    taken = victims_runs()
    victim.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    await until(lambda: all(runs(database_url)[i][0] == "done" for i in ids), LEASE + 30)
    rows = runs(database_url)
    for calc_id in taken:  # rerun: the interrupted attempt counts
        assert rows[calc_id][1] == 2
        assert rows[calc_id][2] != victim_id
    # Two 3 s runs on the other worker: the rescue itself took well under LEASE + a few s.
    assert time.monotonic() - killed < LEASE + 20


async def test_a_worker_paused_past_its_lease_cannot_overwrite_the_rerun(
    start_server: Any, database_url: str, tmp_path: Path
) -> None:
    apis, workers = await start_processes(start_server, 1, 1, KERNEL_DELAY="2")
    ((paused, _),) = workers
    async with aiohttp.ClientSession() as session:
        calc_id = await post(session, apis[0])
    await until(lambda: runs(database_url)[calc_id][0] == "running", 30)
    paused_id = worker_id(database_url, paused.pid)
    family = [paused.pid, *children(paused.pid)]
    for pid in family:  # the server and its kernel process: the kernel stores results itself
        os.kill(pid, signal.SIGSTOP)
    try:
        start_server({"ROLE": "worker", "LEASE": str(LEASE), "KERNEL_DELAY": "0"}, "rescuer.log")
        await until(lambda: runs(database_url)[calc_id][:2] == ("done", 2), LEASE + 30)
    finally:
        for pid in family:
            os.kill(pid, signal.SIGCONT)
    rerun = runs(database_url)[calc_id]
    assert rerun[2] != paused_id
    # The paused kernel wakes, finishes its 2 s and tries to store: refused by the fence.
    await until(lambda: "was taken for gone" in (tmp_path / "worker1.log").read_text(), 30)
    await asyncio.sleep(3)
    assert runs(database_url)[calc_id] == rerun
    [(finished,)] = database(
        database_url, "SELECT duration FROM calculations WHERE id = ?", (calc_id,)
    )
    assert finished < 1.5  # the rerun's (no delay), not the paused attempt's 2 s


UNRECORDED = (
    "SELECT id, worker_id FROM calculations"
    " WHERE status = 'running' AND worker_id NOT IN (SELECT id FROM workers)"
)


async def test_a_worker_taken_for_gone_registers_again_before_it_claims(
    start_server: Any, database_url: str, tmp_path: Path
) -> None:
    """Paused past LEASE, a worker's record is forgotten by another; runs queued meanwhile
    wait for it. Woken, it must not claim under the forgotten id (no rescue would ever look
    for such a run): it registers anew, and a run it then takes is rescued when it dies."""
    apis, workers = await start_processes(start_server, 1, 1, KERNEL_DELAY="0.5")
    ((paused, _),) = workers
    paused_id = worker_id(database_url, paused.pid)
    family = [paused.pid, *children(paused.pid)]
    for pid in family:
        os.kill(pid, signal.SIGSTOP)
    try:
        start_server({"ROLE": "api", "LEASE": str(LEASE)}, "forgetter.log")
        recorded = "SELECT count(*) FROM workers WHERE id = ?"
        await until(lambda: database(database_url, recorded, (paused_id,)) == [(0,)], LEASE + 30)
        async with aiohttp.ClientSession() as session:
            ids = [await post(session, apis[0], seed=i) for i in range(6)]
    finally:
        for pid in family:
            os.kill(pid, signal.SIGCONT)
    unrecorded: list[tuple[Any, ...]] = []
    async with asyncio.timeout(60):
        while not all(r[0] == "done" for i, r in runs(database_url).items() if i in ids):
            unrecorded += database(database_url, UNRECORDED)
            await asyncio.sleep(0.005)
    assert unrecorded == []
    assert "was taken for gone; registering anew" in (tmp_path / "worker1.log").read_text()
    renewed = worker_id(database_url, paused.pid)
    assert renewed != paused_id
    assert {runs(database_url)[i][2] for i in ids} == {renewed}
    # Killed mid-run with its kernel, its run is found by the next look (the API process's).
    async with aiohttp.ClientSession() as session:
        last = await post(session, apis[0], seed=99)
    await until(lambda: runs(database_url)[last][0] == "running", 10, step=0.01)
    for pid in [paused.pid, *children(paused.pid)]:
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    await until(lambda: runs(database_url)[last][0] == "queued", LEASE + 10)
    assert time.monotonic() - killed < LEASE + 1


@pytest.mark.parametrize("stop", ["cancel", "delete"])
async def test_a_cancel_or_delete_through_one_api_stops_the_run_another_worker_computes(
    start_server: Any, database_url: str, tmp_path: Path, stop: str
) -> None:
    apis, workers = await start_processes(start_server, 2, 3, KERNEL_DELAY="60")
    async with aiohttp.ClientSession() as session:
        ids = [await post(session, apis[1], seed=i) for i in range(3)]
        await until(lambda: all(r[0] == "running" for r in runs(database_url).values()), 30)
        third, _ = workers[2]
        third_id = worker_id(database_url, third.pid)
        [target] = [i for i, (_, _, w) in runs(database_url).items() if w == third_id]
        before = children(third.pid)  # its kernel process, and multiprocessing's tracker
        url = f"{apis[0]}/api/v1/calculations/{target}"
        request = session.post(f"{url}/cancel") if stop == "cancel" else session.delete(url)
        async with request as resp:
            assert resp.status == (200 if stop == "cancel" else 204)
        sent = time.monotonic()
        await until(lambda: not all(running(pid) for pid in before), 10, step=0.01)
        stopped_after = time.monotonic() - sent
        # The worker's next run starts at once, in the slot the stopped kernel left.
        fourth = await post(session, apis[1], seed=4)
        await until(lambda: runs(database_url)[fourth][0] == "running", 10)
    print(f"kernel stopped {stopped_after:.3f} s after the {stop}")
    assert stopped_after < 1.0  # the promise: within a second, on whichever worker
    rows = runs(database_url)
    if stop == "cancel":
        assert rows[target][0] == "cancelled"
    else:
        assert target not in rows
    assert [rows[i][0] for i in ids if i != target] == ["running", "running"]
    assert rows[fourth][2] == third_id
    log = (tmp_path / "worker3.log").read_text()
    assert f"calculation {target} cancelled while running" in log


async def test_a_wait_on_one_api_answers_when_a_worker_finishes(
    start_server: Any, database_url: str
) -> None:
    apis, _ = await start_processes(start_server, 2, 1, KERNEL_DELAY="1.5")
    async with aiohttp.ClientSession() as session:
        calc_id = await post(session, apis[0])
        query = f"{apis[1]}/api/v1/calculations/{calc_id}?wait=30&fields=attempts"
        async with session.get(query) as resp:
            answered = time.time()
            body = await resp.json()
    assert (body["status"], body["attempts"]) == ("done", 1)
    [(finished_at,)] = database(
        database_url, "SELECT finished_at FROM calculations WHERE id = ?", (calc_id,)
    )
    lag = answered - datetime.fromisoformat(finished_at).timestamp()
    print(f"?wait answered {lag * 1000:.0f} ms after the run ended")
    assert lag < 1.0  # generous: notices make it milliseconds; the fallback look is 0.5 s


async def test_a_database_restart_under_load_answers_503_and_loses_nothing(
    start_server: Any, tmp_path: Path
) -> None:
    with throwaway_server(*TEST_SERVER_SETTINGS) as pg:
        url = pg.url
        apis, _ = await start_processes(
            start_server, 1, 1, DATABASE_URL=url, KERNEL_DELAY="1", WORKERS="2"
        )
        created: list[int] = []
        refused: Counter[int] = Counter()
        slowest = 0.0
        stop = asyncio.Event()

        async def load(session: aiohttp.ClientSession) -> None:
            nonlocal slowest
            while not stop.is_set():
                started = time.monotonic()
                async with session.post(f"{apis[0]}/api/v1/calculations", json=SMALL_RUN) as resp:
                    body = await resp.json()
                    slowest = max(slowest, time.monotonic() - started)
                    if resp.status == 201:
                        created.append(body["id"])
                    else:
                        refused[resp.status] += 1
                        assert body["error"]["code"] == "database_unavailable"
                        assert resp.headers["Retry-After"] == "2"
                await asyncio.sleep(0.1)

        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            loaders = [asyncio.create_task(load(session)) for _ in range(4)]
            # Enough for a backlog behind the two runs computing; each takes a second to drain.
            await until(lambda: len(created) >= 10, 30)
            running_before = [i for i, r in runs(url).items() if r[0] == "running"]
            assert running_before
            await asyncio.to_thread(pg.stop, "fast")
            down_since = len(created)
            await asyncio.sleep(3)
            assert len(created) == down_since  # nothing is answered 201 while it is down
            await asyncio.to_thread(pg.start)
            await until(lambda: len(created) >= down_since + 10, 60)
            stop.set()
            await asyncio.gather(*loaders)
            print(f"created {len(created)}, refused {dict(refused)}, slowest {slowest:.2f} s")
            assert set(refused) == {503}
            assert slowest < 10  # bounded by the database's timeouts, never hanging
            await until(lambda: all(runs(url)[i][0] == "done" for i in created), 120, step=0.2)
        rows = runs(url)
        assert set(created) <= set(rows)  # every run answered 201 is there
        # Runs computing while the database was away were stored once it came back.
        assert all(rows[i][:2] == ("done", 1) for i in running_before)


async def test_a_stop_without_its_database_ends_within_its_grace_and_the_run_is_rescued(
    start_server: Any, tmp_path: Path
) -> None:
    with throwaway_server(*TEST_SERVER_SETTINGS) as pg:
        apis, [(worker, _)] = await start_processes(
            start_server, 1, 1, DATABASE_URL=pg.url, KERNEL_DELAY="60", SHUTDOWN_GRACE="0.5"
        )
        async with aiohttp.ClientSession() as session:
            calc_id = await post(session, apis[0])
        await until(lambda: runs(pg.url)[calc_id][0] == "running", 30)
        await asyncio.to_thread(pg.stop, "fast")
        sent = time.monotonic()
        worker.terminate()
        await asyncio.to_thread(worker.wait, 30)
        took = time.monotonic() - sent
        log = (tmp_path / "worker1.log").read_text()
        await asyncio.to_thread(pg.start)
        await start_processes(start_server, 0, 1, DATABASE_URL=pg.url, KERNEL_DELAY="0")
        await until(lambda: runs(pg.url)[calc_id][0] == "done", 30)
    print(f"the worker stopped {took:.2f} s after SIGTERM")
    # The grace for the kernel, as long again for the database; it took 6 s when the wait for
    # the database was always 5 s.
    assert took < 3
    assert "the database is down: the run is left to be rescued" in log
