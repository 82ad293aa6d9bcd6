-- What each run asked of the source: requests, retries and the seconds spent in HTTP
-- (issue 14: these reached only the --json output, never the run record).
ALTER TABLE sync_runs
    ADD COLUMN http_requests integer,
    ADD COLUMN http_retries integer,
    ADD COLUMN http_seconds double precision;
