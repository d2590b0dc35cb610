import Foundation
import Hummingbird
import Tenancy

/// Tenant self-service: a tenant administrator (`keys:manage`) manages its own tenant's keys.
/// Everything is scoped by the caller's tenant: another tenant's key or record is "not found".
struct TenantKeyRoutes {
    let apiKeys: APIKeyService
    let tenants: TenantService
    let maxBodyBytes: Int

    struct CreateKeyRequest: Decodable {
        var name: String
        var scopes: [String]?
        var allowedModels: [String]?
        var expiresAt: Date?
        var limits: [String: Int]?

        enum CodingKeys: String, CodingKey {
            case name, scopes, limits
            case allowedModels = "allowed_models"
            case expiresAt = "expires_at"
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
            let scopes = try Scope.parseList((body.scopes ?? ["inference"]).joined(separator: ","))
            // No escalation: a key can only hand out what it holds.
            for scope in scopes where !principal.has(scope) {
                throw OpenAIError(
                    status: .forbidden, message: "cannot grant scope '\(scope.rawValue)' that this key does not hold",
                    type: "permission_error", param: "scopes", code: "insufficient_scope")
            }
            var allowedModels = body.allowedModels ?? []
            if !principal.allowedModels.isEmpty {
                if allowedModels.isEmpty { allowedModels = principal.allowedModels }
                for model in allowedModels where !principal.allowedModels.contains(model) {
                    throw OpenAIError(
                        status: .forbidden, message: "cannot grant model '\(model)' that this key may not use",
                        type: "permission_error", param: "allowed_models", code: "insufficient_scope")
                }
            }
            let created = try await apiKeys.create(
                tenant: tenant,
                NewAPIKey(name: body.name, scopes: scopes, allowedModels: allowedModels, expiresAt: body.expiresAt, limits: body.limits ?? [:]),
                actor: .key(principal))
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
            let grace = try Self.grace(body?.gracePeriodSeconds)
            let created = try await apiKeys.rotate(id, tenant: tenant, grace: grace, actor: .key(principal))
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

    /// A path id; anything that is not a UUID is simply not found.
    static func id(_ context: GatewayRequestContext, _ name: String = "id") throws -> UUID {
        guard let text = context.parameters.get(name), let id = UUID(uuidString: text) else {
            throw TenancyError.notFound("no such object")
        }
        return id
    }

    static func grace(_ seconds: Int?) throws -> Duration {
        guard let seconds else { return .seconds(86_400) }
        guard (0...(90 * 86_400)).contains(seconds) else {
            throw OpenAIError.invalidRequest("grace_period_seconds must be between 0 and 7776000", param: "grace_period_seconds")
        }
        return .seconds(seconds)
    }

    /// Decodes a body when one was sent; nil for an empty body.
    static func optionalBody<Value: Decodable>(_ type: Value.Type, _ request: Request, _ context: GatewayRequestContext, limit: Int) async throws -> Value? {
        var request = request
        let buffer = try await JSONBody.collect(request, limit: limit)
        if buffer.readableBytes == 0 { return nil }
        request.body = .init(buffer: buffer)
        return try await JSONBody.decode(type, from: request, context: context, limit: limit)
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
