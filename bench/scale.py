"""Scenarios at scale: listing a large table, and a list request while large runs go on."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from bench import procs
from bench.ceilings import SCHEMA
from bench.harness import CREATE, Context, run_db, say
from bench.loadgen import WrkResult, checked, percentile, run_wrk, start_wrk, stop_wrk
from bench.report import Row, check_row, ratio_row

INSERT = """
INSERT INTO calculations (name, status, date_start, date_fin, lag, seed, attempts, created_at,
                          started_at, finished_at, duration, error, result)
VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, NULL)
"""
# No queued or running row: a server started on them would compute them during the measure.
STATUSES = ("done",) * 90 + ("failed",) * 7 + ("cancelled",) * 3
PROBE = f"{CREATE}?per_page=10"


def fake_row(rng: random.Random, created: datetime) -> tuple[Any, ...]:
    start = date(2000, 1, 1) + timedelta(days=rng.randrange(9000))
    fin = start + timedelta(days=rng.randrange(30, 3000))
    lag = rng.choice((1, 7, 30))
    status = rng.choice(STATUSES)
    duration = round(rng.uniform(0.002, 2.0), 6)
    started = created + timedelta(seconds=rng.uniform(0.001, 5))
    finished = started + timedelta(seconds=duration)
    error = "ValueError: the kernel could not compute this run" if status == "failed" else None
    return (
        f"{start}..{fin} every {lag}d",
        status,
        start.isoformat(),
        fin.isoformat(),
        lag,
        rng.randrange(2**53),
        created.isoformat(timespec="microseconds"),
        started.isoformat(timespec="microseconds"),
        finished.isoformat(timespec="microseconds"),
        duration,
        error,
    )


def build_list_db(path: Path, count: int) -> None:
    """`count` ended runs in a fresh database with our schema, launched one after another."""
    rng = random.Random(20261125)
    created = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for _ in range(count):
        created += timedelta(microseconds=rng.randrange(1, 300_000_000))
        rows.append(fake_row(rng, created))
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(SCHEMA.read_text())
        with conn:
            conn.executemany(INSERT, rows)


OLD = "SELECT count(*) FROM calculations WHERE finished_at < '2026-06-01'"  # build_list_db's


async def pruning(ctx: Context) -> list[Row]:
    """Intake while the retention deletes `prune_rows` ended runs, beside intake on the same
    database where every run is kept: the pruner's batches must not hold the creates up."""
    from bench.scenarios import intake_load

    rates, took = {}, 0.0
    for name, settings in (("keeps", {}), ("prunes", {"RETENTION": "86400"})):
        db = ctx.workdir / f"{name}.db"
        await asyncio.to_thread(build_list_db, db, ctx.settings.prune_rows)
        server = await ctx.start(procs.start_service(name, db, ctx.workdir, **settings))
        started = time.monotonic()
        load = asyncio.create_task(intake_load(ctx, server))
        while name == "prunes" and not load.done():  # how long the pruner takes, at 20 Hz
            if not run_db(f"sqlite:///{db}", OLD)[0][0]:
                took = time.monotonic() - started
                break
            await asyncio.sleep(0.05)
        rates[name] = (await load).rps
        left = run_db(f"sqlite:///{db}", OLD)[0][0]
        ctx.stop(server)
    say(f"pruning: intake {rates['prunes']:.0f} req/s pruning, {rates['keeps']:.0f} without")
    rate = ratio_row(
        "pruning",
        f"intake while {ctx.settings.prune_rows:,} ended runs are deleted, vs without",
        rates["prunes"],
        rates["keeps"],
        "req/s",
        at_least=0.8,
        note=f"the retention deleted them within {took:.2f} s of the start, in the"
        f" {ctx.settings.intake_seconds} s measured; {left} left",
    )
    return [rate]


