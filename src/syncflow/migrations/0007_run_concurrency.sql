-- How hard each run pushed its connector (issue 16): the source pushing back (429, 503, 504,
-- timeouts), the connector's adaptive concurrency limit (highest and mean over the run's requests)
-- and the most requests of the connector in flight at once that the run saw.
ALTER TABLE sync_runs
    ADD COLUMN http_throttled integer,
    ADD COLUMN concurrency_max integer,
    ADD COLUMN concurrency_avg double precision,
    ADD COLUMN in_flight_max integer;
