"""The PostgreSQL backend's statements, one named constant each; `postgres.py` runs them.
Timestamps come from the database's clock (`utc_text()`, `epoch_now()`, made by
migrations/postgres/0001_first_release.sql)."""

from __future__ import annotations

from service.models import STOPPING

CHANNEL = "calculations"  # what the schema's trigger notifies on

COLUMNS = (
    "id, name, status, date_start, date_fin, lag, seed, attempts,"
    " created_at, started_at, finished_at, duration, error"
)

# What `insert_params` gives, in the order enqueue_calculation takes it (then `alone`).
ENQUEUE_ARGS = ("name", "date_start", "date_fin", "lag", "seed", "key", "hash", "max_queued")
ENQUEUE = "SELECT enqueue_calculation($1, $2, $3, $4, $5, $6, $7, $8, $9)"
# A batch of creates: one array per argument (the same MAX_QUEUED for all), in order.
ENQUEUE_MANY = """
SELECT enqueue_calculation(name, date_start, date_fin, lag, seed, key, hash, $8, false)
FROM unnest($1::text[], $2::text[], $3::text[], $4::integer[], $5::bigint[], $6::text[],
            $7::text[])
     WITH ORDINALITY AS batch(name, date_start, date_fin, lag, seed, key, hash, n)
ORDER BY n
"""

GET_CALCULATION = f"SELECT {COLUMNS} FROM calculations WHERE id = $1"

# octet_length() of a value stored out of line reads its pointer, not the value. A row stored
# before schema version 2 has its JSON as it is (`plain_size`), and no result_size.
# A result of one piece comes with the row, in the form asked for ($2: gzip), saving a trip.
GET_WITH_SIZES = f"""
SELECT {COLUMNS}, result_crc, coalesce(result_size, octet_length(result)) AS result_size,
       octet_length(result_deflated) AS deflated_size, octet_length(result) AS plain_size,
       CASE WHEN ($2 OR result IS NULL) AND octet_length(result_deflated) <= $3
            THEN result_deflated END AS inline_deflated,
       CASE WHEN NOT $2 AND octet_length(result) <= $3 THEN result END AS inline_result
FROM calculations WHERE id = $1
"""

GET_BY_IDEMPOTENCY_KEY = (
    f"SELECT {COLUMNS}, request_hash FROM calculations WHERE idempotency_key = $1"
)

RESULT_COLUMNS = ("result", "result_deflated", "result_csv")
COLUMN = {column: f"SELECT {column} FROM calculations WHERE id = $1" for column in RESULT_COLUMNS}
PIECES = {
    column: f"""
SELECT substring({column} FROM start FOR $2)
FROM calculations, generate_series(1, octet_length({column}), $2) AS start
WHERE id = $1 ORDER BY start
"""
    for column in RESULT_COLUMNS
}
CSV_SIZES = """
SELECT octet_length(result_csv), octet_length(result_deflated) FROM calculations WHERE id = $1
"""


# The oldest queued run that no other claim holds; rows being claimed are skipped, never
# waited for, so workers claiming together each take a different run, oldest first. Only for
# a recorded worker (`recorded` says whether it is): its row is locked until the claim
# commits, so a rescue forgetting it waits, and then finds the run among the worker's. The
# start is the clock's when the row is held, so starts follow the order of the claims.
def claim_ctes(worker: str, provided: str = "true", claimed_by: str = "NULL") -> str:
    """The claim for `worker` (a parameter), made only if `provided` holds; `claimed_by`: the
    id of the run whose store made it, or NULL."""
    return f"""
recorded AS (
    SELECT id FROM workers WHERE id = {worker} AND {provided} FOR KEY SHARE
), claimed AS (
    UPDATE calculations
    SET status = 'running', started_at = utc_text(), attempts = attempts + 1,
        worker_id = {worker}, claimed_by = {claimed_by}
    WHERE id = (
        SELECT id FROM calculations
        WHERE status = 'queued' AND EXISTS (SELECT FROM recorded)
        ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
    )
    RETURNING {COLUMNS}
)"""


CLAIMED = "EXISTS (SELECT FROM recorded) AS recorded, claimed.*"
ONE_ROW = "FROM (VALUES (1)) AS one LEFT JOIN claimed ON true"

