-- Schema 3 (contract 0.2): what a task reports beside its result.
ALTER TABLE tasks ADD COLUMN revert_result TEXT;  -- JSON result of revert, on REVERTED
ALTER TABLE tasks ADD COLUMN progress      TEXT;  -- JSON {"fraction", "details"}: the last progress reported
