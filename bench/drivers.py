"""Which PostgreSQL driver: the intake ceiling (a bare handler, one `INSERT ... RETURNING`
through a pool of 10) served with asyncpg and with psycopg 3 in turn, on one throwaway
server, under the same wrk load as intake. The figure is psycopg's rate against asyncpg's."""

from __future__ import annotations

from bench.harness import Context, say
from bench.loadgen import WrkResult, checked
from bench.postgres import throwaway_server
from bench.report import Row, check_row, ratio_row
from bench.scenarios import intake_load

DRIVERS = ("pg-asyncpg", "pg-psycopg")


async def drivers(ctx: Context) -> list[Row]:
    loads: dict[str, WrkResult] = {}
    with throwaway_server() as database:
        for kind in DRIVERS:
            server = await ctx.ceiling(kind, "--url", database.url)
            try:
                loads[kind] = await intake_load(ctx, server)
            finally:
                ctx.stop(server)
    asyncpg, psycopg = loads["pg-asyncpg"], loads["pg-psycopg"]
    say(f"drivers: asyncpg {asyncpg.rps:.0f} req/s, psycopg {psycopg.rps:.0f} req/s")
    rate = ratio_row(
        "drivers",
        "drivers: INSERT ... RETURNING req/s, psycopg 3 (ours) vs asyncpg (ceiling)",
        psycopg.rps,
        asyncpg.rps,
        "req/s",
        note="both: a pool of 10, autocommit, the same table, wrk as intake; no target",
    )
    refused = sum(
        load.socket_errors() + sum(load.statuses.values()) - load.count(201, 202)
        for load in loads.values()
    )
    return [
        checked(rate, psycopg, asyncpg),
        check_row(
            "drivers",
            "drivers: answers not 201, socket errors",
            refused == 0,
            f"{refused}",
            "0",
            "none",
        ),
    ]