CLAIM_NEXT = f"WITH {claim_ctes('$1')} SELECT {CLAIMED} {ONE_ROW}"

# Writes for one attempt of a run apply only while that attempt is the current one.
FENCE = "WHERE id = $1 AND attempts = $2 AND status = 'running' RETURNING id"

MARK_DONE = """
UPDATE calculations
SET status = 'done', result_size = $3, result_deflated = $4, result_crc = $5,
    duration = $6, finished_at = utc_text(), error = NULL
"""

# A kernel process stores its run and, in the same statement and commit, claims the next one
# for its worker ($7; NULL claims nothing): one round trip and one commit a run. Only once
# the store is made; the claimed run records which run's store claimed it, by which a store
# retried after its answer was lost finds what it claimed (CLAIMED_WITH).
STORE_AND_CLAIM = f"""
WITH stored AS ({MARK_DONE} {FENCE}),
{claim_ctes("$7", provided="EXISTS (SELECT FROM stored)", claimed_by="$1")}
SELECT EXISTS (SELECT FROM stored) AS stored, {CLAIMED} {ONE_ROW}
"""

CLAIMED_WITH = f"""
SELECT {COLUMNS} FROM calculations
WHERE claimed_by = $1 AND worker_id = $3 AND status = 'running' AND EXISTS (
    SELECT FROM calculations WHERE id = $1 AND attempts = $2 AND status = 'done'
)
"""

# Whether this attempt is the one that made the run done: a store retried after its answer
# was lost with the connection finds the row done already.
STORED_BY = "SELECT 1 FROM calculations WHERE id = $1 AND attempts = $2 AND status = 'done'"

# $5: when the worker saw the attempt end, by its clock (it frees the slot first, and the
# next run may start meanwhile), kept between the run's start and the database's now: the
# ISO-8601 texts of one shape compare as times.
MARK_FAILED = f"""
UPDATE calculations
SET status = 'failed', error = $3, duration = $4,
    finished_at = greatest(started_at, least(utc_text(), $5::text))
{FENCE}
"""

REQUEUE = f"""
UPDATE calculations SET status = 'queued', started_at = NULL, attempts = attempts - 1
{FENCE}
"""

REQUEUE_UNHELD = """
UPDATE calculations SET status = 'queued', started_at = NULL, attempts = attempts - 1,
    worker_id = NULL
WHERE worker_id = $1 AND status = 'running' AND claimed_by IS NULL
    AND NOT (id = ANY($2::bigint[]))
RETURNING id
"""

CANCEL = f"""
UPDATE calculations SET status = 'cancelled', finished_at = utc_text()
WHERE id = $1 AND status IN ('queued', 'running')
RETURNING {COLUMNS}
"""

ORPHANED = "status = 'running' AND (worker_id IS NULL OR worker_id = ANY($1::bigint[]))"

FAIL_EXHAUSTED = f"""
UPDATE calculations
SET status = 'failed', finished_at = utc_text(), worker_id = NULL,
    error = 'the run was interrupted ' || attempts || ' times by a crash, kill or stall of'
            || ' its server; it is not started again (MAX_ATTEMPTS = ' || $2::integer || ')'
WHERE {ORPHANED} AND attempts >= $2::integer
RETURNING id
"""

REQUEUE_ORPHANED = f"""
UPDATE calculations SET status = 'queued', started_at = NULL, worker_id = NULL
WHERE {ORPHANED}
RETURNING id
"""

REGISTER_WORKER = "INSERT INTO workers (host, pid, pid_started) VALUES ($1, $2, $3) RETURNING id"

HEARTBEAT = "UPDATE workers SET heartbeat_at = epoch_now() WHERE id = $1 RETURNING id"

LIST_WORKERS = "SELECT id, host, pid, pid_started, epoch_now() - heartbeat_at AS age FROM workers"

FORGET_WORKERS = "DELETE FROM workers WHERE id = ANY($1::bigint[])"

TOTAL = {
    False: "(SELECT sum(n) FROM calculation_counts)",
    True: "(SELECT sum(n) FROM calculation_counts WHERE status = $3)",
}

LIST_CALCULATIONS = {
    (order, filtered): f"""
SELECT id, name, created_at, status, {TOTAL[filtered]} AS total FROM calculations
{"WHERE status = $3" if filtered else ""}
ORDER BY created_at {order}, id {order}
LIMIT $1 OFFSET $2
"""
    for order in ("ASC", "DESC")
    for filtered in (False, True)
}

