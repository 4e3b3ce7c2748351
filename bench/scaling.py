"""Scaling: queue throughput with 1, 2 and 4 kernel processes, in one worker process or split
over two, each layout on a fresh database behind one API process (ROLE=api) and its workers
(ROLE=worker). Each rate is a ratio against the bare pool loop's rate times the number of
kernel processes: what perfect scaling of the one-process ceiling would give. `--tiny` runs one
layout, a kernel process in each of two workers (`Settings.scaling_layouts`)."""

from __future__ import annotations

from bench import procs
from bench.harness import SMALL_RUN, Context, run_db, say
from bench.report import Row, check_row, ratio_row
from bench.scenarios import post_until_idle

WARM_RUNS = 8  # first runs, not measured: every kernel process has imported pandas


async def scaling(ctx: Context) -> list[Row]:
    n = ctx.settings.queue_runs
    wall, _ = await ctx.kernel_ceiling(n)
    one = n / wall
    rows: list[Row] = []
    for layout in ctx.settings.scaling_layouts:
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
                f"scaling-worker-{i}",
                url,
                ctx.workdir,
                ROLE="worker",
                WORKERS=str(kernels),
                # On SQLite a worker finds runs another process queued by looking: as often
                # as docs/operations.md advises for such a set-up. PostgreSQL tells it.
                POLL_INTERVAL="0.2",
            )
        )
        for i, kernels in enumerate(layout)
    ]
    try:
        warm = [await ctx.create(api, SMALL_RUN) for _ in range(WARM_RUNS)]
        await ctx.wait_ended(api, max(warm), timeout=60)
        await ctx.wait_idle(api)
        ids, elapsed = await post_until_idle(ctx, api, n)
        [(done,)] = run_db(
            url,
            "SELECT count(*) FROM calculations WHERE id BETWEEN ? AND ? AND status = 'done'",
            (min(ids), max(ids)),
        )
        return n / elapsed, int(done)
    finally:
        for server in [api, *workers]:
            ctx.stop(server)