async def build_list_pg(url: str, count: int) -> None:
    """The same rows as `build_list_db`, in a PostgreSQL database at our latest schema."""
    import asyncpg

    from service.db.migrate import migrate_postgres

    conn = await asyncpg.connect(url)
    try:
        await migrate_postgres(conn, "the bench's list database")
        with tempfile.TemporaryDirectory() as folder:
            sqlite_copy = Path(folder) / "list.db"
            await asyncio.to_thread(build_list_db, sqlite_copy, count)
            with contextlib.closing(sqlite3.connect(sqlite_copy)) as source:
                rows = source.execute(f"SELECT {LIST_COLUMNS} FROM calculations").fetchall()
        await conn.copy_records_to_table(
            "calculations", records=rows, columns=LIST_COLUMNS.split(", ")
        )
        await conn.execute("ANALYZE calculations")
    finally:
        await conn.close()


LIST_COLUMNS = (
    "id, name, status, date_start, date_fin, lag, seed, attempts, created_at, started_at,"
    " finished_at, duration, error"
)


async def listing(ctx: Context) -> list[Row]:
    """The first and last page of the list, for each case: an order, with or without a status
    filter."""
    if ctx.pg is None:
        db: Path | str = ctx.workdir / "list.db"
        await asyncio.to_thread(build_list_db, db, ctx.settings.list_rows)
        top = ("list", "--db", str(db))
    else:  # the same rows; the ceiling: the same OFFSET query through asyncpg
        db = ctx.new_database("list")
        await build_list_pg(db, ctx.settings.list_rows)
        top = ("pg-list", "--url", db)
    ours = await ctx.start(procs.start_service("list", db, ctx.workdir))
    ceiling = await ctx.ceiling(*top, path=CREATE)
    rows: list[Row] = []
    try:
        for order, status in ctx.settings.list_cases:
            rows += await list_case(ctx, ours, ceiling, order, status)
    finally:
        ctx.stop(ceiling)
        ctx.stop(ours)
    return rows


async def list_case(
    ctx: Context, ours: procs.Server, ceiling: procs.Server, order: str, status: str | None
) -> list[Row]:
    query = f"{CREATE}?order={order}" + ("" if status is None else f"&status={status}")
    label = f"{order}, {'all' if status is None else 'status=' + status}"
    pages = (await ctx.get_json(ours.url(query)))["pages"]
    rps: dict[int, float] = {}
    rows = []
    for page in (1, pages):
        url = f"{query}&page={page}"
        mine, top = await ctx.get_json(ours.url(url)), await ctx.get_json(ceiling.url(url))
        if [i["id"] for i in mine["items"]] != [i["id"] for i in top["items"]]:
            raise RuntimeError(f"the ceiling lists other items than ours for {url}")
        load = await list_load(ctx, ours.url(url))
        reference = await list_load(ctx, ceiling.url(url))
        rps[page] = load.rps
        figure = f"list: page {page:,} of {pages:,} ({label}), GET/s"
        row = ratio_row("list", figure, load.rps, reference.rps, "req/s", at_least=0.5)
        rows.append(checked(row, load, reference))
    say(f"list {label}: ours {rps[1]:.0f} / {rps[pages]:.0f} req/s (first / last page)")
    rows.append(
        ratio_row(
            "list",
            f"list: last page vs first page, ours ({label})",
            rps[pages],
            rps[1],
            "req/s",
            at_least=0.5,
            note="the ceiling column is our first page: a last page must not cost a scan",
        )
    )
    return rows


async def list_load(ctx: Context, url: str) -> WrkResult:
    s = ctx.settings
    return await run_wrk(url, connections=s.list_connections, seconds=s.list_seconds)


async def probe(
    session: aiohttp.ClientSession,
    urls: list[str],
    count: int,
    until: asyncio.Event | None = None,
) -> list[list[float]]:
    """Sequential GETs of each URL in turn: `count` rounds, or as many as fit until `until`
    is set. The times taken, per URL."""
    samples: list[list[float]] = [[] for _ in urls]
    while len(samples[0]) < count if until is None else not until.is_set():
        for url, taken in zip(urls, samples, strict=True):
            started = time.perf_counter()
            async with session.get(url) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"GET {url}: {resp.status}")
            taken.append((time.perf_counter() - started) * 1000)
    return samples


