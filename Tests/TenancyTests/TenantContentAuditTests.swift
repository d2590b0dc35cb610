import Foundation
import Postgres
import Testing
import TestSupport
@testable import Tenancy

/// Every column of every table, and whether it may hold tenant content. Tenant content —
/// prompts, completions, embeddings, uploaded files, secrets, contact and billing details —
/// is sealed with the tenant's data key wherever it is stored, so that it is unreadable
/// without the master keys and dies with the tenant. A new column fails this test until it is
/// listed here: sealed (and then also in `SealedColumns`, so tenant key rotation re-seals it)
/// or plain, with the reason it holds no content.
@Suite struct TenantContentAuditTests {
    enum Holds: Equatable {
        /// Tenant content, sealed (`SealedValue`).
        case sealed
        /// Identifiers, numbers, times, states, names chosen by operators or tenants for their
        /// own objects (key names, slugs), hashes of secrets keyed by the server pepper.
        case plain
        /// The operator's secrets (upstream credentials), sealed with the operator's data key:
        /// no tenant's content, rewrapped with the master keys by `keyring rotate`.
        case sealedByOperator
    }

    static let columns: [String: Holds] = [
        // Settings and migrations: operator data.
        "settings.key": .plain, "settings.value": .plain, "settings.updated_at": .plain,
        "schema_migrations.version": .plain, "schema_migrations.name": .plain, "schema_migrations.checksum": .plain,
        "schema_migrations.applied_at": .plain,
        // Tenants: contact and billing details are personal data.
        "tenants.id": .plain, "tenants.slug": .plain, "tenants.display_name": .plain, "tenants.contact_email": .sealed,
        "tenants.billing_details": .sealed, "tenants.plan": .plain, "tenants.status": .plain, "tenants.payload_logging": .plain,
        "tenants.created_at": .plain, "tenants.updated_at": .plain, "tenants.deleted_at": .plain,
        // Wrapped data keys: ciphertext under the master keys.
        "tenant_data_keys.tenant_id": .plain, "tenant_data_keys.version": .plain, "tenant_data_keys.master_key_version": .plain,
        "tenant_data_keys.wrapped_key": .plain, "tenant_data_keys.created_at": .plain, "tenant_data_keys.rewrapped_at": .plain,
        "tenant_secrets.id": .plain, "tenant_secrets.tenant_id": .plain, "tenant_secrets.name": .plain, "tenant_secrets.value": .sealed,
        "tenant_secrets.created_at": .plain, "tenant_secrets.updated_at": .plain,
        // Payload logs: the requests and responses themselves.
        "payload_logs.id": .plain, "payload_logs.tenant_id": .plain, "payload_logs.request_id": .plain, "payload_logs.request": .sealed,
        "payload_logs.response": .sealed, "payload_logs.created_at": .plain, "payload_logs.model": .plain, "payload_logs.route": .plain,
        "payload_logs.status": .plain,
        // API keys: only HMAC-SHA256 under the pepper, and a display prefix.
        "api_keys.id": .plain, "api_keys.tenant_id": .plain, "api_keys.name": .plain, "api_keys.prefix": .plain, "api_keys.key_hash": .plain,
        "api_keys.scopes": .plain, "api_keys.allowed_models": .plain, "api_keys.limits": .plain, "api_keys.expires_at": .plain,
        "api_keys.revoked_at": .plain, "api_keys.replaced_by": .plain, "api_keys.created_by": .plain, "api_keys.created_at": .plain,
        "api_keys.last_used_at": .plain,
        // The audit log: actions and ids, never secrets or content.
        "audit_log.id": .plain, "audit_log.at": .plain, "audit_log.actor": .plain, "audit_log.tenant_id": .plain, "audit_log.action": .plain,
        "audit_log.target": .plain, "audit_log.details": .plain, "audit_log.prev_hash": .plain, "audit_log.hash": .plain,
        // Limits, quotas, prices, usage: numbers.
        "plans.name": .plain, "plans.display_name": .plain, "plans.requests_per_minute": .plain, "plans.tokens_per_minute": .plain,
        "plans.max_concurrent": .plain, "plans.monthly_tokens": .plain, "plans.monthly_images": .plain, "plans.monthly_budget_micros": .plain,
        "plans.created_at": .plain, "plans.updated_at": .plain,
        "tenant_limits.tenant_id": .plain, "tenant_limits.requests_per_minute": .plain, "tenant_limits.tokens_per_minute": .plain,
        "tenant_limits.max_concurrent": .plain, "tenant_limits.monthly_tokens": .plain, "tenant_limits.monthly_images": .plain,
        "tenant_limits.monthly_budget_micros": .plain, "tenant_limits.updated_at": .plain,
        "quota_counters.subject": .plain, "quota_counters.metric": .plain, "quota_counters.period_start": .plain, "quota_counters.used": .plain,
        "quota_counters.reserved": .plain,
        "quota_reservations.request_id": .plain, "quota_reservations.tenant_id": .plain, "quota_reservations.key_id": .plain,
        "quota_reservations.period_start": .plain, "quota_reservations.tokens": .plain, "quota_reservations.images": .plain,
        "quota_reservations.budget": .plain, "quota_reservations.concurrent": .plain, "quota_reservations.subjects": .plain,
        "quota_reservations.created_at": .plain, "quota_reservations.expires_at": .plain,
        "rate_limit_state.subject": .plain, "rate_limit_state.tat": .plain,
        "prices.id": .plain, "prices.model": .plain, "prices.metric": .plain, "prices.unit_price": .plain, "prices.tenant_id": .plain,
        "prices.effective_from": .plain, "prices.created_at": .plain,
        "settled_requests.request_id": .plain, "settled_requests.tenant_id": .plain, "settled_requests.occurred_at": .plain,
        "usage_events.request_id": .plain, "usage_events.tenant_id": .plain, "usage_events.key_id": .plain, "usage_events.model": .plain,
        "usage_events.route": .plain, "usage_events.prompt_tokens": .plain, "usage_events.completion_tokens": .plain,
        "usage_events.images": .plain, "usage_events.status": .plain, "usage_events.latency_ms": .plain, "usage_events.prompt_price": .plain,
        "usage_events.completion_price": .plain, "usage_events.image_price": .plain, "usage_events.cost_micros": .plain,
        "usage_events.occurred_at": .plain,
        "usage_rollups.tenant_id": .plain, "usage_rollups.key_id": .plain, "usage_rollups.model": .plain, "usage_rollups.hour": .plain,
        "usage_rollups.requests": .plain, "usage_rollups.prompt_tokens": .plain, "usage_rollups.completion_tokens": .plain,
        "usage_rollups.images": .plain, "usage_rollups.cost_micros": .plain,
        // Idempotency: the stored response and the request's fingerprint are content.
        "idempotency_keys.tenant_id": .plain, "idempotency_keys.key": .plain, "idempotency_keys.request_hash": .sealed,
        "idempotency_keys.state": .plain, "idempotency_keys.response_status": .plain, "idempotency_keys.response_body": .sealed,
        "idempotency_keys.request_id": .plain, "idempotency_keys.created_at": .plain, "idempotency_keys.completed_at": .plain,
        "idempotency_keys.id": .plain,
        // The model registry as instances report it.
        "models.name": .plain, "models.engine": .plain, "models.task": .plain, "models.version": .plain, "models.status": .plain,
        "models.reason": .plain, "models.tenants": .plain, "models.updated_at": .plain, "models.aliases": .plain,
        // An upstream model's endpoints: host:port and counters (never a path or credential).
        "models.endpoints": .plain,
        "usage_events.usage_source": .plain,
        // The operator's data keys (ciphertext under the master keys) and what they seal.
        "operator_data_keys.version": .plain, "operator_data_keys.master_key_version": .plain, "operator_data_keys.wrapped_key": .plain,
        "operator_data_keys.created_at": .plain, "operator_data_keys.rewrapped_at": .plain,
        "upstream_credentials.model": .plain, "upstream_credentials.value": .sealedByOperator,
        "upstream_credentials.fingerprint": .plain, "upstream_credentials.updated_at": .plain,
    ]

