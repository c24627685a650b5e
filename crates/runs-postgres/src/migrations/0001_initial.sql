-- Schema 1 of the PostgreSQL run database: the SQLite schema (runs, tasks, transitions, the
-- lease columns), plus what many hosts share: the queue of submitted runs, the blobs (flow
-- files and plugins, content-addressed by SHA-256) and the workers.
-- Timestamps shown to people are UTC ISO-8601 text, as in SQLite; lease times are unix
-- seconds on the database's clock, so hosts whose clocks drift still agree on expiry.
CREATE FUNCTION flowhost_now() RETURNS double precision LANGUAGE sql VOLATILE
    AS $$ SELECT extract(epoch FROM clock_timestamp())::double precision $$;
CREATE FUNCTION flowhost_ts(seconds double precision) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT to_char(to_timestamp(seconds) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') $$;

CREATE TABLE runs (
    seq           bigserial UNIQUE,    -- order of creation
    id            text PRIMARY KEY,
    flow          text NOT NULL,
    flow_path     text,                -- absolute path of the flow file where it was run or submitted
    flow_hash     text,                -- sha256 of the flow file's bytes (a blob, for submitted runs)
    plugins       text NOT NULL,       -- JSON [{task, path, sha256}]
    initial_store text NOT NULL,       -- JSON object
    state         text NOT NULL,       -- PENDING RUNNING SUCCESS REVERTING REVERTED FAILURE
    created_at    text NOT NULL,
    updated_at    text NOT NULL,
    finished_at   text,
    exit_reason   text,
    final_store   text,
    resumes       integer NOT NULL DEFAULT 0,
    queued        boolean NOT NULL DEFAULT false,   -- submitted: workers claim it
    lease_token   bigint NOT NULL DEFAULT 0,
    lease_owner   text,
    lease_host    text,
    lease_pid     bigint,
    lease_since   double precision,
    lease_expires double precision
);
CREATE INDEX runs_by_created ON runs (created_at);
CREATE INDEX runs_by_state ON runs (state);
CREATE INDEX runs_claimable ON runs (seq) WHERE queued AND state IN ('PENDING', 'RUNNING', 'REVERTING');
CREATE INDEX runs_by_lease_owner ON runs (lease_owner) WHERE lease_owner IS NOT NULL;

CREATE TABLE tasks (
    run_id             text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    idx                integer NOT NULL,
    name               text NOT NULL,
    state              text NOT NULL,
    args               text,
    outcome            text,
    result             text,
    error              text,
    revert_error       text,
    duration_ms        double precision,
    revert_duration_ms double precision,
    executions         integer NOT NULL DEFAULT 0,
    reverts            integer NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, idx)
);

CREATE TABLE transitions (
    seq         bigserial PRIMARY KEY,
    run_id      text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task_idx    integer,
    task        text,
    from_state  text NOT NULL,
    to_state    text NOT NULL,
    at          text NOT NULL,
    duration_ms double precision NOT NULL
);
CREATE INDEX transitions_by_run ON transitions (run_id, seq);

-- Flow files and plugins of submitted runs, stored once however many runs use them.
CREATE TABLE blobs (
    sha256    text PRIMARY KEY,
    bytes     bytea NOT NULL,
    stored_at text NOT NULL
);

-- Every `flowhost worker` that ever started; heartbeat is unix seconds on the database's clock.
CREATE TABLE workers (
    id          text PRIMARY KEY,
    host        text NOT NULL,
    pid         bigint NOT NULL,
    started_at  text NOT NULL,
    heartbeat   double precision NOT NULL,
    concurrency integer NOT NULL,
    flows       text NOT NULL,        -- JSON [names], empty: every flow
    stopped_at  text
);
