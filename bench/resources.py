"""Scenarios on resources: memory of our long-lived server and its workers, and start-up time."""

from __future__ import annotations

import asyncio
import http.client
import statistics
import time
from collections.abc import Callable
from functools import partial

from bench import procs
from bench.harness import Context, say
from bench.report import Row, ratio_row

MIB = 1024


async def memory(ctx: Context) -> list[Row]:
    """RSS of our server now (after everything before) beside its RSS once warm."""
    main = await ctx.main_server()
    if ctx.warm_rss_kib is None:  # memory alone: the server has just started
        await ctx.warm(main)
    assert ctx.warm_rss_kib is not None
    warm = ctx.warm_rss_kib / MIB
    now = procs.memory_kib(main.pid)
    workers = [
        procs.memory_kib(pid)
        for pid in procs.children(main.pid)
        if "spawn_main" in procs.cmdline(pid)
    ]
    worker_rss = sum(w["VmRSS"] for w in workers) / MIB
    worker_peak = max((w["VmHWM"] for w in workers), default=0) / MIB
    trace = ", ".join(f"{name} {mib:.0f}" for name, mib in ctx.rss_trace.items()) or "-"
    say(f"memory: server {now['VmRSS'] / MIB:.0f} MiB, warm {warm:.0f} MiB")
    return [
        ratio_row(
            "memory",
            "memory: server RSS at the end vs once warm",
            now["VmRSS"] / MIB,
            warm,
            "MiB",
            at_most=1.5,
            percent=False,
            note=f"warm: {ctx.warm_note}; after each scenario: {trace}",
        ),
        ratio_row(
            "memory",
            "memory: server peak RSS (VmHWM) vs once warm",
            now["VmHWM"] / MIB,
            warm,
            "MiB",
            percent=False,
        ),
        Row(
            "memory",
            f"memory: kernel workers RSS now ({len(workers)} processes)",
            worker_rss,
            unit="MiB",
            note=f"peak (largest VmHWM of a worker): {worker_peak:.1f} MiB",
        ),
    ]


def first_answer(spawn: Callable[[], procs.Server], timeout: float = 60.0) -> float:
    """Seconds from spawning a server to its first answer to GET /health (polled every 5 ms)."""
    started = time.perf_counter()
    server = spawn()
    try:
        while time.perf_counter() - started < timeout:
            conn = http.client.HTTPConnection(procs.HOST, server.port, timeout=10)
            try:
                conn.request("GET", "/health")
                conn.getresponse().read()
                return time.perf_counter() - started
            except ConnectionError:
                if server.proc.poll() is not None:
                    raise RuntimeError(f"{server.name} exited: {server.log_tail()}") from None
                time.sleep(0.005)
            finally:
                conn.close()
        raise TimeoutError(f"{server.name} did not answer within {timeout:g} s")
    finally:
        server.stop()


async def start(ctx: Context) -> list[Row]:
    """Start-up to the first answer: ours on a fresh database (migrations included) beside a
    bare aiohttp app with one route; the median of a few starts each, taken in turns."""
    bare: list[float] = []
    ours: list[float] = []
    for i in range(ctx.settings.starts):
        db = (
            ctx.workdir / f"start-{i}" / "calc.db"
            if ctx.pg is None
            else ctx.new_database(f"start_{i}")
        )
        spawn_bare = partial(procs.start_ceiling, "start-bare", "bare", ctx.workdir)
        bare.append(await asyncio.to_thread(first_answer, spawn_bare))
        spawn_ours = partial(procs.start_service, "start-ours", db, ctx.workdir)
        ours.append(await asyncio.to_thread(first_answer, spawn_ours))
    mine, top = statistics.median(ours), statistics.median(bare)
    say(f"start: ours {mine:.2f} s, bare aiohttp {top:.2f} s")
    times = f"ours: {seconds(ours)}; bare: {seconds(bare)}"
    figure = f"start: spawn to first answer (median of {len(ours)})"
    return [ratio_row("start", figure, mine, top, "s", at_most=2.0, percent=False, note=times)]


def seconds(values: list[float]) -> str:
    return ", ".join(f"{value:.3f}" for value in values) + " s"
