-- Schema 4 (contract 0.2), as SQLite's schema 5: what a task reports beside its result.
ALTER TABLE tasks ADD COLUMN revert_result text;  -- JSON result of revert, on REVERTED
ALTER TABLE tasks ADD COLUMN progress      text;  -- JSON {"fraction", "details"}: the last progress reported
