-- The whole database schema. Applied at every start-up, so every statement is re-runnable.
-- The calculations table is also the queue: a row moves queued -> running -> done | failed.

CREATE TABLE IF NOT EXISTS calculations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'running', 'done', 'failed')),
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
    -- Last, so that reading the other columns never touches the overflow pages of a large result.
    result      TEXT
);

-- The consumer's claim: the oldest queued row.
CREATE INDEX IF NOT EXISTS calculations_status_id ON calculations (status, id);
-- The list, in launch order either way, with and without a status filter.
CREATE INDEX IF NOT EXISTS calculations_created ON calculations (created_at, id);
CREATE INDEX IF NOT EXISTS calculations_status_created ON calculations (status, created_at, id);
