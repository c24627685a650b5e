-- Schema 8, as SQLite's schema 9: map fan-out and run priorities. Each element's call of a
-- task inside a map has a row of its own (state, arguments, outcome, result), which a resumed
-- run reads to run only the elements not done; each transition names its element (NULL
-- outside maps). Workers claim queued runs by priority, higher first, then submission order.
CREATE TABLE elements (
    run_id  text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    idx     integer NOT NULL,
    element bigint NOT NULL,
    state   text NOT NULL,
    args    text,
    outcome text,
    result  text,
    error   text,
    PRIMARY KEY (run_id, idx, element)
);
ALTER TABLE transitions ADD COLUMN element bigint;
ALTER TABLE runs ADD COLUMN priority bigint NOT NULL DEFAULT 0;
CREATE INDEX runs_claimable_by_priority ON runs (priority DESC, seq)
    WHERE queued AND state IN ('PENDING', 'RUNNING', 'REVERTING');
