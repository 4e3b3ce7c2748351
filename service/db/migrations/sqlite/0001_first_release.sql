-- Schema version 1: the schema of the first release (commit 0575798), as it shipped. A
-- file without a recorded version and without calculations.worker_id is at this version.
-- A new file is made from the top-level schema.sql, never from this file and those after it;
-- tests/test_migrations.py checks that both ways end at the same schema.

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
    result_crc  INTEGER,  -- CRC-32 of result
    -- The large columns come last, so that reading any other column never walks their
    -- overflow pages; each is read by walking the pages of those before it, so the smallest
    -- and most read (gzip is what browsers ask for) comes first.
    result_deflated BLOB, -- result, compressed once for gzip answers (see kernel.Output)
    result      BLOB,     -- JSON in UTF-8, served as it is
    result_csv  TEXT      -- the same rows as CSV
);

-- The consumer's claim: the oldest queued row.
CREATE INDEX IF NOT EXISTS calculations_status_id ON calculations (status, id);
-- The list, in launch order either way, with and without a status filter. They hold every
-- column the list shows, so a page is read from the index alone.
CREATE INDEX IF NOT EXISTS calculations_listed ON calculations (created_at, id, status, name);
CREATE INDEX IF NOT EXISTS calculations_listed_by_status
    ON calculations (status, created_at, id, name);
CREATE UNIQUE INDEX IF NOT EXISTS calculations_idempotency_key
    ON calculations (idempotency_key) WHERE idempotency_key IS NOT NULL;

-- How many runs are in each status, kept by triggers in the same transaction as the change,
-- so that totals, the queue depth and the MAX_QUEUED check cost one row read, not a scan.
CREATE TABLE IF NOT EXISTS calculation_counts (
    status  TEXT PRIMARY KEY,
    n       INTEGER NOT NULL
);
-- Counted from the table the first time only: a database made before this table existed.
INSERT INTO calculation_counts (status, n)
SELECT s.status, (SELECT count(*) FROM calculations c WHERE c.status = s.status)
FROM (SELECT 'queued' AS status UNION ALL SELECT 'running' UNION ALL SELECT 'done'
      UNION ALL SELECT 'failed' UNION ALL SELECT 'cancelled') AS s
WHERE true
ON CONFLICT (status) DO NOTHING;

CREATE TRIGGER IF NOT EXISTS calculations_counted_insert AFTER INSERT ON calculations
BEGIN
    UPDATE calculation_counts SET n = n + 1 WHERE status = NEW.status;
END;

CREATE TRIGGER IF NOT EXISTS calculations_counted_update AFTER UPDATE OF status ON calculations
WHEN OLD.status <> NEW.status
BEGIN
    UPDATE calculation_counts SET n = n - 1 WHERE status = OLD.status;
    UPDATE calculation_counts SET n = n + 1 WHERE status = NEW.status;
END;

CREATE TRIGGER IF NOT EXISTS calculations_counted_delete AFTER DELETE ON calculations
BEGIN
    UPDATE calculation_counts SET n = n - 1 WHERE status = OLD.status;
END;

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
