"""Scenarios on our long-lived server: intake, queue throughput, latency and a large result."""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import aiohttp

from bench import ceilings, procs
from bench.harness import CREATE, SMALL_RUN, Context, run_db, say
from bench.loadgen import WrkResult, checked, percentile, run_wrk
from bench.report import Row, check_row, ratio_row
from service.config import sqlite_path
from service.db import utcnow

INTAKE_BODY = json.dumps(SMALL_RUN)


async def intake_load(ctx: Context, server: procs.Server) -> WrkResult:
    s = ctx.settings
    return await run_wrk(
        server.url(CREATE),
        connections=s.intake_connections,
        seconds=s.intake_seconds,
        method="POST",
        body=INTAKE_BODY,
        statuses=True,
        tail=s.tail_seconds,
    )


async def intake(ctx: Context) -> list[Row]:
    """POSTs with wrk, the consumer running; then every 201 must be a row, and nothing else."""
    main = await ctx.main_server()
    if ctx.pg is None:
        ceiling = await ctx.ceiling("intake", "--db", str(ctx.workdir / "ceiling-intake.db"))
    else:  # one INSERT ... RETURNING through the same driver and server
        ceiling = await ctx.ceiling("pg-asyncpg", "--url", ctx.new_database("ceiling_intake"))
    try:
        top = await intake_load(ctx, ceiling)
    finally:
        ctx.stop(ceiling)
    before = run_db(ctx.main_db, "SELECT coalesce(max(id), 0) FROM calculations")[0][0]
    load = asyncio.create_task(intake_load(ctx, main))
    await asyncio.sleep(ctx.settings.warm_rss_after)
    ctx.record_warm_rss(f"{ctx.settings.warm_rss_after:g} s into our intake run")
    ours = await load
    rows = run_db(ctx.main_db, "SELECT count(*) FROM calculations WHERE id > ?", (before,))[0][0]
    say(f"intake: ours {ours.rps:.0f} req/s, ceiling {top.rps:.0f} req/s, {rows} rows")
    cancelled = await cancel_backlog(ctx, main)
    created, other = ours.count(201, 202), sum(ours.statuses.values()) - ours.count(200, 300)
    rate = ratio_row("intake", "intake: POST requests/s", ours.rps, top.rps, "req/s", at_least=0.5)
    return [
        checked(rate, ours, top),
        check_row(
            "intake",
            "intake: rows written == 201s answered",
            rows == created,
            f"{rows:,} rows",
            f"{created:,} x 201",
            "equal",
            note=f"then {cancelled:,} runs still queued were cancelled in the database, so that"
            " the next scenarios start on an idle server",
        ),
        check_row(
            "intake",
            "intake: answers not 2xx, socket errors",
            other == 0 and ours.socket_errors() == 0,
            f"{other} + {ours.socket_errors()}",
            "0 + 0",
            "none",
            note=", ".join(f"{n} x {status}" for status, n in sorted(ours.statuses.items())),
        ),
    ]


async def cancel_backlog(ctx: Context, server: procs.Server) -> int:
    """Cancel what intake left queued, as another program may (the table is the queue)."""

    sql = "UPDATE calculations SET status = 'cancelled', finished_at = ? WHERE status = 'queued'"
    [(count,)] = await asyncio.to_thread(run_db, ctx.main_db, sql, (utcnow(),))
    await ctx.wait_idle(server)
    return count


async def queue(ctx: Context) -> list[Row]:
    """Many small runs submitted at once: runs/s from the first POST to the last done."""
    main = await ctx.main_server()
    await ctx.wait_idle(main)
    n = ctx.settings.queue_runs
    wall, _ = await ctx.kernel_ceiling(n)
    ids, elapsed = await post_until_idle(ctx, main, n)
    done = run_db(
        ctx.main_db,
        "SELECT count(*) FROM calculations WHERE id BETWEEN ? AND ? AND status = 'done'",
        (min(ids), max(ids)),
    )[0][0]
    say(f"queue: ours {n / elapsed:.0f} runs/s, ceiling {n / wall:.0f} runs/s")
    return [
        ratio_row(
            "queue",
            f"queue: {n:,} small runs, runs/s",
            n / elapsed,
            n / wall,
            "runs/s",
            at_least=0.5,
        ),
        check_row("queue", "queue: every run done", done == n, f"{done:,} done", f"{n:,}", "all"),
    ]


async def post_until_idle(ctx: Context, server: procs.Server, n: int) -> tuple[list[int], float]:
    """`n` small runs posted at once (queue_in_flight at a time): their ids, and the seconds
    from the first POST until the last has ended and nothing is queued or running."""
    connector = aiohttp.TCPConnector(limit=ctx.settings.queue_in_flight)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post() -> int:
            async with session.post(server.url(CREATE), json=SMALL_RUN) as resp:
                if resp.status != 201:
                    raise RuntimeError(f"POST: {resp.status} {(await resp.text())[:200]}")
                calc_id: int = (await resp.json())["id"]
                return calc_id

        started = time.perf_counter()
        ids = await asyncio.gather(*(post() for _ in range(n)))
        await ctx.wait_ended(server, max(ids), timeout=ctx.settings.scenario_timeout)
        await ctx.wait_idle(server)
        return ids, time.perf_counter() - started


