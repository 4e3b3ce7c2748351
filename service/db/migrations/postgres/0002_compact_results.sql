-- Compact results, as SQLite's migration 3: only the deflated JSON is stored, the JSON and
-- CSV as they are no longer (the CSV is made from the JSON when asked for), and result_size
-- keeps the JSON's length. Rows stored before stay readable and are emptied a few at a time
-- in the background (service/maintenance.py).
ALTER TABLE calculations ADD COLUMN result_size bigint;
CREATE INDEX calculations_uncompacted ON calculations (id) WHERE result IS NOT NULL;
-- Deletes by age (RETENTION, and DELETE with finished_before) walk the finished runs oldest
-- first.
CREATE INDEX calculations_finished ON calculations (finished_at)
    WHERE status IN ('done', 'failed', 'cancelled');

-- A deleted run: a worker computing it stops its kernel as for a cancel, and a ?wait on it
-- answers at once (with the 404 it now gets).
CREATE OR REPLACE FUNCTION calculations_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    my_stripe integer := pg_backend_pid() % 16;
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE calculation_counts c SET n = c.n + 1
        WHERE c.status = NEW.status AND c.stripe = my_stripe;
        PERFORM pg_notify('calculations', 'queued');
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        UPDATE calculation_counts c SET n = c.n - 1
        WHERE c.status = OLD.status AND c.stripe = my_stripe;
        IF OLD.status = 'running' THEN
            PERFORM pg_notify('calculations', 'cancelled ' || OLD.id);
        END IF;
        IF OLD.status IN ('queued', 'running') THEN
            PERFORM pg_notify('calculations', 'ended ' || OLD.id);
        END IF;
        RETURN NULL;
    END IF;
    UPDATE calculation_counts c SET n = c.n + CASE WHEN c.status = NEW.status THEN 1 ELSE -1 END
    WHERE c.status IN (OLD.status, NEW.status) AND c.stripe = my_stripe;
    IF NEW.status = 'queued' THEN
        PERFORM pg_notify('calculations', 'queued');
    ELSIF NEW.status IN ('done', 'failed', 'cancelled') THEN
        IF NEW.status = 'cancelled' AND OLD.status = 'running' THEN
            PERFORM pg_notify('calculations', 'cancelled ' || NEW.id);
        END IF;
        PERFORM pg_notify('calculations', 'ended ' || NEW.id);
    END IF;
    RETURN NULL;
END
$$;
