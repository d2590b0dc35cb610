import Foundation
import Hummingbird
import Tenancy

/// Tenant self-service: a tenant administrator (`keys:manage`) manages its own tenant's keys.
/// Everything is scoped by the caller's tenant: another tenant's key or record is "not found".
struct TenantKeyRoutes {
    let apiKeys: APIKeyService
    let tenants: TenantService
    let maxBodyBytes: Int
    /// A model's own name for a name or alias (allow-lists hold own names).
    let canonicalModel: @Sendable (String) -> String

    /// `POST /v1/keys` and `POST /admin/v1/tenants/{id}/keys`. The CLI's names are accepted
    /// too: `models` for `allowed_models`, and `expires` (an ISO 8601 time or a duration such
    /// as `30d`) for `expires_at`; giving both spellings of one field is an error.
    struct CreateKeyRequest: Decodable {
        var name: String
        var scopes: [String]?
        var allowedModels: [String]?
        var models: [String]?
        var expiresAt: Date?
        var expires: String?
        /// The key's own limit overrides; unknown limit names are refused like any unknown field.
        var limits: LimitSettingsInput?

        enum CodingKeys: String, CodingKey {
            case name, scopes, limits, models, expires
            case allowedModels = "allowed_models"
            case expiresAt = "expires_at"
        }

        func newKey(canonicalModel: (String) -> String) throws -> NewAPIKey {
            if allowedModels != nil, models != nil {
                throw OpenAIError.invalidRequest("give allowed_models or its alias models, not both", param: "models")
            }
            if expiresAt != nil, expires != nil {
                throw OpenAIError.invalidRequest("give expires_at or its alias expires, not both", param: "expires")
            }
            return NewAPIKey(
                name: name, scopes: try Scope.parseList((scopes ?? ["inference"]).joined(separator: ",")),
                allowedModels: (allowedModels ?? models ?? []).map(canonicalModel), expiresAt: try expiresAt ?? expires.map { try DurationText.expiry($0, field: "expires") },
                limits: try limits?.keyLimits() ?? [:])
        }
    }

    struct RotateKeyRequest: Decodable {
        var gracePeriodSeconds: Int?
        enum CodingKeys: String, CodingKey { case gracePeriodSeconds = "grace_period_seconds" }
    }

    func register(on group: RouterGroup<GatewayRequestContext>) {
        group.get("keys") { _, context in
            let (_, tenant) = try context.requireTenant(.keysManage)
            return JSONResponse(status: .ok, body: ListBody(data: try await apiKeys.list(tenant: tenant)))
        }
        group.post("keys") { request, context in
            let (principal, tenant) = try context.requireTenant(.keysManage)
            let body = try await JSONBody.decode(CreateKeyRequest.self, from: request, context: context, limit: maxBodyBytes)
            let created = try await apiKeys.create(tenant: tenant, try body.newKey(canonicalModel: canonicalModel), issuer: .tenantKey(principal))
            return JSONResponse(status: .created, body: CreatedKeyBody(created))
        }
        group.delete("keys/:id") { _, context in
            let (principal, tenant) = try context.requireTenant(.keysManage)
            let id = try Self.id(context)
            return JSONResponse(status: .ok, body: try await apiKeys.revoke(id, tenant: tenant, actor: .key(principal)))
        }
        group.post("keys/:id/rotate") { request, context in
            let (principal, tenant) = try context.requireTenant(.keysManage)
            let id = try Self.id(context)
            let body = try await Self.optionalBody(RotateKeyRequest.self, request, context, limit: maxBodyBytes)
            let grace = body?.gracePeriodSeconds.map { Duration.seconds($0) } ?? APIKeyService.defaultGrace
            let created = try await apiKeys.rotate(id, tenant: tenant, grace: grace, issuer: .tenantKey(principal))
            return JSONResponse(status: .created, body: CreatedKeyBody(created))
        }
        group.get("tenants/:id") { _, context in
            let (_, tenant) = try context.requireTenantAnyScope()
            let id = try Self.id(context)
            guard id == tenant else { throw TenancyError.notFound("no tenant \(id.uuidString.lowercased())") }
            return JSONResponse(status: .ok, body: try await tenants.get(tenant))
        }
        group.get("tenant") { _, context in
            let (_, tenant) = try context.requireTenantAnyScope()
            return JSONResponse(status: .ok, body: try await tenants.get(tenant))
        }
    }

    /// A path's tenant reference — its id or its slug — for `TenantService.resolve`.
    static func reference(_ context: GatewayRequestContext, _ name: String = "id") throws -> String {
        guard let text = context.parameters.get(name), !text.isEmpty, text.count <= 100 else { throw TenancyError.notFound("no such tenant") }
        return text
    }

    /// A path id; anything that is not a UUID is simply not found.
    static func id(_ context: GatewayRequestContext, _ name: String = "id") throws -> UUID {
        guard let text = context.parameters.get(name), let id = UUID(uuidString: text) else {
            throw TenancyError.notFound("no such object")
        }
        return id
    }

    /// Decodes a body when one was sent; nil for an empty body.
    static func optionalBody<Value: Decodable>(_ type: Value.Type, _ request: Request, _ context: GatewayRequestContext, limit: Int) async throws -> Value? {
        let bytes = Array(buffer: try await JSONBody.collect(request, limit: limit))
        return bytes.isEmpty ? nil : try JSONBody.decode(type, bytes)
    }
}

extension GatewayRequestContext {
    /// Any tenant key (whatever its scopes).
    func requireTenantAnyScope() throws -> (Principal, UUID) {
        let principal = try requirePrincipal()
        guard let tenant = principal.tenantID else {
            throw OpenAIError(
                status: .forbidden, message: "Operator keys belong to no tenant; use /admin/v1/tenants.",
                type: "permission_error", code: "tenant_key_required")
        }
        return (principal, tenant)
    }
}

struct ListBody<Element: Encodable & Sendable>: Encodable, Sendable {
    var object = "list"
    var data: [Element]
}

/// A created key: the secret appears here once and never again.
struct CreatedKeyBody: Encodable, Sendable {
    var key: String
    var apiKey: APIKey

    init(_ created: CreatedAPIKey) {
        key = created.secret
        apiKey = created.key
    }

    func encode(to encoder: any Encoder) throws {
        try apiKey.encode(to: encoder)
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(key, forKey: .key)
    }

    enum Keys: String, CodingKey { case key }
}
