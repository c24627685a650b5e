-- Schema 6: runs counted by flow and state as they are recorded, changed and deleted, so that
-- a count (`/metrics`) reads a few rows instead of every run.
CREATE TABLE run_counts (
    flow  TEXT NOT NULL,
    state TEXT NOT NULL,
    runs  INTEGER NOT NULL,
    PRIMARY KEY (flow, state)
) WITHOUT ROWID;
INSERT INTO run_counts (flow, state, runs) SELECT flow, state, count(*) FROM runs GROUP BY flow, state;
CREATE TRIGGER run_counts_insert AFTER INSERT ON runs BEGIN
    INSERT INTO run_counts (flow, state, runs) VALUES (NEW.flow, NEW.state, 1)
        ON CONFLICT (flow, state) DO UPDATE SET runs = runs + 1;
END;
CREATE TRIGGER run_counts_update AFTER UPDATE OF flow, state ON runs
    WHEN OLD.flow IS NOT NEW.flow OR OLD.state IS NOT NEW.state BEGIN
    UPDATE run_counts SET runs = runs - 1 WHERE flow = OLD.flow AND state = OLD.state;
    INSERT INTO run_counts (flow, state, runs) VALUES (NEW.flow, NEW.state, 1)
        ON CONFLICT (flow, state) DO UPDATE SET runs = runs + 1;
END;
CREATE TRIGGER run_counts_delete AFTER DELETE ON runs BEGIN
    UPDATE run_counts SET runs = runs - 1 WHERE flow = OLD.flow AND state = OLD.state;
END;
