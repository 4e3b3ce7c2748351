"""Who computes what: this process's worker record, its heartbeat, and the rescue of the runs
of workers that are gone.

Each process that computes runs records itself as a worker (host, pid and the pid's start
time) and a heartbeat every LEASE / 3 seconds; each run it claims names it. A run is queued
again (the interrupted attempt counts, and MAX_ATTEMPTS still caps it) when its worker:

- ran on this host and its pid no longer runs it (the process is gone, or the pid now runs
  another program: the start time differs). No lease needs to pass: at start-up a server
  finds its dead predecessor's runs at once, and puts them back in submission order;
- has not recorded a heartbeat for LEASE seconds: a worker on another host, or one alive
  but silent (paused by SIGSTOP, stalled). Its late writes are refused by the attempt fence.

Every live process looks, at start-up and every LEASE / 3 seconds, so no process requeues
the runs of another that is alive, as a blanket "requeue everything running at start-up"
would.

A process judges heartbeats only once it has itself reached the database for LEASE seconds
in a row: after an outage every worker's heartbeat is old, and the first process back must
not take the runs of workers that are alive and about to record theirs. Heartbeats are
stamped and aged by the database's clock (on PostgreSQL), so machines' clocks need not agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from service import db
from service.keys import CONFIG, DB, LEASES, METRICS
from service.metrics import Metrics
from service.models import Worker

log = logging.getLogger(__name__)


def this_host() -> str:
    """The host name and this boot's id: a pid means one process only on one host and boot."""
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return f"{socket.gethostname()}/{boot_id}"


def started_at(pid: int) -> int | None:
    """When the process started, in clock ticks after boot; None if no process has that pid
    (or only a zombie does)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rpartition(")")[2].split()  # after the name, which may hold spaces
    return None if fields[0] == "Z" else int(fields[19])


def is_gone(worker: Worker, host: str, now: float, lease: float | None) -> bool:
    """Gone: its pid on this host no longer runs it, or (with a lease to judge by) it has
    not recorded a heartbeat for `lease` seconds."""
    if worker.host == host and started_at(worker.pid) != worker.pid_started:
        return True
    return lease is not None and now - worker.heartbeat_at > lease


class Leases:
    """This process's worker record and heartbeat, and the looks for gone workers. A process
    that computes nothing (role api) keeps no record, and only looks."""

    def __init__(
        self,
        database: db.Database,
        metrics: Metrics,
        *,
        lease: float,
        max_attempts: int,
        computes: bool = True,
    ) -> None:
        self._computes = computes
        self._db = database
        self._metrics = metrics
        self._lease = lease
        self._max_attempts = max_attempts
        self._host = this_host()
        self.worker_id = 0  # set by `start`
        self._reached_since = time.monotonic()  # since when every look reached the database
        self._silent = False  # whether the last heartbeat missed the database
        self._registering = asyncio.Lock()  # the heartbeat and a claim may both find it gone

    async def start(self) -> None:
        """Rescue what dead processes left, then record this one."""
        await self.rescue()
        if self._computes:
            await self._register()

    async def register_again(self, gone_id: int) -> None:
        """This worker was taken for gone while it was silent (cut off, paused): its runs
        were queued again, its late writes are refused, and its record was forgotten. It
        goes on as a new worker, registered once however many find it gone."""
        async with self._registering:
            if self.worker_id == gone_id:
                log.warning("worker %d was taken for gone; registering anew", gone_id)
                await self._register()

    async def _register(self) -> None:
        pid = os.getpid()
        pid_started = started_at(pid)
        assert pid_started is not None  # this very process runs
        self.worker_id = await self._db.register_worker(self._host, pid, pid_started, time.time())
        log.info("worker %d registered", self.worker_id)

    async def rescue(self) -> None:
        now = time.time()
        workers = await self._db.list_workers()
        judged = time.monotonic() - self._reached_since >= self._lease
        lease = self._lease if judged else None
        gone = [
            worker.id
            for worker in workers
            if worker.id != self.worker_id and is_gone(worker, self._host, now, lease)
        ]
        failed, queued = await self._db.rescue_orphans(gone, self._max_attempts)
        for calc_id in failed:
            log.warning(
                "calculation %d failed: interrupted %d times",
                calc_id,
                self._max_attempts,
                extra={"calc_id": calc_id},
            )
        for calc_id in queued:
            log.warning(
                "calculation %d queued again after an interruption",
                calc_id,
                extra={"calc_id": calc_id},
            )
        if failed or queued:
            self._metrics.runs_rescued.inc(len(failed) + len(queued))

    async def run(self) -> None:
        """Heartbeats and looks, every LEASE / 3 seconds, until cancelled."""
        while True:
            await asyncio.sleep(self._lease / 3)
            try:
                worker_id = self.worker_id
                if self._computes and not await self._db.heartbeat(worker_id, time.time()):
                    await self.register_again(worker_id)
                await self.rescue()
                if self._silent:
                    log.info("worker %d: heartbeats again", self.worker_id)
                self._silent = False
            except db.DatabaseDown as exc:
                self._reached_since = time.monotonic()
                if not self._silent:  # said once, not at every heartbeat it misses
                    log.warning(
                        "worker %d: no heartbeat, the database is down: %s", self.worker_id, exc
                    )
                self._silent = True
            except Exception:  # a failed look is tried again at the next one
                log.exception("worker %d: heartbeat or rescue failed", self.worker_id)

    async def close(self) -> None:
        if self._computes:
            try:
                await self._db.forget_worker(self.worker_id)
            except db.DatabaseDown:  # its runs are found by their pid, or by the lease
                log.warning("worker %d stops without a database to say so", self.worker_id)


async def leases_context(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    leases = Leases(
        app[DB],
        app[METRICS],
        lease=config.lease,
        max_attempts=config.max_attempts,
        computes=config.computes,
    )
    await leases.start()
    app[LEASES] = leases
    task = asyncio.create_task(leases.run(), name="leases")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await leases.close()
