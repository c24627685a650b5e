-- Schema 3: cancellation across hosts. `flowhost serve` (or anyone with the database) asks a
-- run to stop by setting `cancel_requested`; the worker holding the run sees it at its next
-- look at the queue and cancels the run on its engine: it stops before its next task and
-- reverts what ran. A run not yet claimed is cancelled by the worker that claims it.
ALTER TABLE runs ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false;
