-- Schema 7 (numbered 0010 among the migrations of this round). The schedules `flowhost serve`
-- ticks, one row per entry of a flow's `schedule` (by flow name and position). The run a tick
-- starts carries the idempotency key `schedule:INDEX:TICK`, so that serve processes sharing the
-- database start one run per tick whoever gets there first; this row only says how far the
-- schedule got, for catching up and for listing. Times are UTC RFC 3339, whole seconds.
CREATE TABLE schedules (
    flow      text NOT NULL,
    idx       integer NOT NULL,
    cron      text NOT NULL,
    since     text NOT NULL,
    last_tick text,
    last_run  text,
    PRIMARY KEY (flow, idx)
);

-- Queue limits: a flow's `concurrency` and `rate` as its latest submission declared them. The
-- claim locks the rows of the flows it may take (FOR UPDATE), so claims of a limited flow are
-- counted one after the other across all workers.
CREATE TABLE flow_limits (
    flow        text PRIMARY KEY,
    concurrency integer,          -- runs executing at once (a live lease), all workers together
    rate_runs   integer,          -- starts allowed per period …
    rate_per_ms bigint            -- … of this many milliseconds
);

-- When a worker first claimed the run (flowhost_now(), seconds): its start, which `rate` counts.
ALTER TABLE runs ADD COLUMN claimed_at double precision;
CREATE INDEX runs_claimed_by_flow ON runs (flow, claimed_at) WHERE claimed_at IS NOT NULL;
