import Audit
import Encryption
import Foundation
import Postgres

/// An API key as listed: never its secret.
public struct APIKey: Sendable, Equatable, Encodable {
    public var id: UUID
    public var tenantID: UUID?
    public var name: String
    /// Display prefix, `mgk_AbCdEfGh`.
    public var prefix: String
    public var scopes: [Scope]
    public var allowedModels: [String]
    public var limits: [String: Int]
    public var expiresAt: Date?
    public var revokedAt: Date?
    public var replacedBy: UUID?
    public var createdBy: String
    public var createdAt: Date
    public var lastUsedAt: Date?

    public func isUsable(at now: Date = Date()) -> Bool {
        revokedAt == nil && (expiresAt.map { $0 > now } ?? true)
    }

    enum CodingKeys: String, CodingKey {
        case id, name, prefix, scopes, limits
        case tenantID = "tenant_id"
        case allowedModels = "allowed_models"
        case expiresAt = "expires_at"
        case revokedAt = "revoked_at"
        case replacedBy = "replaced_by"
        case createdBy = "created_by"
        case createdAt = "created_at"
        case lastUsedAt = "last_used_at"
    }

    /// Absent values are explicit `null`s, as API clients expect.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id.uuidString.lowercased(), forKey: .id)
        try container.encode(tenantID?.uuidString.lowercased(), forKey: .tenantID)
        try container.encode(name, forKey: .name)
        try container.encode(prefix, forKey: .prefix)
        try container.encode(scopes, forKey: .scopes)
        try container.encode(allowedModels, forKey: .allowedModels)
        try container.encode(limits, forKey: .limits)
        try container.encode(expiresAt, forKey: .expiresAt)
        try container.encode(revokedAt, forKey: .revokedAt)
        try container.encode(replacedBy?.uuidString.lowercased(), forKey: .replacedBy)
        try container.encode(createdBy, forKey: .createdBy)
        try container.encode(createdAt, forKey: .createdAt)
        try container.encode(lastUsedAt, forKey: .lastUsedAt)
    }
}

/// A key just created: the only time its secret exists outside the caller's hands.
public struct CreatedAPIKey: Sendable {
    public var key: APIKey
    public var secret: String
}

public struct NewAPIKey: Sendable {
    public var name: String
    public var scopes: [Scope]
    public var allowedModels: [String]
    public var expiresAt: Date?
    public var limits: [String: Int]

    public init(name: String, scopes: [Scope], allowedModels: [String] = [], expiresAt: Date? = nil, limits: [String: Int] = [:]) {
        self.name = name
        self.scopes = scopes
        self.allowedModels = allowedModels
        self.expiresAt = expiresAt
        self.limits = limits
    }
}

/// API key lifecycle. Keys are stored only as HMAC-SHA256 under the server pepper. Every
/// operation on a tenant's keys is scoped by that tenant's id: another tenant's key is "not found".
public struct APIKeyService: Sendable {
    let pool: PostgresPool
    let keyHasher: KeyHasher
    let notifier = AuthNotifier()

    public init(pool: PostgresPool, keyHasher: KeyHasher) {
        self.pool = pool
        self.keyHasher = keyHasher
    }

