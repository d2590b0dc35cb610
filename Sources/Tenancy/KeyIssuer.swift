import Audit
import Foundation

/// Who issues an API key — and therefore what the new key may hold. Every path that hands out
/// a secret (create, rotate, and any later one) takes an issuer and goes through `bound` or
/// `checkRotation`: a tenant key can pass on at most its own scopes, models and lifetime.
///
/// ```swift
/// let request = try KeyIssuer.tenantKey(principal).bound(NewAPIKey(name: "ci", scopes: [.inference]))
/// ```
public enum KeyIssuer: Sendable {
    /// The operator (the CLI, or an operator key): any tenant scope, any model, any expiry.
    case `operator`(AuditActor)
    /// A tenant key (scope `keys:manage`): bounded by what it holds itself.
    case tenantKey(Principal)

    public var actor: AuditActor {
        switch self {
        case .operator(let actor): actor
        case .tenantKey(let principal): .key(principal)
        }
    }

    /// The key to create: `request` with what it leaves open filled in from the issuer (its
    /// model allow-list, its expiry), or `notGrantable` naming the first thing the issuer does
    /// not hold.
    public func bound(_ request: NewAPIKey) throws -> NewAPIKey {
        guard case .tenantKey(let issuer) = self else { return request }
        var bounded = request
        for scope in request.scopes.sorted() where !issuer.has(scope) {
            throw TenancyError.notGrantable(field: "scopes", message: "cannot grant scope '\(scope.rawValue)' that this key does not hold")
        }
        if !issuer.allowedModels.isEmpty {
            if bounded.allowedModels.isEmpty { bounded.allowedModels = issuer.allowedModels }
            for model in bounded.allowedModels where !issuer.allowedModels.contains(model) {
                throw TenancyError.notGrantable(field: "allowed_models", message: "cannot grant model '\(model)' that this key may not use")
            }
        }
        if let limit = issuer.expiresAt {
            guard let expiry = bounded.expiresAt else {
                bounded.expiresAt = limit
                return bounded
            }
            guard expiry <= limit else {
                throw TenancyError.notGrantable(
                    field: "expires_at", message: "cannot grant a lifetime past this key's own expiry (\(Self.format(limit)))")
            }
        }
        return bounded
    }

    /// Rotation hands out a secret with `key`'s scopes, models and expiry unchanged: refused
    /// when that is more than the issuer holds (narrowing it instead would break the key
    /// owner's application).
    public func checkRotation(of key: APIKey) throws {
        guard case .tenantKey(let issuer) = self else { return }
        for scope in key.scopes.sorted() where !issuer.has(scope) {
            throw TenancyError.notGrantable(
                field: "id", message: "cannot rotate a key with scope '\(scope.rawValue)' that this key does not hold")
        }
        if !issuer.allowedModels.isEmpty {
            if key.allowedModels.isEmpty {
                throw TenancyError.notGrantable(field: "id", message: "cannot rotate a key that may use every model: this key may not")
            }
            for model in key.allowedModels where !issuer.allowedModels.contains(model) {
                throw TenancyError.notGrantable(field: "id", message: "cannot rotate a key that may use model '\(model)': this key may not")
            }
        }
        if let limit = issuer.expiresAt, key.expiresAt.map({ $0 > limit }) ?? true {
            throw TenancyError.notGrantable(
                field: "id", message: "cannot rotate a key that outlives this key's own expiry (\(Self.format(limit)))")
        }
    }

    static func format(_ date: Date) -> String { ISO8601DateFormatter().string(from: date) }
}
