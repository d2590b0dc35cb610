import Encryption
import Foundation
import Postgres

/// `Idempotency-Key` for inference requests: the first request with a key runs; a retry with
/// the same key and body gets the stored response (not run, not billed again); the same key
/// with another body is a conflict. Concurrent retries wait for the first to finish.
public struct IdempotencyStore: Sendable {
    public enum Outcome: Sendable, Equatable {
        /// Run the request, then `complete` (or `abandon` on a server error).
        case proceed
        case replay(status: Int, body: [UInt8])
        case conflict
    }

    let pool: PostgresPool
    /// A `running` entry older than this belongs to a crashed request and may be taken over.
    let staleAfterSeconds: Double

    public init(pool: PostgresPool, staleAfterSeconds: Double = 600) {
        self.pool = pool
        self.staleAfterSeconds = staleAfterSeconds
    }

    public func begin(tenant: UUID, key: String, body: [UInt8], waitSeconds: Double = 120) async throws -> Outcome {
        guard (1...255).contains(key.utf8.count) else { throw MeteringError.invalid("Idempotency-Key", "1 to 255 characters") }
        let hash = PostgresBytes(SHA256.hash(body))
        let deadline = Date().addingTimeInterval(waitSeconds)
        while true {
            let inserted = try await pool.query(
                """
                INSERT INTO idempotency_keys (tenant_id, key, request_hash) VALUES ($1, $2, $3)
                ON CONFLICT (tenant_id, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, created_at = now()
                    WHERE idempotency_keys.state = 'running' AND idempotency_keys.created_at < now() - make_interval(secs => $4::float8)
                RETURNING 1
                """, [tenant, key, hash, staleAfterSeconds])
            if !inserted.isEmpty { return .proceed }
            let rows = try await pool.query(
                "SELECT request_hash, state, response_status, response_body FROM idempotency_keys WHERE tenant_id = $1 AND key = $2",
                [tenant, key])
            guard let row = rows.first else { continue }  // deleted meanwhile (abandoned): try again
            if try row.decode("request_hash", as: PostgresBytes.self) != hash { return .conflict }
            if try row.decode("state", as: String.self) == "done" {
                return .replay(status: try row.decode("response_status"), body: try row.decode("response_body", as: PostgresBytes.self).bytes)
            }
            guard Date() < deadline else {
                throw MeteringError.rateLimited(message: "A request with this Idempotency-Key is still running; retry later.", retryAfterSeconds: 1)
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    public func complete(tenant: UUID, key: String, status: Int, body: [UInt8], requestID: String) async throws {
        try await pool.execute(
            """
            UPDATE idempotency_keys SET state = 'done', response_status = $3, response_body = $4, request_id = $5, completed_at = now()
            WHERE tenant_id = $1 AND key = $2
            """, [tenant, key, status, PostgresBytes(body), requestID])
    }

    /// Forgets a key whose request failed on our side, so a retry runs again.
    public func abandon(tenant: UUID, key: String) async {
        _ = try? await pool.execute("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND state = 'running'", [tenant, key])
    }

    /// Deletes keys older than `hours` (24 h by default, as OpenAI keeps them).
    public func expire(hours: Int = 24) async throws -> Int {
        try await pool.execute("DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => $1)", [hours])
    }
}
