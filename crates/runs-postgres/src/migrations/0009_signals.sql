-- Schema 9: signals sent to runs, as in SQLite's schema 10: kept from when they come until a
-- wait entry of the run takes them (`taken_by`; idempotent per entry).
CREATE TABLE signals (
    seq      bigserial PRIMARY KEY,
    run_id   text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    name     text NOT NULL,
    data     text NOT NULL,
    at       text NOT NULL,
    taken_by text
);
CREATE INDEX signals_by_run ON signals (run_id, name, seq);

-- Whether WAITING run `run` can go on: one of its waiting tasks' end (a timer's due time, a
-- signal wait's timeout: `retry_at`) passed, or a signal it waits for (named in the task's
-- `result`, `{"signal": NAME}`) came and is not taken. Workers claim such runs; the others
-- hold no executor until then.
CREATE FUNCTION flowhost_wakes(run text) RETURNS boolean LANGUAGE sql VOLATILE AS $$
    SELECT EXISTS (
        SELECT 1 FROM tasks t
         WHERE t.run_id = run AND t.state = 'WAITING'
           AND (t.retry_at <= flowhost_now()
                OR EXISTS (SELECT 1 FROM signals s
                            WHERE s.run_id = run AND s.taken_by IS NULL
                              AND s.name = (t.result::jsonb ->> 'signal'))))
$$;
