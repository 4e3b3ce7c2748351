"""Ceilings: the least work that does each measured operation, to set our figures against.

`python -m bench.ceilings KIND --port N [--db PATH]` serves one of:

- `bare`: an aiohttp app with one route, `GET /health` (the start-up ceiling);
- `intake`: `POST /api/v1/calculations`: parse the JSON body, one INSERT (autocommit), 201 + id;
- `result`: `GET /api/v1/calculations/{id}`: the result's JSON stored as it is (`keep_plain_copy`),
  sent as it is;
- `list`: `GET /api/v1/calculations?page&per_page&order&status`: one indexed OFFSET query;
- `pg-list` (`--url` of our database on a PostgreSQL server): `list`, through asyncpg;
- `pg-asyncpg`, `pg-psycopg` (`--url` of a PostgreSQL server): `POST /api/v1/calculations`:
  parse the JSON body, one `INSERT ... RETURNING id` through a pool of `PG_POOL` connections
  of that driver, 201 + id. The two drivers, side by side (`bench/drivers.py`).

`kernel_calls` is the queue's ceiling: kernel runs back to back through one warm process pool.
Heavy imports wait until a kind needs them, so that `bare` starts like a bare aiohttp app.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import secrets
import sqlite3
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    import aiosqlite

DB: web.AppKey[aiosqlite.Connection] = web.AppKey("db")
TOTALS: web.AppKey[dict[str | None, int]] = web.AppKey("totals")
SCHEMA = Path(__file__).resolve().parents[1] / "schema.sql"
SMALL_RUN = (date(2024, 1, 1), date(2024, 1, 31), 1)

INSERT = """
INSERT INTO calculations (name, date_start, date_fin, lag, seed, created_at)
VALUES (?, ?, ?, ?, ?, ?)
"""
# The ceiling of a large GET is the service as it was before results were kept compact: the
# JSON stored as it is, and sent as it is. `keep_plain_copy` stores that copy beside ours.
PLAIN_COPIES = "CREATE TABLE IF NOT EXISTS ceiling_results (id bigint PRIMARY KEY, body bytea)"
SELECT_RESULT = "SELECT body FROM ceiling_results WHERE id = ?"
LIST = {
    (order, filtered): "SELECT id, name, created_at, status FROM calculations"
    + (" WHERE status = ?" if filtered else "")
    + f" ORDER BY created_at {order}, id {order} LIMIT ? OFFSET ?"
    for order in ("ASC", "DESC")
    for filtered in (False, True)
}


def keep_plain_copy(database: str | Path, calc_id: int) -> tuple[int, int]:
    """Store the run's result JSON as it is, where the large ceiling reads it: inflated from
    what our service stored (a SQLite file, or a PostgreSQL URL). The sizes of what our
    service stores of it, and of that JSON."""
    if isinstance(database, Path):
        with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as conn:
            [(stored,)] = conn.execute(SELECT_STORED.replace("%s", "?"), (calc_id,))
            plain = inflated(stored)
            conn.execute(PLAIN_COPIES.replace("bytea", "BLOB"))
            conn.execute(INSERT_COPY.replace("%s", "?"), (calc_id, plain))
        return len(stored), len(plain)
    import psycopg

    with psycopg.connect(database, autocommit=True) as pg:
        row = pg.execute(SELECT_STORED, (calc_id,)).fetchone()
        assert row is not None
        plain = inflated(row[0])
        pg.execute(PLAIN_COPIES)
        pg.execute(INSERT_COPY, (calc_id, plain))
    return len(row[0]), len(plain)


SELECT_STORED = "SELECT result_deflated FROM calculations WHERE id = %s"
INSERT_COPY = "INSERT INTO ceiling_results (id, body) VALUES (%s, %s) ON CONFLICT DO NOTHING"


def inflated(stored: bytes) -> bytes:
    """The stored blocks end on a sync flush, not a finished stream: zlib.decompress refuses."""
    return zlib.decompressobj(-zlib.MAX_WBITS).decompress(stored)


def bare_app(db: Path | None) -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/health", health)
    return app


def db_context(path: Path, *, schema: bool = False, readonly: bool = False) -> Any:
    """A connection with our PRAGMAs (WAL, synchronous NORMAL, busy_timeout) in `app[DB]`."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        import aiosqlite

        target = f"file:{path}?mode=ro" if readonly else str(path)
        async with aiosqlite.connect(target, uri=readonly, isolation_level=None) as conn:
            await conn.execute("PRAGMA busy_timeout = 5000")
            if not readonly:
                await conn.execute("PRAGMA journal_mode = WAL")
                await conn.execute("PRAGMA synchronous = NORMAL")
            if schema:
                await conn.executescript(SCHEMA.read_text())
            app[DB] = conn
            yield

    return context


