-- Schema 2: attempts of retried tasks and subflows' iterations, as SQLite's schemas 3 and 4. A task's `attempt` is the
-- execution last started (from 1) and `retry_at` (unix seconds) when its next attempt is due
-- while it waits to be retried; each transition names its attempt, the error it carries and,
-- on RETRYING, the due time of the next attempt, so every attempt and its backoff can be read back.
ALTER TABLE tasks ADD COLUMN attempt integer NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN retry_at double precision;
ALTER TABLE transitions ADD COLUMN attempt integer;
ALTER TABLE transitions ADD COLUMN error text;                  -- JSON task error, on FAILURE, RETRYING, REVERT_FAILURE
ALTER TABLE transitions ADD COLUMN retry_at double precision;   -- unix seconds, on RETRYING
ALTER TABLE transitions ADD COLUMN backoff_ms double precision; -- the pause until then, on RETRYING
ALTER TABLE tasks ADD COLUMN iterations text;                   -- JSON [iteration per controller], outermost first
ALTER TABLE transitions ADD COLUMN iterations text;
