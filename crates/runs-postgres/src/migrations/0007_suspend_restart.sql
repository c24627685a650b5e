-- Schema 7: suspend and restart. `flowhost runs suspend` (or the service) sets
-- `suspend_requested`; the worker holding the run reads it and suspends the run (calls in flight
-- finish, nothing new starts). Resuming the run clears it. A SUSPENDED run that was queued goes
-- back to the workers by `resume_requested`: the next claim takes it (and clears the flag).
-- `restarted_from` is the run a run restarts (`flowhost runs restart --from TASK`), read both ways.
ALTER TABLE runs ADD COLUMN suspend_requested boolean NOT NULL DEFAULT false;
ALTER TABLE runs ADD COLUMN resume_requested boolean NOT NULL DEFAULT false;
ALTER TABLE runs ADD COLUMN restarted_from text;
CREATE INDEX runs_restarted_from ON runs (restarted_from) WHERE restarted_from IS NOT NULL;
