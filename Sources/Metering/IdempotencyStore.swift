import Encryption
import Foundation
import Postgres

/// `Idempotency-Key` for inference requests: the first request with a key runs; a retry with
/// the same key and body gets the stored response (not run, not billed again); the same key
/// with another body is a conflict. Concurrent retries wait for the first to finish.
///
/// What is stored is tenant content — the response holds completions, echoed prompts,
/// embeddings, and the request's fingerprint is a hash of the prompt — so both are sealed with
/// the tenant's data key (`idempotency_keys.request_hash`, `.response_body`): they die with
/// the tenant's keys. Entries expire after `metering.idempotencyRetentionHours`.
public struct IdempotencyStore: Sendable {
    public enum Outcome: Sendable, Equatable {
        /// Run the request, then `complete` (or `abandon` on a server error).
        case proceed
        case replay(status: Int, body: [UInt8])
        case conflict
    }

    let pool: PostgresPool
    let keyRing: KeyRing
    /// A `running` entry older than this belongs to a crashed request and may be taken over.
    let staleAfterSeconds: Double

    public init(pool: PostgresPool, keyRing: KeyRing, staleAfterSeconds: Double = 600) {
        self.pool = pool
        self.keyRing = keyRing
        self.staleAfterSeconds = staleAfterSeconds
    }

    static func context(_ column: String, _ id: UUID) -> SealContext {
        SealContext(table: "idempotency_keys", column: column, rowID: id.uuidString.lowercased())
    }

    public func begin(tenant: UUID, key: String, body: [UInt8], waitSeconds: Double = 120) async throws -> Outcome {
        guard (1...255).contains(key.utf8.count) else { throw MeteringError.invalid("Idempotency-Key", "1 to 255 characters") }
        let cipher = try await keyRing.cipher(for: tenant)
        let hash = SHA256.hash(body)
        let deadline = Date().addingTimeInterval(waitSeconds)
        while true {
            // The row id is fixed before the insert so that the hash can be sealed to it; a
            // stale entry taken over keeps its id and gets this request's hash.
            let existing = try await pool.query("SELECT id FROM idempotency_keys WHERE tenant_id = $1 AND key = $2", [tenant, key])
            let id = try existing.first?.decode("id", as: UUID.self) ?? UUID()
            let sealedHash = try cipher.seal(hash, Self.context("request_hash", id))
            let inserted = try await pool.query(
                """
                INSERT INTO idempotency_keys (id, tenant_id, key, request_hash) VALUES ($1, $2, $3, $4)
                ON CONFLICT (tenant_id, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, created_at = now()
                    WHERE idempotency_keys.id = EXCLUDED.id AND idempotency_keys.state = 'running'
                      AND idempotency_keys.created_at < now() - make_interval(secs => $5::float8)
                RETURNING 1
                """, [id, tenant, key, PostgresBytes(sealedHash.bytes), staleAfterSeconds])
            if !inserted.isEmpty { return .proceed }
            let rows = try await pool.query(
                "SELECT id, request_hash, state, response_status, response_body FROM idempotency_keys WHERE tenant_id = $1 AND key = $2",
                [tenant, key])
            guard let row = rows.first else { continue }  // deleted meanwhile (abandoned): try again
            let rowID: UUID = try row.decode("id")
            let stored = try cipher.open(
                SealedValue(stored: try row.decode("request_hash", as: PostgresBytes.self).bytes), Self.context("request_hash", rowID))
            if stored != hash { return .conflict }
            if try row.decode("state", as: String.self) == "done" {
                let sealed = try SealedValue(stored: try row.decode("response_body", as: PostgresBytes.self).bytes)
                return .replay(status: try row.decode("response_status"), body: try cipher.open(sealed, Self.context("response_body", rowID)))
            }
            guard Date() < deadline else {
                throw MeteringError.rateLimited(message: "A request with this Idempotency-Key is still running; retry later.", retryAfterSeconds: 1)
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    public func complete(tenant: UUID, key: String, status: Int, body: [UInt8], requestID: String) async throws {
        let rows = try await pool.query("SELECT id FROM idempotency_keys WHERE tenant_id = $1 AND key = $2", [tenant, key])
        guard let id = try rows.first?.decode("id", as: UUID.self) else { return }
        let sealed = try await keyRing.cipher(for: tenant).seal(body, Self.context("response_body", id))
        try await pool.execute(
            """
            UPDATE idempotency_keys SET state = 'done', response_status = $3, response_body = $4, request_id = $5, completed_at = now()
            WHERE tenant_id = $1 AND key = $2 AND id = $6
            """, [tenant, key, status, PostgresBytes(sealed.bytes), requestID, id])
    }

    /// Forgets a key whose request failed on our side, so a retry runs again.
    public func abandon(tenant: UUID, key: String) async {
        _ = try? await pool.execute("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND state = 'running'", [tenant, key])
    }

    /// Deletes keys older than `hours` (24 h by default, as OpenAI keeps them).
    @discardableResult
    public func expire(hours: Int = 24) async throws -> Int {
        try await pool.execute("DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => $1)", [hours])
    }
}
