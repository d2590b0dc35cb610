-- 0002: tenants, their data keys (envelope encryption), sealed secrets, API keys, audit log.

CREATE TABLE tenants (
    id              uuid PRIMARY KEY,
    slug            text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    display_name    text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    -- Sealed with the tenant's data key (Encryption.SealedValue); never plaintext.
    contact_email   bytea,
    billing_details bytea,
    plan            text NOT NULL,
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'deleted')),
    -- Opt-in: keep encrypted request/response payloads (payload_logs).
    payload_logging boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz
);

-- One row per tenant data-key version, wrapped by a master key version (never stored here).
CREATE TABLE tenant_data_keys (
    tenant_id          uuid NOT NULL REFERENCES tenants (id),
    version            integer NOT NULL CHECK (version > 0),
    master_key_version integer NOT NULL CHECK (master_key_version > 0),
    wrapped_key        bytea NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    rewrapped_at       timestamptz,
    PRIMARY KEY (tenant_id, version)
);
CREATE INDEX tenant_data_keys_master ON tenant_data_keys (master_key_version);

-- Tenant-supplied secrets (webhook signing keys, upstream credentials), sealed.
CREATE TABLE tenant_secrets (
    id         uuid PRIMARY KEY,
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    name       text NOT NULL CHECK (name ~ '^[A-Za-z0-9_.-]{1,100}$'),
    value      bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

-- Request/response payloads of tenants that opted in, sealed.
CREATE TABLE payload_logs (
    id         uuid PRIMARY KEY,
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    request_id text NOT NULL,
    request    bytea NOT NULL,
    response   bytea,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payload_logs_tenant ON payload_logs (tenant_id, created_at);

-- API keys: only an HMAC-SHA256 of the key under a server-side pepper, and a display prefix.
-- tenant_id is NULL for operator keys (scope 'admin').
CREATE TABLE api_keys (
    id             uuid PRIMARY KEY,
    tenant_id      uuid REFERENCES tenants (id),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    prefix         text NOT NULL,
    key_hash       bytea NOT NULL UNIQUE,
    scopes         text[] NOT NULL,
    allowed_models text[] NOT NULL DEFAULT '{}',
    limits         jsonb NOT NULL DEFAULT '{}',
    expires_at     timestamptz,
    revoked_at     timestamptz,
    replaced_by    uuid REFERENCES api_keys (id),
    created_by     text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_used_at   timestamptz,
    CHECK ((tenant_id IS NULL) = ('admin' = ANY (scopes)))
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

-- Append-only, hash-chained: hash = SHA-256(prev_hash || canonical entry).
CREATE TABLE audit_log (
    id        bigint PRIMARY KEY,
    at        timestamptz NOT NULL,
    actor     text NOT NULL,
    tenant_id uuid,
    action    text NOT NULL,
    target    text NOT NULL,
    details   text NOT NULL,
    prev_hash bytea NOT NULL,
    hash      bytea NOT NULL
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, at);