def intake_app(db: Path | None) -> web.Application:
    async def create(request: web.Request) -> web.Response:
        body = await request.json()
        params = (
            f"{body['date_start']}..{body['date_fin']} every {body['lag']}d",
            body["date_start"],
            body["date_fin"],
            body["lag"],
            secrets.randbelow(2**53),
            datetime.now(UTC).isoformat(timespec="microseconds"),
        )
        row = await request.app[DB].execute_insert(INSERT, params)
        assert row is not None
        return web.json_response({"id": row[0], "status": "queued"}, status=201)

    assert db is not None
    app = web.Application()
    app.cleanup_ctx.append(db_context(db, schema=True))
    app.router.add_post("/api/v1/calculations", create)
    return app


def result_app(db: Path | None) -> web.Application:
    async def get(request: web.Request) -> web.Response:
        calc_id = int(request.match_info["calc_id"])
        rows = list(await request.app[DB].execute_fetchall(SELECT_RESULT, (calc_id,)))
        if not rows or rows[0][0] is None:
            raise web.HTTPNotFound()
        return web.Response(body=rows[0][0], content_type="application/json")

    assert db is not None
    app = web.Application()
    app.cleanup_ctx.append(db_context(db, readonly=True))
    app.router.add_get(r"/api/v1/calculations/{calc_id:\d+}", get)
    return app


def list_app(db: Path | None) -> web.Application:
    async def count(app: web.Application) -> None:
        # The rows do not change while the benchmark lists them: counted once, not per request.
        rows = await app[DB].execute_fetchall(
            "SELECT status, count(*) FROM calculations GROUP BY status"
        )
        app[TOTALS] = totals_of(rows)

    async def fetch(app: web.Application, key: tuple[str, bool], params: list[Any]) -> Any:
        return await app[DB].execute_fetchall(LIST[key], params)

    assert db is not None
    app = web.Application()
    app.cleanup_ctx.append(db_context(db))
    app.on_startup.append(count)
    app.router.add_get("/api/v1/calculations", list_handler(fetch))
    return app


def totals_of(rows: Any) -> dict[str | None, int]:
    """Runs per status from `(status, count)` rows, and in all (None)."""
    totals: dict[str | None, int] = {row[0]: row[1] for row in rows}
    totals[None] = sum(totals.values())
    return totals


