-- Schema 4: iterations of subflows' retry controllers. A task inside subflows with a
-- controller records the iteration of each, outermost first, as a JSON array (`[2, 1]`: the
-- outer subflow's second iteration, the inner one's first); a resumed run continues in the
-- iteration its tasks last recorded.
ALTER TABLE tasks ADD COLUMN iterations TEXT;
ALTER TABLE transitions ADD COLUMN iterations TEXT;
