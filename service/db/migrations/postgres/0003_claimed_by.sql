-- Which run's store claimed a run: the id of the run a kernel process stored as it claimed
-- this one, NULL for a claim made on its own. A store retried after its answer was lost
-- finds by it what it claimed. Before, it matched the claim's start to the stored run's
-- finish, which therefore both came from the statement's start, before the row was claimed:
-- two kernel processes claiming together could record starts in the other order than their
-- claims. Rows from before hold NULL; a release without this column claims as it did.
ALTER TABLE calculations ADD COLUMN claimed_by bigint;