async def latency(ctx: Context) -> list[Row]:
    """One small run at a time on an idle server: POST, then GET ?wait= until it ended."""
    main = await ctx.main_server()
    await ctx.wait_idle(main)
    _, calls = await ctx.kernel_ceiling(20)
    ceiling = statistics.median(calls) * 1000
    for _ in range(2):  # warm-up, not measured
        await ctx.wait_ended(main, await ctx.create(main, SMALL_RUN), timeout=30)
    samples = []
    for _ in range(ctx.settings.latency_samples):
        started = time.perf_counter()
        status = await ctx.wait_ended(main, await ctx.create(main, SMALL_RUN), timeout=30)
        samples.append((time.perf_counter() - started) * 1000)
        if status != "done":
            raise RuntimeError(f"a small run ended {status}")
    median, p95 = statistics.median(samples), percentile(samples, 95)
    say(f"latency: median {median:.1f} ms, p95 {p95:.1f} ms, kernel call {ceiling:.1f} ms")
    return [
        ratio_row(
            "latency",
            "latency: create → done, median",
            median,
            ceiling,
            "ms",
            at_most=3.0,
            percent=False,
        ),
        ratio_row(
            "latency",
            "latency: create → done, p95",
            p95,
            ceiling,
            "ms",
            percent=False,
            note="beside the same ceiling (median of one pool call); no target",
        ),
    ]


async def body_size(ctx: Context, url: str, encoding: str) -> tuple[int, str]:
    """Bytes on the wire of one GET, and its Content-Encoding."""
    headers = {"Accept-Encoding": encoding}
    async with ctx.session.get(url, headers=headers, auto_decompress=False) as resp:
        return len(await resp.read()), resp.headers.get("Content-Encoding", "identity")


async def fetch_load(ctx: Context, url: str, *headers: str) -> WrkResult:
    s = ctx.settings
    return await run_wrk(
        url, connections=s.large_connections, seconds=s.large_seconds, headers=headers
    )


async def large(ctx: Context) -> list[Row]:
    """GET of one done large result, plain and gzip, beside a handler that sends the stored text."""
    s = ctx.settings
    main = await ctx.main_server()
    date_start, date_fin = s.large_run
    calc_id = await ctx.create(main, {"date_start": date_start, "date_fin": date_fin, "lag": 1})
    if await ctx.wait_ended(main, calc_id, timeout=60) != "done":
        raise RuntimeError("the large run did not end done")
    path = f"{CREATE}/{calc_id}"
    stored_in = sqlite_path(ctx.main_db) if ctx.pg is None else ctx.main_db
    stored, plain_json = await asyncio.to_thread(ceilings.keep_plain_copy, stored_in, calc_id)
    csv_bytes, _ = await body_size(ctx, main.url(f"{path}/result.csv"), "identity")
    if ctx.pg is None:
        ceiling = await ctx.ceiling("result", "--db", str(sqlite_path(ctx.main_db)), path=path)
    else:  # the stored result through the same driver, from the same database
        ceiling = await ctx.ceiling("pg-result", "--url", ctx.main_db, path=path)
    try:
        ours_body = await ctx.get_json(main.url(path), headers={"Accept-Encoding": "identity"})
        ceiling_body = await ctx.get_json(ceiling.url(path))
        if ours_body["result"] != ceiling_body:
            raise RuntimeError("the ceiling does not send the same result as ours")
        plain, _ = await body_size(ctx, main.url(path), "identity")
        packed, encoding = await body_size(ctx, main.url(path), "gzip")
        top = await fetch_load(ctx, ceiling.url(path))
    finally:
        ctx.stop(ceiling)
    ours = await fetch_load(ctx, main.url(path))
    gzip = await fetch_load(ctx, main.url(path), "Accept-Encoding: gzip")
    rows = len(ceiling_body)
    say(f"large: ours {ours.rps:.0f} req/s, gzip {gzip.rps:.0f}, ceiling {top.rps:.0f}")
    # A plain answer inflates the stored JSON each time; the ceiling sends the JSON as it is.
    plain_row = ratio_row(
        "large", f"large result ({rows:,} rows): GET/s", ours.rps, top.rps, "req/s", at_least=0.2
    )
    gzip_row = ratio_row(
        "large",
        "large result: GET/s with gzip, vs plain ceiling",
        gzip.rps,
        top.rps,
        "req/s",
        at_least=0.8,
    )
    size_row = ratio_row(
        "large",
        "large result: gzip body / plain body",
        packed,
        plain,
        "bytes",
        at_most=0.4,
        note=f"Content-Encoding: {encoding}",
    )
    # What a run kept before results were compact: its JSON, the deflated copy and its CSV.
    kept_before = plain_json + stored + csv_bytes
    stored_row = ratio_row(
        "large",
        "large result: bytes stored per run, vs JSON + deflated + CSV as kept before",
        stored,
        kept_before,
        "bytes",
        at_most=0.25,
        note=f"{stored / rows:.1f} B a row, {kept_before / rows:.1f} before",
    )
    return [checked(plain_row, ours, top), size_row, checked(gzip_row, gzip, top), stored_row]
