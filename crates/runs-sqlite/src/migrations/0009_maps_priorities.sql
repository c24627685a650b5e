-- Schema 9: map fan-out and run priorities. A task inside a map runs once per element of a
-- list: each element's call has a row of its own (its state, the arguments and outcome its
-- revert gets, its result), which is what a resumed run reads to run only the elements not
-- done; each transition names the element it belongs to (NULL outside maps). A run's
-- priority orders the runs waiting for a worker: higher first, then in submission order.
CREATE TABLE elements (
    run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    idx     INTEGER NOT NULL,   -- the task's position in the flow
    element INTEGER NOT NULL,   -- the element's position in the list, from 0
    state   TEXT NOT NULL,
    args    TEXT,               -- JSON object the call executed with
    outcome TEXT,               -- what its revert gets
    result  TEXT,               -- JSON result, on SUCCESS
    error   TEXT,               -- JSON task error, on FAILURE or REVERT_FAILURE
    PRIMARY KEY (run_id, idx, element)
) WITHOUT ROWID;
ALTER TABLE transitions ADD COLUMN element INTEGER;
ALTER TABLE runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