    @Test func everyColumnIsListedAndEverySealedColumnIsResealedOnRotation() async throws {
        try await TestTenancy.with(poolSize: 1) { system in
            // Tables and partitioned tables of the schema, not the partitions (they repeat their parent's columns).
            let rows = try await system.pool.query(
                """
                SELECT c.relname AS table_name, a.attname AS column_name
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
                ORDER BY 1, 2
                """)
            let found = Set(try rows.map { "\(try $0.decode("table_name", as: String.self)).\(try $0.decode("column_name", as: String.self))" })
            let unlisted = found.subtracting(Self.columns.keys).sorted()
            #expect(unlisted.isEmpty, "columns not classified in TenantContentAuditTests: \(unlisted)")
            let stale = Set(Self.columns.keys).subtracting(found).sorted()
            #expect(stale.isEmpty, "classified columns that no longer exist: \(stale)")
            let sealed = Set(Self.columns.filter { $0.value == .sealed }.keys)
            let resealed = Set(SealedColumns.all.map { $0.table + "." + $0.column })
            #expect(sealed == resealed, "sealed columns and SealedColumns.all differ")
            // A sealed column is bytea: it holds SealedValue bytes, never text.
            for column in sealed.union(Self.columns.filter { $0.value == .sealedByOperator }.keys).sorted() {
                let parts = column.split(separator: ".").map(String.init)
                let type = try await system.pool.query(
                    "SELECT data_type FROM information_schema.columns WHERE table_name = $1 AND column_name = $2", [parts[0], parts[1]])
                #expect(try type.first?.decode("data_type", as: String.self) == "bytea", "\(column)")
            }
        }
    }
}
