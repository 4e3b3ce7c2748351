"""A worker on a machine of its own, cut off from PostgreSQL by the network: a network
namespace with its own host name (`unshare --uts`) and address, joined to the database's
host by a veth pair on a bridge of its own, in a private /24 that nothing routes. The cut is
the veth taken down. Everything made here is named by this test's id and removed at the end;
the traffic stays on the bridge."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.postgres import Server
from tests.conftest import ROOT, SMALL_RUN, TEST_SERVER_SETTINGS, database, free_port, wait_until_up

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="network namespaces need root and ip"
)

LEASE = 2.0
SUBNET = "10.213.77"  # the project's own test hosts: this bridge and its namespaces only
UNRECORDED = (
    "SELECT id, worker_id FROM calculations"
    " WHERE status = 'running' AND worker_id NOT IN (SELECT id FROM workers)"
)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class Network:
    """A bridge on this host (the database's machine, .1) and one namespace (.2)."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.bridge, self.namespace = f"calcbr{tag}", f"calcw{tag}"
        self.outer, self.inner = f"calco{tag}", f"calci{tag}"
        self.host, self.machine = f"{SUBNET}.1", f"{SUBNET}.2"

    def create(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.host}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        ip("netns", "add", self.namespace)
        ip("link", "add", self.outer, "type", "veth", "peer", "name", self.inner)
        ip("link", "set", self.inner, "netns", self.namespace)
        ip("link", "set", self.outer, "master", self.bridge)
        ip("link", "set", self.outer, "up")
        inside = ("netns", "exec", self.namespace, "ip")
        ip(*inside, "addr", "add", f"{self.machine}/24", "dev", self.inner)
        ip(*inside, "link", "set", self.inner, "up")
        ip(*inside, "link", "set", "lo", "up")

    def cut(self) -> None:
        ip("link", "set", self.outer, "down")

    def heal(self) -> None:
        ip("link", "set", self.outer, "up")

    def remove(self) -> None:
        for args in (
            ("netns", "delete", self.namespace),
            ("link", "delete", self.outer),
            ("link", "delete", self.bridge),
        ):
            with contextlib.suppress(subprocess.CalledProcessError):
                ip(*args)


@pytest.fixture
def network() -> Iterator[Network]:
    net = Network()
    try:
        net.create()
        yield net
    finally:
        net.remove()
    leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert net.namespace not in leftover


@pytest.fixture
def reachable_pg(network: Network) -> Iterator[str]:
    """A throwaway PostgreSQL listening on loopback and on the bridge, trusting both."""
    server = Server(*TEST_SERVER_SETTINGS, f"listen_addresses=127.0.0.1,{network.host}")
    try:
        server.create()
        with (server.folder / "data" / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {SUBNET}.0/24 trust\n")
        server.start()
        try:
            yield server.url
        finally:
            server.stop()
    finally:
        shutil.rmtree(server.folder, ignore_errors=True)


def start_on_machine(network: Network, url: str, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """`python -m service` in the namespace, under a host name of its own."""
    port = free_port()
    inside_url = url.replace("127.0.0.1", network.host)
    settings = {
        **os.environ,
        "DATABASE_URL": inside_url,
        "PORT": str(port),
        "HOST": network.machine,
    }
    settings.update(env)
    script = f"hostname worker-{network.namespace} && exec {sys.executable} -m service"
    argv = ["ip", "netns", "exec", network.namespace, "unshare", "--uts", "sh", "-c", script]
    with log.open("ab") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=settings, stdout=out, stderr=out)


def runs(url: str) -> dict[int, tuple[str, int | None]]:
    rows = database(url, "SELECT id, status, worker_id FROM calculations")
    return {row[0]: (row[1], row[2]) for row in rows}


def workers(url: str) -> dict[int, str]:
    return dict(database(url, "SELECT id, host FROM workers"))  # type: ignore[arg-type]


async def until(condition: Any, timeout: float, step: float = 0.05) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(step)


async def test_a_worker_cut_off_past_its_lease_registers_again_before_it_claims(
    network: Network, reachable_pg: str, start_server: Any, tmp_path: Path
) -> None:
    url = reachable_pg
    settings = {"LEASE": str(LEASE), "POLL_INTERVAL": "1", "SHUTDOWN_GRACE": "0.5"}
    _, api = start_server({"DATABASE_URL": url, "ROLE": "api", **settings}, "api.log")
    await wait_until_up(api)
    worker = start_on_machine(
        network, url, tmp_path / "worker.log", ROLE="worker", KERNEL_DELAY="0.5", **settings
    )
    try:
        await until(lambda: any("worker-" in host for host in workers(url).values()), 30)
        [(first_id, host)] = [(i, h) for i, h in workers(url).items() if "worker-" in h]
        assert host.startswith(f"worker-{network.namespace}/")  # its own machine, to the rest
        network.cut()
        try:
            # The API process, on the database's side, takes it for gone after LEASE.
            await until(lambda: first_id not in workers(url), LEASE + 30)
            async with aiohttp.ClientSession() as session:
                ids = [await post(session, api, i) for i in range(6)]
            await asyncio.sleep(1)
            assert all(runs(url)[i][0] == "queued" for i in ids)  # no one to compute them
        finally:
            network.heal()
        unrecorded: list[tuple[Any, ...]] = []
        async with asyncio.timeout(60):
            while not all(runs(url)[i][0] == "done" for i in ids):
                unrecorded += database(url, UNRECORDED)
                await asyncio.sleep(0.005)
        assert unrecorded == []
        assert "was taken for gone; registering anew" in (tmp_path / "worker.log").read_text()
        [renewed] = [i for i, h in workers(url).items() if "worker-" in h]
        assert renewed != first_id
        assert {runs(url)[i][1] for i in ids} == {renewed}
        # That machine dies mid-run: its run is queued again once its lease has passed.
        async with aiohttp.ClientSession() as session:
            last = await post(session, api, 99)
        await until(lambda: runs(url)[last][0] == "running", 10, step=0.01)
        for pid in namespace_pids(network):
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        await until(lambda: runs(url)[last][0] == "queued", LEASE + 15)
        waited = time.monotonic() - killed
        assert LEASE / 2 < waited < LEASE + 5  # by its lease: a pid of another host says nothing
    finally:
        for pid in namespace_pids(network):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        worker.wait(10)


def namespace_pids(network: Network) -> list[int]:
    found = subprocess.run(
        ["ip", "netns", "pids", network.namespace], capture_output=True, text=True, check=False
    )
    return [int(pid) for pid in found.stdout.split()]


async def post(session: aiohttp.ClientSession, api: str, seed: int) -> int:
    async with session.post(f"{api}/api/v1/calculations", json={**SMALL_RUN, "seed": seed}) as r:
        assert r.status == 201, await r.text()
        calc_id: int = (await r.json())["id"]
        return calc_id