    /// Creates a key for `tenant` (nil: an operator key, which must have exactly the `admin`
    /// scope), bounded by what `issuer` holds.
    public func create(tenant: UUID?, _ request: NewAPIKey, issuer: KeyIssuer) async throws -> CreatedAPIKey {
        let request = try issuer.bound(request)
        let actor = issuer.actor
        try validate(request, tenant: tenant)
        let secret = try APIKeyFormat.generate()
        let id = UUID()
        let prefix = APIKeyFormat.displayPrefix(secret)
        let hash = keyHasher.digest(secret)
        let limitsJSON = try PostgresJSON(request.limits)
        try await pool.transaction { connection in
            if let tenant {
                let rows = try connection.query("SELECT status FROM tenants WHERE id = $1 FOR SHARE", [tenant])
                guard let status = try rows.first?.decode("status", as: String.self), status != TenantStatus.deleted.rawValue else {
                    throw TenancyError.notFound("no tenant \(tenant.uuidString.lowercased())")
                }
            }
            try connection.execute(
                """
                INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, scopes, allowed_models, limits, expires_at, created_by)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                """,
                [id, tenant, request.name, prefix, PostgresBytes(hash), request.scopes.map(\.rawValue).sorted(),
                 request.allowedModels, limitsJSON, request.expiresAt, actor.description])
            try AuditLog.append(
                connection, actor: actor, tenant: tenant, action: "key.create", target: "key:\(prefix)",
                details: [
                    "key_id": id.uuidString.lowercased(), "name": request.name,
                    "scopes": request.scopes.map(\.rawValue).sorted().joined(separator: ","),
                    "allowed_models": request.allowedModels.joined(separator: ","),
                    "expires_at": request.expiresAt.map { ISO8601DateFormatter().string(from: $0) } ?? "",
                ])
        }
        return CreatedAPIKey(key: try await get(id, tenant: tenant), secret: secret)
    }

    /// The key `id` if it belongs to `tenant` (nil: operator keys only).
    public func get(_ id: UUID, tenant: UUID?) async throws -> APIKey {
        let rows = try await pool.query(
            "SELECT * FROM api_keys WHERE id = $1 AND tenant_id IS NOT DISTINCT FROM $2", [id, tenant])
        guard let row = rows.first else { throw TenancyError.notFound("no API key \(id.uuidString.lowercased())") }
        return try Self.decode(row)
    }

    public func list(tenant: UUID?, includeInactive: Bool = true) async throws -> [APIKey] {
        let rows = try await pool.query(
            """
            SELECT * FROM api_keys WHERE tenant_id IS NOT DISTINCT FROM $1
              AND ($2 OR (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())))
            ORDER BY created_at, id
            """, [tenant, includeInactive])
        return try rows.map(Self.decode)
    }

    /// Revokes at once; every instance refuses the key within a second (NOTIFY).
    public func revoke(_ id: UUID, tenant: UUID?, actor: AuditActor) async throws -> APIKey {
        let notifier = self.notifier
        let outcome = try await pool.transaction { connection -> String? in
            let rows = try connection.query(
                """
                UPDATE api_keys SET revoked_at = now()
                WHERE id = $1 AND tenant_id IS NOT DISTINCT FROM $2 AND revoked_at IS NULL RETURNING prefix
                """, [id, tenant])
            guard let prefix = try rows.first?.decode("prefix", as: String.self) else { return nil }
            try AuditLog.append(
                connection, actor: actor, tenant: tenant, action: "key.revoke", target: "key:\(prefix)",
                details: ["key_id": id.uuidString.lowercased()])
            try notifier.keyChanged(id, connection)
            return prefix
        }
        let key = try await get(id, tenant: tenant)  // not found for other tenants' keys
        if outcome == nil { throw TenancyError.conflict("API key \(key.prefix)… is already revoked") }
        return key
    }

    /// The longest an old key may keep working after a rotation.
    public static let maximumGrace = Duration.seconds(90 * 86_400)
    public static let defaultGrace = Duration.seconds(86_400)

