-- Schema 1: one row per run, one per task of a run, one per state change.
-- Timestamps are UTC ISO-8601 text; JSON columns hold JSON text (query them with json_extract).
CREATE TABLE runs (
    id            TEXT PRIMARY KEY,
    flow          TEXT NOT NULL,
    flow_path     TEXT,                -- absolute path of the flow file, NULL for flows built in code
    flow_hash     TEXT,                -- sha256 of the flow file's bytes
    plugins       TEXT NOT NULL,       -- JSON [{task, path, sha256}]
    initial_store TEXT NOT NULL,       -- JSON object
    state         TEXT NOT NULL,       -- PENDING RUNNING SUCCESS REVERTING REVERTED FAILURE
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    finished_at   TEXT,
    exit_reason   TEXT,
    final_store   TEXT,                -- JSON object, once finished
    resumes       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_by_created ON runs (created_at);
CREATE INDEX runs_by_state ON runs (state);

CREATE TABLE tasks (
    run_id             TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    idx                INTEGER NOT NULL,   -- position in the flow, from 0
    name               TEXT NOT NULL,
    state              TEXT NOT NULL,
    args               TEXT,               -- JSON object the task executed with
    outcome            TEXT,               -- JSON {"result": "<raw text>"} or {"error": {...}}: what revert gets
    result             TEXT,               -- JSON result, on SUCCESS
    error              TEXT,               -- JSON task error of execute
    revert_error       TEXT,               -- JSON task error of revert
    duration_ms        REAL,               -- execute
    revert_duration_ms REAL,
    executions         INTEGER NOT NULL DEFAULT 0,
    reverts            INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, idx)
);

CREATE TABLE transitions (
    seq         INTEGER PRIMARY KEY,        -- order of recording
    run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task_idx    INTEGER,                   -- NULL for a flow transition
    task        TEXT,
    from_state  TEXT NOT NULL,
    to_state    TEXT NOT NULL,
    at          TEXT NOT NULL,
    duration_ms REAL NOT NULL              -- time in from_state (flow: since the run started)
);
CREATE INDEX transitions_by_run ON transitions (run_id, seq);
