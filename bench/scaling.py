"""Scaling: queue throughput with 1, 2 and 4 kernel processes, in one worker process or split
over two, each layout on a fresh database behind one API process (ROLE=api) and its workers
(ROLE=worker). Each rate is a ratio against the bare pool loop's rate times the number of
kernel processes: what perfect scaling of the one-process ceiling would give."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from bench import procs
from bench.harness import CREATE, SMALL_RUN, Context, read_db, say
from bench.report import Row, check_row, ratio_row

# (kernel processes in each worker process)
LAYOUTS = ((1,), (2,), (1, 1), (4,), (2, 2))
WARM_RUNS = 8  # first runs, not measured: every kernel process has imported pandas


async def scaling(ctx: Context) -> list[Row]:
    n = ctx.settings.queue_runs
    wall, _ = await ctx.kernel_ceiling(n)
    one = n / wall
    rows: list[Row] = []
    for layout in LAYOUTS:
        kernels, processes = sum(layout), len(layout)
        rate, done = await layout_rate(ctx, layout, n)
        say(f"scaling: {kernels} kernel(s) in {processes} worker(s): {rate:.0f} runs/s")
        figure = f"scaling: {kernels} kernel process(es) in {processes} worker(s), runs/s"
        note = f"the ceiling: the bare pool loop ({one:.0f} runs/s) x {kernels}; no target"
        rows.append(ratio_row("scaling", figure, rate, one * kernels, "runs/s", note=note))
        if done != n:
            rows.append(check_row("scaling", figure, False, f"{done} done", f"{n}", "all"))
    return rows


async def layout_rate(ctx: Context, layout: tuple[int, ...], n: int) -> tuple[float, int]:
    """Runs/s from the first POST to the last run done, and how many ended done."""
    url = ctx.new_database("scaling_" + "_".join(map(str, layout)))
    api = await ctx.start(procs.start_service("scaling-api", url, ctx.workdir, ROLE="api"))
    workers = [
        await ctx.start(
            procs.start_service(
                f"scaling-worker-{i}", url, ctx.workdir, ROLE="worker", WORKERS=str(kernels)
            )
        )
        for i, kernels in enumerate(layout)
    ]
    try:
        warm = [await ctx.create(api, SMALL_RUN) for _ in range(WARM_RUNS)]
        await ctx.wait_ended(api, max(warm), timeout=60)
        await ctx.wait_idle(api)
        connector = aiohttp.TCPConnector(limit=ctx.settings.queue_in_flight)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def post() -> int:
                async with session.post(api.url(CREATE), json=SMALL_RUN) as resp:
                    if resp.status != 201:
                        raise RuntimeError(f"POST: {resp.status} {(await resp.text())[:200]}")
                    calc_id: int = (await resp.json())["id"]
                    return calc_id

            started = time.perf_counter()
            ids = await asyncio.gather(*(post() for _ in range(n)))
            await ctx.wait_ended(api, max(ids), timeout=ctx.settings.scenario_timeout)
            await ctx.wait_idle(api)
            elapsed = time.perf_counter() - started
        [(done,)] = read_db(
            url,
            "SELECT count(*) FROM calculations WHERE id BETWEEN ? AND ? AND status = 'done'",
            (min(ids), max(ids)),
        )
        return n / elapsed, int(done)
    finally:
        for server in [api, *workers]:
            ctx.stop(server)
