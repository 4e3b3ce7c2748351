-- Compact results: a run stores its JSON deflated (result_deflated, as before) and no longer
-- the JSON or the CSV as they are, which were four fifths of its bytes: a plain answer is
-- inflated, and the CSV made from the JSON, when asked for. result_size keeps the JSON's
-- length, which the gzip trailer needs. Rows stored before stay readable as they are, and
-- are emptied a few at a time in the background (service/maintenance.py): this migration
-- itself changes no row, so that it holds the writer no longer on a file of many runs than
-- on an empty one.
ALTER TABLE calculations ADD COLUMN result_size INTEGER;
-- The rows the background rewrite still has to do, found without a scan.
CREATE INDEX calculations_uncompacted ON calculations (id) WHERE result IS NOT NULL;
-- Deletes by age (RETENTION, and DELETE with finished_before) walk the finished runs oldest
-- first.
CREATE INDEX calculations_finished ON calculations (finished_at)
    WHERE status IN ('done', 'failed', 'cancelled');
