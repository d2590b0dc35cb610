import Foundation
import Hummingbird
import Tenancy

/// `GET /v1/me`: who this key is (prefix, tenant, scopes, allowed models, expiry). Answered from
/// the verified-key cache, so clients can check a key cheaply.
struct IdentityRoutes {
    struct Identity: Encodable, Sendable {
        var object = "api_key"
        var prefix: String
        var tenantID: String?
        var tenant: String?
        var scopes: [String]
        var allowedModels: [String]
        var expiresAt: Date?

        enum CodingKeys: String, CodingKey {
            case object, prefix, tenant, scopes
            case tenantID = "tenant_id"
            case allowedModels = "allowed_models"
            case expiresAt = "expires_at"
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(object, forKey: .object)
            try container.encode(prefix, forKey: .prefix)
            try container.encode(tenantID, forKey: .tenantID)
            try container.encode(tenant, forKey: .tenant)
            try container.encode(scopes, forKey: .scopes)
            try container.encode(allowedModels, forKey: .allowedModels)
            try container.encode(expiresAt, forKey: .expiresAt)
        }
    }

    func register(on group: RouterGroup<GatewayRequestContext>) {
        group.get("me") { _, context in
            let principal = try context.requirePrincipal()
            return JSONResponse(status: .ok, body: Identity(
                prefix: principal.keyPrefix, tenantID: principal.tenantID?.uuidString.lowercased(), tenant: principal.tenantSlug,
                scopes: principal.scopes.map(\.rawValue).sorted(), allowedModels: principal.allowedModels, expiresAt: principal.expiresAt))
        }
    }
}