    /// Issues a replacement with the same attributes; the old key keeps working for `grace`
    /// (default 24 h, zero stops it at once, at most 90 days), then stops. Refused when the
    /// key holds more than `issuer` does.
    public func rotate(_ id: UUID, tenant: UUID?, grace: Duration = defaultGrace, issuer: KeyIssuer) async throws -> CreatedAPIKey {
        guard grace >= .zero, grace <= Self.maximumGrace else {
            throw TenancyError.invalid(field: "grace_period_seconds", message: "must be between 0 and \(Self.maximumGrace.components.seconds) seconds")
        }
        let old = try await get(id, tenant: tenant)
        try issuer.checkRotation(of: old)
        guard old.isUsable() else { throw TenancyError.conflict("API key \(old.prefix)… is revoked or expired") }
        let actor = issuer.actor
        let secret = try APIKeyFormat.generate()
        let newID = UUID()
        let prefix = APIKeyFormat.displayPrefix(secret)
        let hash = keyHasher.digest(secret)
        let graceSeconds = Double(grace.components.seconds) + Double(grace.components.attoseconds) / 1e18
        let notifier = self.notifier
        let rotated = try await pool.transaction { connection -> Bool in
            let locked = try connection.query(
                """
                SELECT id FROM api_keys
                WHERE id = $1 AND tenant_id IS NOT DISTINCT FROM $2 AND revoked_at IS NULL AND replaced_by IS NULL
                FOR UPDATE
                """, [id, tenant])
            guard !locked.isEmpty else { return false }
            try connection.execute(
                """
                INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, scopes, allowed_models, limits, expires_at, created_by)
                SELECT $1, tenant_id, name, $2, $3, scopes, allowed_models, limits, expires_at, $4
                FROM api_keys WHERE id = $5
                """,
                [newID, prefix, PostgresBytes(hash), actor.description, id])
            try connection.execute(
                """
                UPDATE api_keys SET
                    expires_at = least(coalesce(expires_at, 'infinity'), now() + make_interval(secs => $2::float8)),
                    replaced_by = $3
                WHERE id = $1
                """, [id, graceSeconds, newID])
            try AuditLog.append(
                connection, actor: actor, tenant: tenant, action: "key.rotate", target: "key:\(old.prefix)",
                details: [
                    "key_id": id.uuidString.lowercased(), "new_key_id": newID.uuidString.lowercased(), "new_prefix": prefix,
                    "grace_seconds": String(Int(graceSeconds)),
                ])
            try notifier.keyChanged(id, connection)
            return true
        }
        guard rotated else { throw TenancyError.conflict("API key \(old.prefix)… was already rotated or revoked") }
        return CreatedAPIKey(key: try await get(newID, tenant: tenant), secret: secret)
    }

    private func validate(_ request: NewAPIKey, tenant: UUID?) throws {
        guard (1...200).contains(request.name.count) else {
            throw TenancyError.invalid(field: "name", message: "1-200 characters")
        }
        guard !request.scopes.isEmpty else { throw TenancyError.invalid(field: "scopes", message: "at least one scope") }
        if tenant == nil {
            guard Set(request.scopes) == [.admin] else {
                throw TenancyError.invalid(field: "scopes", message: "operator keys have exactly the 'admin' scope")
            }
        } else if request.scopes.contains(.admin) {
            throw TenancyError.invalid(field: "scopes", message: "'admin' is for operator keys, not tenant keys")
        }
        if let expiresAt = request.expiresAt, expiresAt <= Date() {
            throw TenancyError.invalid(field: "expires_at", message: "must be in the future")
        }
        // Four-digit years: ISO 8601 as every client reads it.
        if let expiresAt = request.expiresAt, expiresAt.timeIntervalSince1970 >= 253_402_300_800 {
            throw TenancyError.invalid(field: "expires_at", message: "must be before 10000-01-01")
        }
        for model in request.allowedModels where model.isEmpty || model.count > 200 {
            throw TenancyError.invalid(field: "allowed_models", message: "model names are 1-200 characters")
        }
        for (name, value) in request.limits where value < 0 || name.isEmpty {
            throw TenancyError.invalid(field: "limits", message: "limit \(name) must be a non-negative integer")
        }
    }

    static func decode(_ row: PostgresRow) throws -> APIKey {
        let scopeNames: [String] = try row.decode("scopes")
        return APIKey(
            id: try row.decode("id"), tenantID: try row.decode("tenant_id"), name: try row.decode("name"),
            prefix: try row.decode("prefix"), scopes: scopeNames.compactMap(Scope.init(rawValue:)),
            allowedModels: try row.decode("allowed_models"),
            limits: (try? row.decodeJSON("limits", as: [String: Int].self)) ?? [:],
            expiresAt: try row.decode("expires_at"), revokedAt: try row.decode("revoked_at"),
            replacedBy: try row.decode("replaced_by"), createdBy: try row.decode("created_by"),
            createdAt: try row.decode("created_at"), lastUsedAt: try row.decode("last_used_at"))
    }
}
