-- The history table's name is chosen by discovery, stored, and never reused
-- as a data table (issue: an API named like another entity's history table).
-- Existing entities keep the name their history table already has.
ALTER TABLE entities ADD COLUMN history_table varchar(63);
UPDATE entities SET history_table = CASE
    WHEN octet_length(target_table || '__history') <= 63 THEN target_table || '__history'
    ELSE left(target_table || '__history', 54) || '_'
         || left(encode(sha256(convert_to(target_table || '__history', 'UTF8')), 'hex'), 8)
END;
ALTER TABLE entities ADD CONSTRAINT entities_history_table_key UNIQUE (target_schema, history_table);