async def busy_load(
    ctx: Context, main: procs.Server, ids: list[int], ended: asyncio.Event
) -> WrkResult | None:
    """Until every run ended: once the first one is done, one client fetches its result in a
    loop (wrk, one connection). Returns that client's summary."""
    fetcher = None
    try:
        while True:
            health = await ctx.get_json(main.url("/health"))
            left = health["queued"] + health["running"]
            if fetcher is None and left < len(ids):
                url = main.url(f"{CREATE}/{ids[0]}")
                fetcher = await start_wrk(url, connections=1, seconds=600)
            if left == 0:
                break
            await asyncio.sleep(0.1)
    finally:
        ended.set()
        result = None if fetcher is None else await stop_wrk(fetcher)
    return result


async def responsive(ctx: Context) -> list[Row]:
    """p99 of a small list request while large runs compute and their results are fetched,
    beside its p99 on the idle server; and the server process must not have loaded pandas.
    A bare aiohttp app in a process of its own is probed in turn, idle and under the same
    load: what the machine's cores, shared by everything, allow any server."""
    s = ctx.settings
    main = await ctx.main_server()
    await ctx.wait_idle(main)
    bare = await ctx.ceiling("bare")
    urls = [main.url(PROBE), bare.url("/health")]
    date_start, date_fin = s.busy_run
    run = {"date_start": date_start, "date_fin": date_fin, "lag": 1}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        await probe(session, urls, 20)
        idle, bare_idle = await probe(session, urls, s.probe_samples)
        ids = [await ctx.create(main, run) for _ in range(s.busy_runs)]
        ended = asyncio.Event()
        load = asyncio.create_task(busy_load(ctx, main, ids, ended))
        try:
            async with asyncio.timeout(s.scenario_timeout - 30):
                busy, bare_busy = await probe(session, urls, 0, until=ended)
        finally:
            if not ended.is_set():
                load.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                fetched = await load
    done = run_db(
        ctx.main_db,
        "SELECT count(*) FROM calculations WHERE id BETWEEN ? AND ? AND status = 'done'",
        (min(ids), max(ids)),
    )[0][0]
    ctx.stop(bare)
    libraries = procs.mapped_files(main.pid, ("pandas", "numpy"))
    rows = responsive_rows(idle, busy, fetched, done, len(ids), libraries, s.busy_run)
    bare_p99 = ratio_row(
        "responsive",
        "responsive: a bare aiohttp app's p99 under the same load, vs its idle p99",
        percentile(bare_busy, 99),
        percentile(bare_idle, 99),
        "ms",
        percent=False,
        note="GET /health of a one-route app in a process of its own, probed in turn with"
        " ours: the bound the shared cores put on any server; no target",
    )
    return [rows[0], bare_p99, *rows[1:]]


def responsive_rows(
    idle: list[float],
    busy: list[float],
    fetched: WrkResult | None,
    done: int,
    runs: int,
    libraries: list[str],
    busy_run: tuple[str, str],
) -> list[Row]:
    points = (date.fromisoformat(busy_run[1]) - date.fromisoformat(busy_run[0])).days + 1
    idle_p99, busy_p99 = percentile(idle, 99), percentile(busy, 99)
    fetches = 0 if fetched is None else fetched.requests
    say(f"responsive: list p99 {busy_p99:.1f} ms busy, {idle_p99:.1f} ms idle")
    note = (
        f"{len(busy):,} requests while busy (p50 {percentile(busy, 50):.1f} ms, max"
        f" {max(busy):.1f} ms), {len(idle):,} idle (p50 {percentile(idle, 50):.1f} ms);"
        f" {fetches:,} GETs of a {points:,}-row result meanwhile"
    )
    if fetched is not None and fetched.describe():
        note += f" (with {fetched.describe()})"
    return [
        ratio_row(
            "responsive",
            f"responsive: list p99 while {points:,}-row runs go, vs idle p99",
            busy_p99,
            idle_p99,
            "ms",
            at_most=3.0,
            percent=False,
            note=note,
        ),
        check_row(
            "responsive", "responsive: large runs done", done == runs, f"{done}", f"{runs}", "all"
        ),
        check_row(
            "responsive",
            "responsive: pandas/numpy libraries mapped by the server process",
            not libraries,
            f"{len(libraries)} files",
            "0 files",
            "none",
            note=", ".join(libraries[:3]),
        ),
    ]
