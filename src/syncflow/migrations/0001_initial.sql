-- SyncFlow metadata schema. Runs with search_path set to the configured
-- metadata schema (default "bridge"), so names here are unqualified.
-- Adapted from the design: timestamptz everywhere, no plaintext token (only
-- the name of the environment variable that holds it).

CREATE TABLE connectors (
    uid           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name          varchar(100) NOT NULL UNIQUE,
    base_url      varchar(500) NOT NULL,
    token_env     text,
    target_schema varchar(63) NOT NULL,
    verify_tls    text NOT NULL DEFAULT 'true',
    is_active     boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE entities (
    uid                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    connector_uid         uuid NOT NULL REFERENCES connectors(uid) ON DELETE CASCADE,
    slug                  varchar(200) NOT NULL,
    api_name              varchar(200) NOT NULL DEFAULT '',
    description           text NOT NULL DEFAULT '',
    delta_strategy        varchar(20) NOT NULL DEFAULT 'full'
                          CHECK (delta_strategy IN ('full', 'rowversion', 'hash')),
    -- PostgreSQL names of the business-key columns, in order
    business_keys         jsonb NOT NULL DEFAULT '[]',
    target_schema         varchar(63) NOT NULL,
    target_table          varchar(63) NOT NULL,
    -- [{api_name, source_name, pg_name, data_type, pg_type, is_nullable,
    --   is_business_key, retired}]; pg_name never changes once assigned
    columns               jsonb NOT NULL DEFAULT '[]',
    syncable              boolean NOT NULL DEFAULT true,
    unsyncable_reason     text,
    -- a breaking schema change waiting for the operator, and its plan
    needs_attention       text,
    pending_change        jsonb,
    missing_at_source     boolean NOT NULL DEFAULT false,
    sync_enabled          boolean NOT NULL DEFAULT true,
    sync_interval_seconds int CHECK (sync_interval_seconds > 0),
    page_size             int CHECK (page_size > 0),
    last_sync_at          timestamptz,
    last_sync_status      varchar(20),
    last_success_at       timestamptz,
    last_rowversion       text,
    consecutive_failures  int NOT NULL DEFAULT 0,
    discovered_at         timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    UNIQUE (connector_uid, slug),
    UNIQUE (target_schema, target_table)
);

CREATE TABLE sync_runs (
    uid               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    entity_uid        uuid NOT NULL REFERENCES entities(uid) ON DELETE CASCADE,
    kind              varchar(20) NOT NULL DEFAULT 'sync' CHECK (kind IN ('sync', 'full_refresh')),
    started_at        timestamptz NOT NULL DEFAULT now(),
    completed_at      timestamptz,
    status            varchar(20) NOT NULL
                      CHECK (status IN ('running', 'success', 'partial', 'failed', 'abandoned', 'cancelled')),
    records_fetched   bigint NOT NULL DEFAULT 0,
    records_inserted  bigint NOT NULL DEFAULT 0,
    records_updated   bigint NOT NULL DEFAULT 0,
    records_unchanged bigint NOT NULL DEFAULT 0,
    records_deleted   bigint NOT NULL DEFAULT 0,
    records_rejected  bigint NOT NULL DEFAULT 0,
    rowversion_start  text,
    rowversion_end    text,
    pages             int NOT NULL DEFAULT 0,
    bytes             bigint NOT NULL DEFAULT 0,
    duration_seconds  double precision,
    error_message     text,
    error_details     jsonb,
    hostname          text,
    pid               int,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sync_runs_entity_started_idx ON sync_runs (entity_uid, started_at DESC);
CREATE INDEX sync_runs_status_idx ON sync_runs (status) WHERE status = 'running';

CREATE TABLE sync_rejects (
    id           bigserial PRIMARY KEY,
    run_uid      uuid NOT NULL REFERENCES sync_runs(uid) ON DELETE CASCADE,
    business_key jsonb,
    column_name  text,
    reason       text NOT NULL,
    value        text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sync_rejects_run_idx ON sync_rejects (run_uid);
