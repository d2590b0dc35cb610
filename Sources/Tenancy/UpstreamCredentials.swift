import Audit
import Encryption
import Foundation
import Postgres
import Synchronization

/// The operator's data key: it seals what belongs to no tenant. Stored in `operator_data_keys`,
/// wrapped by the master keys like a tenant's (its binding names the nil tenant id).
public enum OperatorDataKey {
    public static let id = UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
}

/// What may be shown of a stored credential: never the secret, only a fingerprint (a keyed
/// digest: without the server's pepper it says nothing of the secret).
public struct UpstreamCredentialInfo: Sendable, Equatable, Encodable {
    public var model: String
    public var fingerprint: String
    public var updatedAt: Date

    enum CodingKeys: String, CodingKey {
        case model, fingerprint
        case updatedAt = "updated_at"
    }
}

/// Credentials of upstream models (the API key an upstream server wants), sealed with the
/// operator's data key in `upstream_credentials`. The gateway reads them per request through a
/// short cache, so a credential set on any instance is used by every instance within
/// `cacheTTL`, without a restart.
public final class UpstreamCredentials: Sendable {
    let pool: PostgresPool
    let keyRing: KeyRing
    let cacheTTL: Duration
    private let cache = Mutex<[String: (secret: String?, expires: ContinuousClock.Instant)]>([:])

    public init(pool: PostgresPool, keyRing: KeyRing, cacheTTL: Duration = .seconds(2)) {
        self.pool = pool
        self.keyRing = keyRing
        self.cacheTTL = cacheTTL
    }

    /// The largest credential accepted: far above any API key or JWT seen in practice.
    static let maxBytes = 8192

    /// Stores (or replaces) `model`'s credential. It goes out as an HTTP header, so it must be
    /// visible ASCII without spaces or line breaks.
    @discardableResult
    public func set(model: String, secret: String, actor: AuditActor) async throws -> UpstreamCredentialInfo {
        guard (1...200).contains(model.utf8.count) else { throw TenancyError.invalid(field: "model", message: "a model name of 1-200 characters") }
        guard !secret.isEmpty, secret.utf8.count <= Self.maxBytes else {
            throw TenancyError.invalid(field: "credential", message: "must be 1 to \(Self.maxBytes) bytes")
        }
        guard secret.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
            throw TenancyError.invalid(field: "credential", message: "must be printable ASCII without spaces or line breaks (it is sent as a bearer token)")
        }
        let cipher = try await operatorCipher()
        let sealed = try cipher.seal(secret, Self.context(model))
        let fingerprint = Self.fingerprint(secret, keyRing: keyRing)
        let rows = try await pool.transaction { connection in
            let rows = try connection.query(
                """
                INSERT INTO upstream_credentials (model, value, fingerprint) VALUES ($1, $2, $3)
                ON CONFLICT (model) DO UPDATE SET value = EXCLUDED.value, fingerprint = EXCLUDED.fingerprint, updated_at = now()
                RETURNING model, fingerprint, updated_at
                """, [model, sealed, fingerprint])
            try AuditLog.append(
                connection, actor: actor, tenant: nil, action: "model.credential.set", target: "model:\(model)",
                details: ["fingerprint": fingerprint])
            return rows
        }
        cache.withLock { $0[model] = nil }
        return try Self.info(rows[0])
    }

    /// Removes `model`'s credential; false when it had none.
    public func clear(model: String, actor: AuditActor) async throws -> Bool {
        let removed = try await pool.transaction { connection -> Bool in
            let rows = try connection.query("DELETE FROM upstream_credentials WHERE model = $1 RETURNING model", [model])
            guard !rows.isEmpty else { return false }
            try AuditLog.append(connection, actor: actor, tenant: nil, action: "model.credential.clear", target: "model:\(model)")
            return true
        }
        cache.withLock { $0[model] = nil }
        return removed
    }

    /// The fingerprint and age of `model`'s credential, if it has one.
    public func info(model: String) async throws -> UpstreamCredentialInfo? {
        let rows = try await pool.query("SELECT model, fingerprint, updated_at FROM upstream_credentials WHERE model = $1", [model])
        return try rows.first.map(Self.info)
    }

    /// The secret to send to `model`'s upstream, nil when none is set. Cached for `cacheTTL`;
    /// while the database cannot be reached, the last value read is used.
    public func secret(for model: String) async throws -> String? {
        let now = ContinuousClock.now
        let cached = cache.withLock { $0[model] }
        if let cached, cached.expires > now { return cached.secret }
        let secret: String?
        do {
            let rows = try await pool.query("SELECT value FROM upstream_credentials WHERE model = $1", [model])
            if let row = rows.first {
                let cipher = try await operatorCipher()
                secret = try cipher.openString(SealedValue(stored: try row.decode("value", as: PostgresBytes.self).bytes), Self.context(model))
            } else {
                secret = nil
            }
        } catch let error as PostgresError {
            guard let cached else { throw error }
            return cached.secret
        }
        cache.withLock { $0[model] = (secret, now + cacheTTL) }
        return secret
    }

    /// The operator's cipher; its first data key is made on first use (by whichever instance
    /// gets there first).
    func operatorCipher() async throws -> TenantCipher {
        do {
            return try await keyRing.cipher(for: OperatorDataKey.id)
        } catch KeyringError.noDataKey(_, nil) {
            let (_, wrapped) = try keyRing.newDataKey(tenant: OperatorDataKey.id, version: 1)
            try await pool.execute(
                "INSERT INTO operator_data_keys (version, master_key_version, wrapped_key) VALUES (1, $1, $2) ON CONFLICT (version) DO NOTHING",
                [wrapped.masterVersion, PostgresBytes(wrapped.wrapped)])
            return try await keyRing.cipher(for: OperatorDataKey.id)
        }
    }

    static func context(_ model: String) -> SealContext { SealContext(table: "upstream_credentials", column: "value", rowID: model) }

    static func fingerprint(_ secret: String, keyRing: KeyRing) -> String {
        "hmac-sha256:" + keyRing.keyHasher.digest(secret).prefix(6).map { String(format: "%02x", $0) }.joined()
    }

    static func info(_ row: PostgresRow) throws -> UpstreamCredentialInfo {
        UpstreamCredentialInfo(model: try row.decode("model"), fingerprint: try row.decode("fingerprint"), updatedAt: try row.decode("updated_at"))
    }
}