COUNT_CALCULATIONS = {
    False: "SELECT coalesce(sum(n), 0) FROM calculation_counts",
    True: "SELECT coalesce(sum(n), 0) FROM calculation_counts WHERE status = $1",
}

COUNT_BY_STATUS = "SELECT status, sum(n) FROM calculation_counts GROUP BY status"

# Cancelled, or deleted: either way its kernel is to stop.
CANCELLED_AMONG = """
SELECT id FROM unnest($1::bigint[]) AS asked (id)
WHERE NOT EXISTS (SELECT 1 FROM calculations c WHERE c.id = asked.id AND c.status <> 'cancelled')
"""

DELETE = "DELETE FROM calculations WHERE id = $1 RETURNING status"

# At most $3 finished runs, oldest first; SKIP LOCKED: two processes pruning at once (a
# DELETE with filters beside the retention) take different rows instead of waiting.
DELETE_FINISHED = """
DELETE FROM calculations WHERE id IN (
    SELECT id FROM calculations
    WHERE status IN ('done', 'failed', 'cancelled')
    AND ($1::text IS NULL OR status = $1)
    AND ($2::text IS NULL OR finished_at < $2)
    ORDER BY finished_at LIMIT $3 FOR UPDATE SKIP LOCKED
)
"""

# Rows stored before results were kept compact (migration 2) lose their JSON and CSV as
# they are, a few at a time.
COMPACT = """
UPDATE calculations
SET result_size = octet_length(result), result = NULL, result_csv = NULL
WHERE id IN (SELECT id FROM calculations WHERE result IS NOT NULL ORDER BY id LIMIT $1
             FOR UPDATE SKIP LOCKED)
"""

# One process prunes at a time: the others find this lock taken and skip their turn.
PRUNER_LOCK = 7316200001

HOP_COLUMNS = (
    "trace_id, hop, service, outcome, http_status, partner_status, detail,"
    " received_at, finished_at, payload"
)

ADD_TRACE = """
INSERT INTO pingpong_traces (trace_id, created_at) VALUES ($1, utc_text())
ON CONFLICT (trace_id) DO NOTHING
RETURNING id
"""

INSERT_HOP_ARGS = ("trace_id", "hop", "service", "outcome", "http_status", "detail", "payload_json")
INSERT_HOP = f"""
WITH now AS (SELECT utc_text() AS at)
INSERT INTO pingpong_hops
    (trace_id, hop, service, outcome, http_status, detail, received_at, finished_at, payload)
SELECT $1, $2, $3, $4, $5, $6, now.at, CASE WHEN $4::text IS NULL THEN NULL ELSE now.at END, $7
FROM now
ON CONFLICT (trace_id, hop) DO NOTHING
RETURNING {HOP_COLUMNS}
"""

FINISH_HOP_ARGS = ("trace_id", "hop", "outcome", "partner_status", "detail")
FINISH_HOP = f"""
UPDATE pingpong_hops
SET outcome = $3, partner_status = $4, detail = $5, finished_at = utc_text()
WHERE trace_id = $1 AND hop = $2 AND outcome IS NULL
RETURNING {HOP_COLUMNS}
"""

LIST_HOPS = f"SELECT {HOP_COLUMNS} FROM pingpong_hops WHERE trace_id = $1 ORDER BY hop"

_STOPPING_SQL = ", ".join(f"'{outcome}'" for outcome in sorted(STOPPING))
LIST_TRACES = f"""
SELECT t.trace_id, t.created_at,
    (SELECT count(*) FROM pingpong_hops h WHERE h.trace_id = t.trace_id) AS hops,
    EXISTS (SELECT 1 FROM pingpong_hops h WHERE h.trace_id = t.trace_id
            AND (h.outcome IN ({_STOPPING_SQL}) OR h.partner_status = 400)) AS stopped
FROM pingpong_traces t
ORDER BY t.created_at DESC, t.id DESC
LIMIT $1 OFFSET $2
"""

TRACE_CREATED_AT = "SELECT created_at FROM pingpong_traces WHERE trace_id = $1"

COUNT_TRACES = "SELECT count(*) FROM pingpong_traces"
