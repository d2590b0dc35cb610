import Audit
import Foundation

/// Who is calling: the verified API key and what it may do.
public struct Principal: Sendable, Equatable {
    public var keyID: UUID
    /// Non-secret display prefix (`mgk_AbCdEfGh`), safe for logs and audit entries.
    public var keyPrefix: String
    /// Nil for operator keys.
    public var tenantID: UUID?
    public var tenantSlug: String?
    public var tenantStatus: TenantStatus?
    public var tenantPlan: String?
    public var scopes: Set<Scope>
    /// Models this key may use; empty means every model the tenant may use.
    public var allowedModels: [String]
    /// Per-key limit overrides (metering reads them).
    public var limits: [String: Int]
    public var expiresAt: Date?
    /// The tenant keeps its requests and responses (sealed) in its payload log.
    public var payloadLogging = false

    public var isOperator: Bool { tenantID == nil }

    public func has(_ scope: Scope) -> Bool { scopes.contains(scope) }

    /// Whether this key's allow-list admits `model` (tenant visibility is checked separately).
    public func mayUse(model: String) -> Bool { allowedModels.isEmpty || allowedModels.contains(model) }

    /// The one rule for who may see and use a model, applied by every route that lists or
    /// runs models: a tenant key, a model that is public (`visibility` nil) or names the key's
    /// tenant, and the key's allow-list admitting it. Operator keys see no tenant models.
    public func maySee(model: String, visibility: [String]?) -> Bool {
        guard let tenantSlug else { return false }
        if let visibility, !visibility.contains(tenantSlug) { return false }
        return mayUse(model: model)
    }
}

public enum TenantStatus: String, Sendable, Codable, Equatable {
    case active, suspended, deleted
}

extension AuditActor {
    /// The key that acted, by its display prefix (never the key).
    public static func key(_ principal: Principal) -> AuditActor { AuditActor("key:\(principal.keyPrefix)") }
}
