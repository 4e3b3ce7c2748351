-- The whole database schema. Applied at every start-up, so every statement is re-runnable.
-- The calculations table is also the queue: a row moves queued -> running -> done | failed.

CREATE TABLE IF NOT EXISTS calculations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    date_start  TEXT NOT NULL,
    date_fin    TEXT NOT NULL,
    lag         INTEGER NOT NULL,
    seed        INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    started_at  TEXT,
    finished_at TEXT,
    duration    REAL,
    error       TEXT,
    -- A client's Idempotency-Key and the hash of the body it came with.
    idempotency_key TEXT,
    request_hash    TEXT,
    -- Last, so that reading the other columns never touches the overflow pages of a large result.
    result      TEXT,   -- JSON text, served as it is
    result_csv  TEXT    -- the same rows as CSV
);

-- The consumer's claim: the oldest queued row.
CREATE INDEX IF NOT EXISTS calculations_status_id ON calculations (status, id);
-- The list, in launch order either way, with and without a status filter.
CREATE INDEX IF NOT EXISTS calculations_created ON calculations (created_at, id);
CREATE INDEX IF NOT EXISTS calculations_status_created ON calculations (status, created_at, id);
CREATE UNIQUE INDEX IF NOT EXISTS calculations_idempotency_key
    ON calculations (idempotency_key) WHERE idempotency_key IS NOT NULL;

-- The ping-pong pipeline: one row per trace, one row per hop a service handled.
CREATE TABLE IF NOT EXISTS pingpong_traces (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    trace_id    TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);

-- The list, newest first.
CREATE INDEX IF NOT EXISTS pingpong_traces_created ON pingpong_traces (created_at, id);

CREATE TABLE IF NOT EXISTS pingpong_hops (
    trace_id        TEXT NOT NULL,  -- pingpong_traces.trace_id
    hop             INTEGER NOT NULL CHECK (hop >= 1),
    service         TEXT NOT NULL CHECK (service IN ('a', 'b')),
    -- NULL while the service is still forwarding the payload to its partner.
    outcome         TEXT CHECK (outcome IN ('forwarded', 'refused', 'invalid',
                        'partner_unreachable', 'partner_error', 'max_hops', 'interrupted')),
    http_status     INTEGER NOT NULL,  -- what this service answered the sender
    partner_status  INTEGER,           -- what the partner answered the forward
    detail          TEXT,
    received_at     TEXT NOT NULL,
    finished_at     TEXT,
    payload         TEXT NOT NULL,     -- the payload as received, JSON text
    PRIMARY KEY (trace_id, hop)
);
