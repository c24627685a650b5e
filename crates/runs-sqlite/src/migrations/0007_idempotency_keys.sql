-- Schema 7: the idempotency key a run was started with. At most one run of a flow holds a key
-- (runs without one are NULL, and NULLs never collide), so that starts racing on one key record
-- exactly one run; the key goes with its run when the run is pruned.
ALTER TABLE runs ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX runs_idempotency_key ON runs (flow, idempotency_key);
