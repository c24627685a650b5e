-- Schema 3: attempts of retried tasks. A task's `attempt` is the execution last started
-- (from 1) and `retry_at` (unix seconds) when its next attempt is due while it waits to be
-- retried; each transition names its attempt, the error it carries and, on RETRYING, the due
-- time of the next attempt, so every attempt and its backoff can be read back.
ALTER TABLE tasks ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN retry_at REAL;
ALTER TABLE transitions ADD COLUMN attempt INTEGER;
ALTER TABLE transitions ADD COLUMN error TEXT;       -- JSON task error, on FAILURE, RETRYING, REVERT_FAILURE
ALTER TABLE transitions ADD COLUMN retry_at REAL;    -- unix seconds, on RETRYING
ALTER TABLE transitions ADD COLUMN backoff_ms REAL;  -- the pause until then, on RETRYING
