-- Resumable first loads (issue 17 part 1). ``resume``: the progress a run committed so far, for the
-- next run to continue from should it die (a by-number read's next page and the keys of the page
-- before it; or the checkpoint a keyset read committed). ``resumed_from``/``resumed_at_rows``: the
-- run a resumed run continued, and the rows loaded before it began.
ALTER TABLE sync_runs
    ADD COLUMN resume jsonb,
    ADD COLUMN resumed_from uuid,
    ADD COLUMN resumed_at_rows bigint;
