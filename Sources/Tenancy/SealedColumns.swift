import Encryption
import Postgres

/// Every column that holds `SealedValue`s, with the column naming its row. Re-sealing after a
/// tenant key rotation walks this list; a new sealed column must be added here.
enum SealedColumns {
    struct Column: Sendable {
        var table: String
        var column: String
        /// The row id used in the seal context.
        var idColumn: String
        /// The column holding the tenant id (`id` for the tenants table itself).
        var tenantColumn: String
    }

    static let all: [Column] = [
        Column(table: "tenants", column: "contact_email", idColumn: "id", tenantColumn: "id"),
        Column(table: "tenants", column: "billing_details", idColumn: "id", tenantColumn: "id"),
        Column(table: "tenant_secrets", column: "value", idColumn: "id", tenantColumn: "tenant_id"),
        Column(table: "payload_logs", column: "request", idColumn: "id", tenantColumn: "tenant_id"),
        Column(table: "payload_logs", column: "response", idColumn: "id", tenantColumn: "tenant_id"),
        Column(table: "idempotency_keys", column: "request_hash", idColumn: "id", tenantColumn: "tenant_id"),
        Column(table: "idempotency_keys", column: "response_body", idColumn: "id", tenantColumn: "tenant_id"),
    ]
}

extension SealedValue: PostgresEncodable {
    public func postgresBind() -> PostgresBind { PostgresBytes(bytes).postgresBind() }
}

