-- 0008: the operator's own data keys and the upstream credentials they seal.
--
-- Upstream credentials (the API key an upstream inference server wants) belong to the
-- operator, not to a tenant: they are sealed with an operator data key, wrapped by the master
-- keys exactly like a tenant's (its binding names the nil tenant id) and rewrapped by
-- 'keyring rotate'.
CREATE TABLE operator_data_keys (
    version            integer PRIMARY KEY CHECK (version > 0),
    master_key_version integer NOT NULL CHECK (master_key_version > 0),
    wrapped_key        bytea NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    rewrapped_at       timestamptz
);
CREATE INDEX operator_data_keys_master ON operator_data_keys (master_key_version);

-- One credential per upstream model (its own name, not an alias); only its fingerprint is
-- ever shown.
CREATE TABLE upstream_credentials (
    model       text PRIMARY KEY CHECK (length(model) BETWEEN 1 AND 200),
    value       bytea NOT NULL,
    fingerprint text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
