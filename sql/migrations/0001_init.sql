-- 0001: server-wide settings.
-- Conventions for every migration: UUID keys, timestamptz in UTC, money as bigint micro-units,
-- constraints in the schema, tenant-owned rows carry tenant_id.

CREATE TABLE settings (
    key        text PRIMARY KEY CHECK (key ~ '^[a-z0-9_.:-]+$'),
    value      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
