-- Schema 8: suspend requests and restart links. `flowhost runs suspend` (or the service) sets
-- `suspend_requested` on a run; the executor holding it reads it and suspends the run, on any
-- process sharing the file. Resuming the run clears it. `restarted_from` is the run a run
-- restarts (`flowhost runs restart --from TASK`), read both ways.
ALTER TABLE runs ADD COLUMN suspend_requested INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN restarted_from TEXT;
CREATE INDEX runs_restarted_from ON runs (restarted_from) WHERE restarted_from IS NOT NULL;
