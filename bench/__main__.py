"""`python -m bench [--backend sqlite|postgresql] [--tiny] [--only NAME ...] [--out DIR]`: the
table on stdout, JSON in DIR."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import client, drivers, report, resources, scale, scaling, scenarios
from bench.harness import TINY, Context, Settings, say
from bench.procs import ROOT
from bench.report import ERROR, FAIL, Row

Scenario = Callable[[Context], Awaitable[list[Row]]]

# In this order: intake first (it records the warm-up RSS), memory after the others.
SCENARIOS: dict[str, Scenario] = {
    "intake": scenarios.intake,
    "queue": scenarios.queue,
    "client": client.client,
    "latency": scenarios.latency,
    "large": scenarios.large,
    "list": scale.listing,
    "pruning": scale.pruning,
    "responsive": scale.responsive,
    "memory": resources.memory,
    "start": resources.start,
    "drivers": drivers.drivers,
    "scaling": scaling.scaling,
}
# What PostgreSQL runs: all but pruning (its database is built from SQLite rows) and drivers
# (PostgreSQL's already).
POSTGRES_SCENARIOS = (
    "intake",
    "queue",
    "client",
    "latency",
    "large",
    "list",
    "responsive",
    "memory",
    "start",
    "scaling",
)
BACKENDS = ("sqlite", "postgresql")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--backend", choices=BACKENDS, default="sqlite", help="the database")
    parser.add_argument("--tiny", action="store_true", help="about a second per scenario")
    parser.add_argument(
        "--only", nargs="+", choices=list(SCENARIOS), metavar="NAME", help=", ".join(SCENARIOS)
    )
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench", help="JSON folder")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed, too")
    return parser.parse_args(argv)


async def run(
    names: list[str], settings: Settings, keep: bool, backend: str
) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    outcomes: dict[str, Any] = {}
    warm_up = "memory" in names and "intake" not in names
    async with Context(settings, keep, warm_up, backend) as ctx:
        for name in names:
            say(f"{name} ...")
            started = time.perf_counter()
            try:
                async with asyncio.timeout(settings.scenario_timeout):
                    found = await SCENARIOS[name](ctx)
            except Exception as exc:
                traceback.print_exc(file=sys.stderr)
                message = f"{type(exc).__name__}: {str(exc) or 'not done in time'}"
                found = [report.error_row(name, message)]
                outcomes[name] = {"status": "error", "error": message}
            else:
                outcomes[name] = {"status": "ok"}
            outcomes[name]["seconds"] = round(time.perf_counter() - started, 3)
            ctx.trace_rss(name)
            if name in ctx.rss_trace:
                outcomes[name]["server_rss_mib"] = ctx.rss_trace[name]
            rows += found
    return rows, outcomes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    settings = TINY if args.tiny else Settings()
    offered = SCENARIOS if args.backend == "sqlite" else POSTGRES_SCENARIOS
    names = [name for name in offered if args.only is None or name in args.only]
    started = datetime.now(UTC)
    clock = time.perf_counter()
    rows, outcomes = asyncio.run(run(names, settings, args.keep, args.backend))
    document = {
        "started_at": started.isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - clock, 1),
        "mode": "tiny" if args.tiny else "full",
        "backend": args.backend,
        "machine": report.machine(),
        "scenarios": outcomes,
        "columns": list(report.HEADER),
        "rows": report.rows_json(rows),
    }
    stamp = started.strftime("%Y%m%dT%H%M%SZ") + ("" if args.backend == "sqlite" else "-postgresql")
    path = report.write_json(args.out, stamp, document)
    print(report.table(rows))
    say(f"{document['seconds']} s; written {path} and latest.json")
    if any(row.result == ERROR for row in rows):
        return 1
    return 1 if args.strict and any(row.result == FAIL for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
