"""The Python client's overhead: `map` beside the bench's own post-and-wait loop, and the
sync client's create rate beside a raw POST loop of http.client at the same concurrency."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

from bench import procs
from bench.harness import CREATE, SMALL_RUN, Context, say
from bench.report import Row, check_row, ratio_row
from bench.scenarios import cancel_backlog, post_until_idle
from calculations_client import AsyncClient, Client

BODY = json.dumps(SMALL_RUN, separators=(",", ":")).encode()


def raw_posts(base: str, count: int, with_key: bool) -> None:
    """`count` creates on one kept-alive connection: the same request the client sends
    (with an Idempotency-Key when `with_key`), none of its work around it."""
    address = urlsplit(base)
    conn = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port)
    try:
        for _ in range(count):
            headers = {"Content-Type": "application/json"}
            if with_key:
                headers["Idempotency-Key"] = uuid.uuid4().hex
            conn.request("POST", CREATE, BODY, headers)
            answer = conn.getresponse()
            answer.read()
            if answer.status != 201:
                raise RuntimeError(f"POST: {answer.status}")
    finally:
        conn.close()


def client_posts(client: Client, count: int) -> None:
    for _ in range(count):
        client.submit(**SMALL_RUN)


def rate(threads: int, count: int, work: Callable[[int], None]) -> float:
    """Creates per second of `threads` threads doing `count` creates each."""
    workers = [threading.Thread(target=work, args=(count,)) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return threads * count / (time.perf_counter() - started)


def create_rates(base: str, threads: int, count: int) -> dict[str, float]:
    """The best of two turns of each loop, taken in turn so that drift hits both alike."""
    best = {"raw": 0.0, "raw without key": 0.0, "client": 0.0}
    with Client(base) as client:
        for _ in range(2):
            for name, work in (
                ("raw", lambda n: raw_posts(base, n, with_key=True)),
                ("client", lambda n: client_posts(client, n)),
                ("raw without key", lambda n: raw_posts(base, n, with_key=False)),
            ):
                best[name] = max(best[name], rate(threads, count, work))
    return best


def sync_map(base: str, n: int, concurrency: int) -> tuple[float, int]:
    started = time.perf_counter()
    with Client(base) as client:
        runs = client.map([SMALL_RUN] * n, progress=False, concurrency=concurrency)
    return time.perf_counter() - started, sum(run.done for run in runs)


async def async_map(base: str, n: int, concurrency: int) -> tuple[float, int]:
    started = time.perf_counter()
    async with AsyncClient(base) as client:
        runs = await client.map([SMALL_RUN] * n, progress=False, concurrency=concurrency)
    return time.perf_counter() - started, sum(run.done for run in runs)


async def map_times(ctx: Context, main: procs.Server) -> dict[str, tuple[float, int]]:
    """The best of two turns of the loop and of each map, taken in turn (the loop, the async
    map, the sync map), so that a slow moment or a growing table hits all three alike."""
    s = ctx.settings
    base, n = main.url(""), s.queue_runs
    best: dict[str, tuple[float, int]] = {}
    for _ in range(2):
        ids, seconds = await post_until_idle(ctx, main, n)
        found = {"loop": (seconds, len(ids))}
        found["async"] = await async_map(base, n, s.queue_in_flight)
        await ctx.wait_idle(main)
        found["sync"] = await asyncio.to_thread(sync_map, base, n, s.queue_in_flight)
        await ctx.wait_idle(main)
        for kind, (took, done) in found.items():
            if kind not in best or took < best[kind][0]:
                best[kind] = (took, done)
    return best


async def client(ctx: Context) -> list[Row]:
    s = ctx.settings
    main = await ctx.main_server()
    await ctx.wait_idle(main)
    n = s.queue_runs
    times = await map_times(ctx, main)
    (loop_seconds, _), (async_seconds, done), (sync_seconds, sync_done) = (
        times["loop"],
        times["async"],
        times["sync"],
    )
    base = main.url("")
    rates = await asyncio.to_thread(create_rates, base, s.client_threads, s.client_creates)
    await cancel_backlog(ctx, main)
    creates = ", ".join(f"{name} {value:.0f}" for name, value in rates.items())
    say(
        f"client: map {async_seconds:.2f} s (async), {sync_seconds:.2f} s (sync), loop"
        f" {loop_seconds:.2f} s (best of two each); creates/s {creates}"
    )
    return [
        ratio_row(
            "client",
            f"client: AsyncClient.map of {n:,} small runs, vs the bench's post-and-wait loop",
            async_seconds,
            loop_seconds,
            "s",
            at_most=1.5,
            percent=False,
            note=f"{s.queue_in_flight} creates in flight, as the loop's posts; best of two turns",
        ),
        ratio_row(
            "client",
            f"client: Client.map of {n:,} small runs, vs the same loop",
            sync_seconds,
            loop_seconds,
            "s",
            at_most=1.5,
            percent=False,
        ),
        check_row(
            "client",
            "client: runs done through map (async + sync)",
            done == sync_done == n,
            f"{done:,} + {sync_done:,}",
            f"{n:,} + {n:,}",
            "all",
        ),
        ratio_row(
            "client",
            f"client: Client.submit creates/s, {s.client_threads} threads, vs raw http.client",
            rates["client"],
            rates["raw"],
            "req/s",
            at_least=0.8,
            note="both send the same request, Idempotency-Key included",
        ),
        ratio_row(
            "client",
            "client: the raw loop with an Idempotency-Key, vs without",
            rates["raw"],
            rates["raw without key"],
            "req/s",
            note="what checking the key costs the service; no target",
        ),
    ]