def list_handler(
    fetch: Callable[[web.Application, tuple[str, bool], list[Any]], Awaitable[Any]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The list ceiling's answer, over `fetch(app, (order, filtered), params)` of a page."""

    async def get(request: web.Request) -> web.Response:
        query = request.query
        page, per_page = int(query.get("page", 1)), int(query.get("per_page", 10))
        status = query.get("status")
        order = "ASC" if query.get("order") == "asc" else "DESC"
        params: list[Any] = [] if status is None else [status]
        params += [per_page, (page - 1) * per_page]
        rows = await fetch(request.app, (order, status is not None), params)
        items = [{"id": r[0], "name": r[1], "created_at": r[2], "status": r[3]} for r in rows]
        total = request.app[TOTALS].get(status, 0)
        return web.json_response(
            {
                "items": items,
                "page": page,
                "per_page": per_page,
                "total": total,
                "pages": math.ceil(total / per_page),
            }
        )

    return get


PG_TABLE = """
CREATE TABLE IF NOT EXISTS calculations (
    id bigserial PRIMARY KEY, name text NOT NULL, status text NOT NULL DEFAULT 'queued',
    date_start date NOT NULL, date_fin date NOT NULL, lag integer NOT NULL,
    seed bigint NOT NULL, attempts integer NOT NULL DEFAULT 0, created_at timestamptz NOT NULL
)
"""
PG_INSERT = """
INSERT INTO calculations (name, date_start, date_fin, lag, seed, created_at)
VALUES ({}, {}, {}, {}, {}, {}) RETURNING id
"""
PG_POOL = 10
PG_SELECT_RESULT = "SELECT body FROM ceiling_results WHERE id = $1"


def pg_params(body: dict[str, Any]) -> tuple[Any, ...]:
    return (
        f"{body['date_start']}..{body['date_fin']} every {body['lag']}d",
        date.fromisoformat(body["date_start"]),
        date.fromisoformat(body["date_fin"]),
        body["lag"],
        secrets.randbelow(2**53),
        datetime.now(UTC),
    )


def pg_app(
    insert: Callable[[web.Application, tuple[Any, ...]], Any], context: Any
) -> web.Application:
    async def create(request: web.Request) -> web.Response:
        calc_id = await insert(request.app, pg_params(await request.json()))
        return web.json_response({"id": calc_id, "status": "queued"}, status=201)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.cleanup_ctx.append(context)
    app.router.add_post("/api/v1/calculations", create)
    app.router.add_get("/health", health)
    return app


POOL: web.AppKey[Any] = web.AppKey("pool")


def asyncpg_app(url: str) -> web.Application:
    sql = PG_INSERT.format(*(f"${n}" for n in range(1, 7)))

    async def context(app: web.Application) -> AsyncIterator[None]:
        import asyncpg

        async with asyncpg.create_pool(url, min_size=PG_POOL, max_size=PG_POOL) as pool:
            await pool.execute(PG_TABLE)
            app[POOL] = pool
            yield

    async def insert(app: web.Application, params: tuple[Any, ...]) -> Any:
        return await app[POOL].fetchval(sql, *params)

    return pg_app(insert, context)


def asyncpg_result_app(url: str) -> web.Application:
    """large's ceiling on PostgreSQL: the stored result by id, through asyncpg, sent as it is."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        import asyncpg

        async with asyncpg.create_pool(url, min_size=PG_POOL, max_size=PG_POOL) as pool:
            app[POOL] = pool
            yield

    async def get(request: web.Request) -> web.Response:
        calc_id = int(request.match_info["calc_id"])
        stored = await request.app[POOL].fetchval(PG_SELECT_RESULT, calc_id)
        if stored is None:
            raise web.HTTPNotFound()
        return web.Response(body=stored, content_type="application/json")

    app = web.Application()
    app.cleanup_ctx.append(context)
    app.router.add_get(r"/api/v1/calculations/{calc_id:\d+}", get)
    return app


def psycopg_app(url: str) -> web.Application:
    sql = PG_INSERT.format(*["%s"] * 6)

    async def context(app: web.Application) -> AsyncIterator[None]:
        from psycopg_pool import AsyncConnectionPool

        pool = AsyncConnectionPool(
            url, min_size=PG_POOL, max_size=PG_POOL, kwargs={"autocommit": True}, open=False
        )
        async with pool:
            async with pool.connection() as conn:
                await conn.execute(PG_TABLE)
            app[POOL] = pool
            yield

    async def insert(app: web.Application, params: tuple[Any, ...]) -> Any:
        async with app[POOL].connection() as conn:
            row = await (await conn.execute(sql, params)).fetchone()
            return row[0]

    return pg_app(insert, context)


def asyncpg_list_app(url: str) -> web.Application:
    """list's ceiling on PostgreSQL: the same OFFSET query as `list_app`, through asyncpg, on
    our database, its totals counted once."""
    statements = {
        key: sql.replace("?", "{}").format(*(f"${n}" for n in range(1, sql.count("?") + 1)))
        for key, sql in LIST.items()
    }

    async def context(app: web.Application) -> AsyncIterator[None]:
        import asyncpg

        async with asyncpg.create_pool(url, min_size=PG_POOL, max_size=PG_POOL) as pool:
            rows = await pool.fetch("SELECT status, count(*) FROM calculations GROUP BY status")
            app[POOL], app[TOTALS] = pool, totals_of(rows)
            yield

    async def fetch(app: web.Application, key: tuple[str, bool], params: list[Any]) -> Any:
        return await app[POOL].fetch(statements[key], *params)

    app = web.Application()
    app.cleanup_ctx.append(context)
    app.router.add_get("/api/v1/calculations", list_handler(fetch))
    return app


PG_APPS: dict[str, Callable[[str], web.Application]] = {
    "pg-list": asyncpg_list_app,
    "pg-asyncpg": asyncpg_app,
    "pg-psycopg": psycopg_app,
    "pg-result": asyncpg_result_app,
}

APPS: dict[str, Callable[[Path | None], web.Application]] = {
    "bare": bare_app,
    "intake": intake_app,
    "result": result_app,
    "list": list_app,
}


def kernel_calls(count: int, warm: int = 5) -> tuple[float, list[float]]:
    """`count` small kernel runs, each waited for before the next, through one warm
    single-process spawn pool: the wall time of them all, and the time of each call."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import kernel

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        for seed in range(warm):
            pool.submit(kernel.run, *SMALL_RUN, seed, 0.0).result()
        times = []
        started = time.perf_counter()
        for seed in range(count):
            call = time.perf_counter()
            pool.submit(kernel.run, *SMALL_RUN, seed, 0.0).result()
            times.append(time.perf_counter() - call)
        return time.perf_counter() - started, times


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ceilings")
    parser.add_argument("kind", choices=sorted(APPS | PG_APPS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", type=Path)
    parser.add_argument("--url", help="a PostgreSQL server, for the pg-* kinds")
    args = parser.parse_args()
    app = PG_APPS[args.kind](args.url) if args.kind in PG_APPS else APPS[args.kind](args.db)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
