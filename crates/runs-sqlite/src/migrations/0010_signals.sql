-- Schema 10: signals sent to runs (`flowhost runs signal`, `POST /v1/runs/{id}/signals/{name}`).
-- A signal is kept from when it comes — before the run reaches its wait, too — until a wait
-- entry of the run takes it (`taken_by`, the entry's name: taking is idempotent per entry, so a
-- run interrupted before its wait's SUCCESS was recorded takes the same signal again). A
-- waiting task's record says what it waits for: its `result` holds `{"signal": NAME}` and its
-- `retry_at` when the wait ends.
CREATE TABLE signals (
    seq      INTEGER PRIMARY KEY,                                   -- order of arrival
    run_id   TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    name     TEXT NOT NULL,
    data     TEXT NOT NULL,                                         -- JSON
    at       TEXT NOT NULL,
    taken_by TEXT                                                   -- the wait entry that took it
);
CREATE INDEX signals_by_run ON signals (run_id, name, seq);
