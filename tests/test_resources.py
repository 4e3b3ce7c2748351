"""Running out: a database on a full disk (a real tmpfs, filled for real), and a process out
of file descriptors (a real RLIMIT_NOFILE). Nothing acknowledged is lost, the answers and
/health say what is wrong, the log says it once, and all resumes when space returns."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import kernel
from bench.postgres import throwaway_server
from service.config import Config
from service.db import StorageFull, insert_params, open_database
from service.db.sqlite import ResultStore
from service.descriptors import RECHECK, DescriptorWatch, raise_open_files_limit
from service.events import RunEvents
from tests.conftest import ROOT, database, free_port, recorded_worker, stop_server, wait_until_up

RUNS = "/api/v1/calculations"
ONE_DAY = {"name": "a day", "date_start": date(2024, 1, 1), "date_fin": date(2024, 1, 1), "lag": 1}
LARGE = {"date_start": "1990-01-01", "date_fin": "2019-12-31", "lag": 1}  # ~0.2 MB stored

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs takes root")


@contextlib.contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `where`, unmounted (lazily, if still busy) at the end."""
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", f"tmpfs-{uuid.uuid4().hex[:8]}",
                    str(where)], check=True)  # fmt: skip
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk has no byte left; the file, to remove for space."""
    filler = disk / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    with contextlib.suppress(OSError), filler.open("ab") as out:
        while True:  # the last bytes, a few at a time
            out.write(b"\0" * 512)
            out.flush()
    assert os.statvfs(disk).f_bavail == 0
    return filler


def start(env: dict[str, str], log: Path, **limits: Any) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    full_env = {**os.environ, "PORT": str(port), "KERNEL_DELAY": "0", **env}

    def set_limits() -> None:
        if "nofile" in limits:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits["nofile"])

    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service"],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=out,
            preexec_fn=set_limits,
        )
    return proc, f"http://127.0.0.1:{port}"


async def post(session: aiohttp.ClientSession, base: str, body: dict[str, Any]) -> Any:
    async with session.post(f"{base}{RUNS}", json=body) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def wait_all_done(session: aiohttp.ClientSession, base: str, ids: list[int]) -> None:
    for calc_id in ids:
        async with session.get(f"{base}{RUNS}/{calc_id}?wait=60") as resp:
            assert (await resp.json())["status"] == "done", calc_id


async def test_a_full_disk_answers_507_loses_nothing_and_resumes_by_itself(
    tmp_path: Path,
) -> None:
    log = tmp_path / "server.log"
    with small_disk(tmp_path / "disk", "6m") as disk:
        url = f"sqlite:///{disk / 'runs.db'}"
        proc, base = start({"DATABASE_URL": url, "KERNEL_DELAY": "0.5"}, log)
        try:
            await wait_until_up(base)
            async with aiohttp.ClientSession() as session:
                acknowledged = []
                for _ in range(4):  # computed one after another, half a second each
                    status, _, body = await post(session, base, LARGE)
                    assert status == 201
                    acknowledged.append(body["id"])
                filler = fill(disk)

                # Creates are refused as what they are, and write nothing.
                for _ in range(5):
                    status, headers, body = await post(session, base, LARGE)
                    assert status == 507, body
                    assert body["error"]["code"] == "storage_full"
                    assert int(headers["Retry-After"]) > 0
                async with session.get(f"{base}/health") as resp:
                    assert resp.status == 503
                    health = await resp.json()
                assert health["status"] == "unavailable"
                assert health["database"].startswith("full: ")
                await asyncio.sleep(3)  # results that find no room go back to the queue

                filler.unlink()
                await wait_all_done(session, base, acknowledged)
                status, _, body = await post(session, base, LARGE)
                assert status == 201
                await wait_all_done(session, base, [body["id"]])
                async with session.get(f"{base}/health") as resp:
                    assert resp.status == 200
        finally:
            stop_server(proc)
        rows = database(url, "SELECT id, status, attempts FROM calculations ORDER BY id")
    # Every run acknowledged is done, on its first counted attempt: none was failed for the
    # disk, and no refused create left a row.
    assert rows == [(calc_id, "done", 1) for calc_id in [*acknowledged, body["id"]]]
    text = log.read_text()
    assert "Traceback" not in text
    assert text.count("the disk of the database is full: writes wait") == 1
    assert text.count("the database writes again") == 1


def held_connections(port: int, count: int) -> list[socket.socket]:
    """`count` idle connections, opened without waiting for the server to accept them."""
    held = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect(("127.0.0.1", port))
        held.append(sock)
    return held


async def test_out_of_file_descriptors_the_log_says_so_once_and_service_resumes(
    tmp_path: Path,
) -> None:
    log = tmp_path / "server.log"
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'runs.db'}"}
    proc, base = start(env, log, nofile=(64, 64))  # the hard limit too: nothing to raise
    try:
        await wait_until_up(base)
        async with aiohttp.ClientSession() as session:
            status, _, before = await post(session, base, LARGE)
            assert status == 201
            await wait_all_done(session, base, [before["id"]])
        size = log.stat().st_size
        held = held_connections(int(base.rsplit(":", 1)[1]), 120)
        try:
            await asyncio.sleep(8)  # asyncio tries the accept again every second
            grown = log.stat().st_size - size
        finally:
            for sock in held:
                sock.close()
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(20):
                while True:
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.get(f"{base}/health") as resp:
                            if resp.status == 200:
                                break
                    await asyncio.sleep(0.5)
            status, _, after = await post(session, base, LARGE)
            assert status == 201
            await wait_all_done(session, base, [before["id"], after["id"]])
        async with asyncio.timeout(10):  # looked at every second
            while "file descriptors are free again" not in log.read_text():
                await asyncio.sleep(0.2)
        # asyncio (3.11) retries a refused accept a second later, and a retry still pending
        # when the server closes its socket logs a traceback of its own: not stopped sooner.
        await asyncio.sleep(1.5)
    finally:
        stop_server(proc)
    text = log.read_text()
    print(f"the log grew {grown} bytes in 8 s out of descriptors")
    assert grown < 4096
    assert "Traceback" not in text
    assert 1 <= text.count("out of file descriptors") <= 3  # once per time it ran out


def test_the_soft_open_files_limit_is_raised_to_the_hard_one(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'runs.db'}"}
    proc, base = start(env, log, nofile=(64, 4096))
    try:
        asyncio.run(wait_until_up(base))
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
    finally:
        stop_server(proc)
    [line] = [line for line in limits.splitlines() if line.startswith("Max open files")]
    assert line.split()[3:5] == ["4096", "4096"]
    assert "open files limit raised from 64 to 4096" in log.read_text()


async def test_postgres_on_a_full_disk_loses_nothing_and_resumes(tmp_path: Path) -> None:
    """The server's data directory on a small tmpfs, filled: PostgreSQL refuses to extend a
    table (`53100 disk_full`), or stops when it cannot write its WAL; either way nothing the
    service acknowledged is lost, and it goes on once there is room and a server again."""
    log = tmp_path / "server.log"
    # Not under tmp_path, whose folders only root may enter: the server runs as postgres.
    where = Path(tempfile.mkdtemp(prefix="calc-disk-")) / "disk"
    where.parent.chmod(0o755)
    with small_disk(where, "160m") as disk:
        disk.chmod(0o755)
        with throwaway_server("fsync=off", under=disk) as pg:
            # Two kernel processes: the runs acknowledged drain in half the time.
            env = {"DATABASE_URL": pg.url, "KERNEL_DELAY": "0.5", "WORKERS": "2"}
            proc, base = start(env, log)
            try:
                await wait_until_up(base)
                async with aiohttp.ClientSession() as session:
                    acknowledged = []
                    for _ in range(4):
                        status, _, body = await post(session, base, LARGE)
                        assert status == 201
                        acknowledged.append(body["id"])
                    filler = fill(disk)
                    refused = set()
                    for _ in range(20):  # until the server finds it has no room
                        status, headers, body = await post(session, base, LARGE)
                        if status == 201:
                            acknowledged.append(body["id"])
                            continue
                        assert status in (503, 507), body
                        assert int(headers["Retry-After"]) > 0
                        refused.add(body["error"]["code"])
                    assert refused <= {"storage_full", "database_unavailable"}
                    await asyncio.sleep(3)  # a result found no room, and went back
                    async with session.get(f"{base}/health") as resp:
                        assert resp.status == 503
                        health = await resp.json()
                    assert health["database"].startswith("full: ") or health["database"].startswith(
                        "error"
                    )

                    filler.unlink()
                    with contextlib.suppress(RuntimeError):  # it was still running
                        pg.start()  # as after any stop of the server
                    async with asyncio.timeout(90):
                        while True:
                            with contextlib.suppress(aiohttp.ClientError, AssertionError):
                                await wait_all_done(session, base, acknowledged)
                                break
                            await asyncio.sleep(1)
            finally:
                stop_server(proc)
            rows = database(pg.url, "SELECT id, status FROM calculations ORDER BY id")
            with contextlib.suppress(RuntimeError):
                pg.stop("immediate")
    shutil.rmtree(where.parent, ignore_errors=True)
    print(f"refused as {sorted(refused)}; {len(acknowledged)} runs acknowledged")
    assert [calc_id for calc_id, status in rows if status == "done"] == sorted(acknowledged)
    assert {status for _, status in rows} == {"done"}
    text = log.read_text()
    assert "Traceback" not in text
    assert text.count("the disk of the database is full: writes wait") <= 1


async def test_the_database_on_a_full_disk_refuses_writes_as_storage_full(tmp_path: Path) -> None:
    """In this process: the SQLite backend and a kernel process's store, on a full tmpfs."""
    with small_disk(tmp_path / "disk", "4m") as disk:
        config = Config(database_url=f"sqlite:///{disk / 'runs.db'}")
        async with open_database(config, RunEvents()) as store:
            calc_id = await store.insert(insert_params(**ONE_DAY, seed=1))
            claimed = await store.claim(await recorded_worker(store))
            assert claimed is not None
            output = kernel.run(date(1990, 1, 1), date(2019, 12, 31), 1, 1)
            filler = fill(disk)
            with pytest.raises(StorageFull):
                ResultStore(config.db_path).store(claimed.id, claimed.attempts, output, 0.1)

            async def insert_until_refused() -> None:
                for seed in range(50):  # until the pages the file had are used up
                    await store.insert(insert_params(**ONE_DAY, seed=seed))

            with pytest.raises(StorageFull):
                await insert_until_refused()
            assert store.disk.full is not None
            filler.unlink()
            assert await store.insert(insert_params(**ONE_DAY, seed=99)) is not None
            assert store.disk.full is None
            assert (
                ResultStore(config.db_path).store(claimed.id, claimed.attempts, output, 0.1).written
            )
            assert calc_id == claimed.id


def test_the_open_files_limit_is_raised_in_this_process_too() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 256), hard))
        assert raise_open_files_limit() == (min(soft, 256), hard)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        assert raise_open_files_limit() == (hard, hard)  # nothing left to raise
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_running_out_of_descriptors_is_said_once_until_they_are_free(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    loop = asyncio.get_running_loop()
    watch = DescriptorWatch(loop)
    out = OSError(errno.EMFILE, "Too many open files")
    for _ in range(5):  # asyncio's accept, tried again every second
        watch.handle(loop, {"message": "socket.accept() out of system resource", "exception": out})
    watch.handle(loop, {"message": "something else", "exception": ValueError("other")})
    await asyncio.sleep(RECHECK + 0.5)
    said = [record.getMessage() for record in caplog.records]
    assert sum("out of file descriptors" in line for line in said) == 1
    assert sum("file descriptors are free again" in line for line in said) == 1
    assert any("something else" in line for line in said)  # asyncio's own handler
