-- 0004: idempotency keys of inference requests, and the model registry's state.

CREATE TABLE idempotency_keys (
    tenant_id        uuid NOT NULL,
    key              text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash     bytea NOT NULL,
    state            text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done')),
    response_status  integer,
    response_body    bytea,
    request_id       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- What each instance's registry reports, for operators (the model files are the source of truth).
CREATE TABLE models (
    name        text PRIMARY KEY,
    engine      text NOT NULL,
    task        text,
    version     text NOT NULL,
    status      text NOT NULL,
    reason      text,
    tenants     text[],
    updated_at  timestamptz NOT NULL DEFAULT now()
);
