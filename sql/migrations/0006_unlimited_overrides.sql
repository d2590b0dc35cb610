-- 0006: a tenant's override may lift its plan's limit altogether: -1 means "unlimited" in
-- tenant_limits (NULL still means "the plan's value").
ALTER TABLE tenant_limits
    DROP CONSTRAINT tenant_limits_requests_per_minute_check,
    DROP CONSTRAINT tenant_limits_tokens_per_minute_check,
    DROP CONSTRAINT tenant_limits_max_concurrent_check,
    DROP CONSTRAINT tenant_limits_monthly_tokens_check,
    DROP CONSTRAINT tenant_limits_monthly_images_check,
    DROP CONSTRAINT tenant_limits_monthly_budget_micros_check,
    ADD CONSTRAINT tenant_limits_requests_per_minute_check CHECK (requests_per_minute >= -1),
    ADD CONSTRAINT tenant_limits_tokens_per_minute_check CHECK (tokens_per_minute >= -1),
    ADD CONSTRAINT tenant_limits_max_concurrent_check CHECK (max_concurrent >= -1),
    ADD CONSTRAINT tenant_limits_monthly_tokens_check CHECK (monthly_tokens >= -1),
    ADD CONSTRAINT tenant_limits_monthly_images_check CHECK (monthly_images >= -1),
    ADD CONSTRAINT tenant_limits_monthly_budget_micros_check CHECK (monthly_budget_micros >= -1);
COMMENT ON TABLE tenant_limits IS 'Per-tenant overrides: NULL inherits the plan''s value, -1 is unlimited';
