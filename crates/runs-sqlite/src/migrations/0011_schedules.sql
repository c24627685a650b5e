-- Schema 8 (numbered 0011 among the migrations of this round): the schedules `flowhost serve`
-- ticks, one row per entry of a flow's `schedule` (by flow name and position). The run a tick
-- starts carries the idempotency key `schedule:INDEX:TICK`, so that serve processes sharing the
-- database start one run per tick whoever gets there first; this row only says how far the
-- schedule got, for catching up and for listing. Times are UTC RFC 3339, whole seconds.
CREATE TABLE schedules (
    flow      TEXT NOT NULL,
    idx       INTEGER NOT NULL,
    cron      TEXT NOT NULL,   -- the expression last seen for it
    since     TEXT NOT NULL,   -- first seen by a serve: no tick before it was ever due
    last_tick TEXT,            -- the latest tick a run was started for
    last_run  TEXT,            -- that run's id
    PRIMARY KEY (flow, idx)
);
