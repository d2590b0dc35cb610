-- 0003: plans and limits, quota counters and reservations, rate-limit state, prices,
-- usage events (partitioned by month, idempotent per request id) and hourly rollups.

CREATE TABLE plans (
    name                   text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    display_name           text NOT NULL,
    requests_per_minute    integer CHECK (requests_per_minute >= 0),
    tokens_per_minute      bigint CHECK (tokens_per_minute >= 0),
    max_concurrent         integer CHECK (max_concurrent >= 0),
    monthly_tokens         bigint CHECK (monthly_tokens >= 0),
    monthly_images         bigint CHECK (monthly_images >= 0),
    monthly_budget_micros  bigint CHECK (monthly_budget_micros >= 0),
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);

INSERT INTO plans (name, display_name, requests_per_minute, tokens_per_minute, max_concurrent, monthly_tokens, monthly_images, monthly_budget_micros)
VALUES ('free', 'Free', 20, 20000, 2, 200000, 1000, 5000000),
       ('pro', 'Pro', 600, 400000, 16, 20000000, 100000, 500000000);

-- Plans that tenants already name (created before plans existed) become plans without limits.
INSERT INTO plans (name, display_name) SELECT DISTINCT plan, plan FROM tenants ON CONFLICT (name) DO NOTHING;
ALTER TABLE tenants ADD CONSTRAINT tenants_plan_fkey FOREIGN KEY (plan) REFERENCES plans (name);

-- Tenant-level overrides (NULL: the plan's value). Key-level overrides live in api_keys.limits.
CREATE TABLE tenant_limits (
    tenant_id              uuid PRIMARY KEY REFERENCES tenants (id),
    requests_per_minute    integer CHECK (requests_per_minute >= 0),
    tokens_per_minute      bigint CHECK (tokens_per_minute >= 0),
    max_concurrent         integer CHECK (max_concurrent >= 0),
    monthly_tokens         bigint CHECK (monthly_tokens >= 0),
    monthly_images         bigint CHECK (monthly_images >= 0),
    monthly_budget_micros  bigint CHECK (monthly_budget_micros >= 0),
    updated_at             timestamptz NOT NULL DEFAULT now()
);

-- One row per (subject, metric, period): 'tokens'/'images'/'budget' per calendar month
-- (period_start = first day, UTC), 'concurrent' with period_start 'epoch'.
CREATE TABLE quota_counters (
    subject      text NOT NULL,
    metric       text NOT NULL CHECK (metric IN ('tokens', 'images', 'budget', 'concurrent')),
    period_start date NOT NULL,
    used         bigint NOT NULL DEFAULT 0,
    reserved     bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    PRIMARY KEY (subject, metric, period_start)
);

-- Worst-case amounts held for a request until it settles; expired ones are returned by a sweeper.
CREATE TABLE quota_reservations (
    request_id   text PRIMARY KEY,
    tenant_id    uuid NOT NULL,
    key_id       uuid,
    period_start date NOT NULL,
    tokens       bigint NOT NULL DEFAULT 0,
    images       bigint NOT NULL DEFAULT 0,
    budget       bigint NOT NULL DEFAULT 0,
    concurrent   integer NOT NULL DEFAULT 0,
    subjects     text[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX quota_reservations_expiry ON quota_reservations (expires_at);

-- Generic cell rate algorithm: the theoretical arrival time per (subject, limit).
CREATE TABLE rate_limit_state (
    subject text PRIMARY KEY,
    tat     timestamptz NOT NULL
);

-- Price book: per model and metric, micro-units per 1M tokens or per image, effective from a
-- time on; a tenant-specific row beats the global one.
CREATE TABLE prices (
    id              uuid PRIMARY KEY,
    model           text NOT NULL,
    metric          text NOT NULL CHECK (metric IN ('prompt_tokens', 'completion_tokens', 'images')),
    unit_price      bigint NOT NULL CHECK (unit_price >= 0),
    tenant_id       uuid REFERENCES tenants (id),
    effective_from  timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (model, metric, tenant_id, effective_from)
);

-- Request ids already settled (the idempotency guard: usage_events is partitioned, and a
-- unique constraint there would have to include the month).
CREATE TABLE settled_requests (
    request_id  text PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    occurred_at timestamptz NOT NULL
);

CREATE TABLE usage_events (
    request_id               text NOT NULL,
    tenant_id                uuid NOT NULL,
    key_id                   uuid,
    model                    text NOT NULL,
    route                    text NOT NULL,
    prompt_tokens            bigint NOT NULL DEFAULT 0,
    completion_tokens        bigint NOT NULL DEFAULT 0,
    images                   bigint NOT NULL DEFAULT 0,
    status                   integer NOT NULL,
    latency_ms               integer NOT NULL,
    prompt_price             bigint NOT NULL DEFAULT 0,
    completion_price         bigint NOT NULL DEFAULT 0,
    image_price              bigint NOT NULL DEFAULT 0,
    cost_micros              bigint NOT NULL DEFAULT 0,
    occurred_at              timestamptz NOT NULL
) PARTITION BY RANGE (occurred_at);
CREATE TABLE usage_events_default PARTITION OF usage_events DEFAULT;
CREATE INDEX usage_events_tenant ON usage_events (tenant_id, occurred_at);

CREATE TABLE usage_rollups (
    tenant_id         uuid NOT NULL,
    key_id            uuid,
    model             text NOT NULL,
    hour              timestamptz NOT NULL,
    requests          bigint NOT NULL DEFAULT 0,
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    images            bigint NOT NULL DEFAULT 0,
    cost_micros       bigint NOT NULL DEFAULT 0,
    UNIQUE NULLS NOT DISTINCT (tenant_id, key_id, model, hour)
);

-- Creates the monthly partitions of usage_events from `first` for `months` months.
CREATE FUNCTION ensure_usage_partitions(first date, months integer) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    start date;
    name text;
BEGIN
    FOR i IN 0..months - 1 LOOP
        start := date_trunc('month', first)::date + make_interval(months => i);
        name := 'usage_events_' || to_char(start, 'YYYY_MM');
        IF to_regclass(name) IS NULL THEN
            BEGIN
                EXECUTE format('CREATE TABLE %I PARTITION OF usage_events FOR VALUES FROM (%L) TO (%L)',
                               name, start, (start + interval '1 month')::date);
            EXCEPTION WHEN check_violation THEN
                -- Rows for that month already sit in the default partition: leave them there.
                NULL;
            END;
        END IF;
    END LOOP;
END $$;

SELECT ensure_usage_partitions((now() AT TIME ZONE 'UTC')::date, 3);
