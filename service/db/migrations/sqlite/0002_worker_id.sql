-- Leases: each run records the worker computing it, and each worker its heartbeat. Files
-- made before this had neither; a run with no worker is rescued as an orphan.
ALTER TABLE calculations ADD COLUMN worker_id INTEGER;

CREATE TABLE IF NOT EXISTS workers (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    pid_started  INTEGER NOT NULL,
    started_at   TEXT NOT NULL,
    heartbeat_at REAL NOT NULL
);
