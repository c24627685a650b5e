-- Schema 5: the W3C traceparent a run was submitted under (`flowhost submit --traceparent`,
-- the `traceparent` header of `POST /v1/flows/{name}/runs` on a queueing `flowhost serve`).
-- The worker that claims the run, or takes it over, makes its spans children of that span,
-- so the run joins the submitter's trace. NULL: the run starts a trace of its own.
ALTER TABLE runs ADD COLUMN traceparent text;
