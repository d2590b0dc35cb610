-- 0005: tenant content is sealed wherever it is stored.
--
-- Idempotent responses (completions, echoed prompts, embedding vectors) and the fingerprints
-- of their requests were stored in plaintext; they are now sealed with the tenant's data key,
-- bound to the row's new id (so crypto-shredding covers them). SQL cannot seal what exists
-- (the keys never reach the database), so the plaintext rows are purged: a retry of one of
-- them runs again instead of replaying. They were at most a day old by design.
DELETE FROM idempotency_keys;
ALTER TABLE idempotency_keys ADD COLUMN id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid();
COMMENT ON COLUMN idempotency_keys.request_hash IS 'SealedValue: SHA-256 of the request fingerprint';
COMMENT ON COLUMN idempotency_keys.response_body IS 'SealedValue: the stored response';

-- Payload logs of tenants that opted in: what the tenant lists beside the sealed payloads.
ALTER TABLE payload_logs
    ADD COLUMN model text,
    ADD COLUMN route text,
    ADD COLUMN status integer;
CREATE INDEX payload_logs_created ON payload_logs (created_at);
