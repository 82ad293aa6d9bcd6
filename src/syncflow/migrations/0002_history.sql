-- Record history is opt-in per entity (issue: audit trail).
ALTER TABLE entities ADD COLUMN history_enabled boolean NOT NULL DEFAULT false;
