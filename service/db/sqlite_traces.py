"""The SQLite backend's ping-pong traces: one function per SQL statement on their tables."""

from __future__ import annotations

from datetime import datetime

import aiosqlite

from service.db import utcnow
from service.db.sqlite_runs import fetch_one
from service.models import STOPPING, Hop, Outcome, Peer, Trace

HOP_COLUMNS = (
    "trace_id, hop, service, outcome, http_status, partner_status, detail,"
    " received_at, finished_at, payload"
)

ADD_TRACE = """
INSERT INTO pingpong_traces (trace_id, created_at) VALUES (:trace_id, :now)
ON CONFLICT (trace_id) DO NOTHING
RETURNING id
"""

# A replayed hop (same trace and number) inserts nothing and returns no row.
INSERT_HOP = f"""
INSERT INTO pingpong_hops
    (trace_id, hop, service, outcome, http_status, detail, received_at, finished_at, payload)
VALUES
    (:trace_id, :hop, :service, :outcome, :http_status, :detail, :now,
     CASE WHEN :outcome IS NULL THEN NULL ELSE :now END, :payload)
ON CONFLICT (trace_id, hop) DO NOTHING
RETURNING {HOP_COLUMNS}
"""

FINISH_HOP = f"""
UPDATE pingpong_hops
SET outcome = :outcome, partner_status = :partner_status, detail = :detail, finished_at = :now
WHERE trace_id = :trace_id AND hop = :hop AND outcome IS NULL
RETURNING {HOP_COLUMNS}
"""

LIST_HOPS = f"SELECT {HOP_COLUMNS} FROM pingpong_hops WHERE trace_id = :trace_id ORDER BY hop"

# Stopped: a hop ended the pipeline, or the partner refused a forward (its own row for that
# refusal is in its database, which is this one when both services share the file).
_STOPPING_SQL = ", ".join(f"'{outcome}'" for outcome in sorted(STOPPING))
TRACE_COLUMNS = f"""
t.trace_id, t.created_at,
(SELECT count(*) FROM pingpong_hops h WHERE h.trace_id = t.trace_id) AS hops,
EXISTS (SELECT 1 FROM pingpong_hops h WHERE h.trace_id = t.trace_id
        AND (h.outcome IN ({_STOPPING_SQL}) OR h.partner_status = 400)) AS stopped
"""

# One trace's own row: its summary is made from its hops (trace.summarize), not counted here.
TRACE_CREATED_AT = "SELECT created_at FROM pingpong_traces WHERE trace_id = :trace_id"

LIST_TRACES = f"""
SELECT {TRACE_COLUMNS} FROM pingpong_traces t
ORDER BY t.created_at DESC, t.id DESC
LIMIT :limit OFFSET :offset
"""

COUNT_TRACES = "SELECT count(*) FROM pingpong_traces"


async def add_trace(conn: aiosqlite.Connection, trace_id: str) -> bool:
    """Record a trace the first time one of its hops arrives; False if it was known."""
    return await fetch_one(conn, ADD_TRACE, {"trace_id": trace_id, "now": utcnow()}) is not None


async def insert_hop(
    conn: aiosqlite.Connection,
    *,
    trace_id: str,
    hop: int,
    service: Peer,
    outcome: Outcome | None,
    http_status: int,
    detail: str | None,
    payload_json: str,
) -> Hop | None:
    """Record a hop as it arrives; None if this trace already has a hop with that number."""
    params = {
        "trace_id": trace_id,
        "hop": hop,
        "service": service,
        "outcome": outcome,
        "http_status": http_status,
        "detail": detail,
        "payload": payload_json,
        "now": utcnow(),
    }
    row = await fetch_one(conn, INSERT_HOP, params)
    return None if row is None else Hop.from_row(row)


async def finish_hop(
    conn: aiosqlite.Connection,
    *,
    trace_id: str,
    hop: int,
    outcome: Outcome,
    partner_status: int | None,
    detail: str,
) -> Hop | None:
    """Record how a forwarded hop ended; None if it had ended already."""
    params = {
        "trace_id": trace_id,
        "hop": hop,
        "outcome": outcome,
        "partner_status": partner_status,
        "detail": detail,
        "now": utcnow(),
    }
    row = await fetch_one(conn, FINISH_HOP, params)
    return None if row is None else Hop.from_row(row)


async def list_hops(conn: aiosqlite.Connection, trace_id: str) -> list[Hop]:
    rows = await conn.execute_fetchall(LIST_HOPS, {"trace_id": trace_id})
    return [Hop.from_row(row) for row in rows]


async def trace_created_at(conn: aiosqlite.Connection, trace_id: str) -> datetime | None:
    """When the trace was first seen; None if there is no such trace."""
    row = await fetch_one(conn, TRACE_CREATED_AT, {"trace_id": trace_id})
    return None if row is None else datetime.fromisoformat(row["created_at"])


async def list_traces(conn: aiosqlite.Connection, *, limit: int, offset: int) -> list[Trace]:
    """Traces newest first."""
    rows = await conn.execute_fetchall(LIST_TRACES, {"limit": limit, "offset": offset})
    return [Trace.from_row(row) for row in rows]


async def count_traces(conn: aiosqlite.Connection) -> int:
    row = await fetch_one(conn, COUNT_TRACES, {})
    assert row is not None  # count(*) always answers a row
    return int(row[0])
