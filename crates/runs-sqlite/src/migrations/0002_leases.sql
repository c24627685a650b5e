-- Schema 2: the lease of each run — which executor may write its journal. A lease is live
-- while lease_owner is set and lease_expires (unix seconds) lies ahead; lease_token grows by
-- one at every take-over and is checked by every write (fencing).
ALTER TABLE runs ADD COLUMN lease_token   INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN lease_owner   TEXT;     -- executor id
ALTER TABLE runs ADD COLUMN lease_host    TEXT;
ALTER TABLE runs ADD COLUMN lease_pid     INTEGER;
ALTER TABLE runs ADD COLUMN lease_since   REAL;     -- unix seconds
ALTER TABLE runs ADD COLUMN lease_expires REAL;     -- unix seconds
