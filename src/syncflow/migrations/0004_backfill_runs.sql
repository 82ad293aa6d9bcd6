-- Targeted backfills (issue 17): `sync C.SLUG --from-rowversion V` records its
-- run with kind 'backfill'.
ALTER TABLE sync_runs DROP CONSTRAINT sync_runs_kind_check;
ALTER TABLE sync_runs ADD CONSTRAINT sync_runs_kind_check
    CHECK (kind IN ('sync', 'full_refresh', 'backfill'));
