import Audit
import Foundation
import Hummingbird
import Tenancy

/// Operator routes (`admin` scope): tenants, their keys, the audit log.
struct AdminRoutes {
    let tenants: TenantService
    let apiKeys: APIKeyService
    let auditLog: @Sendable (UUID?, Date?, Int) async throws -> [AuditEntry]
    let maxBodyBytes: Int
    let canonicalModel: @Sendable (String) -> String

    struct CreateTenantRequest: Decodable {
        var slug: String
        var displayName: String
        var contactEmail: String?
        var billingDetails: String?
        var plan: String?

        enum CodingKeys: String, CodingKey {
            case slug, plan
            case displayName = "display_name"
            case contactEmail = "contact_email"
            case billingDetails = "billing_details"
        }
    }

    struct UpdateTenantRequest: Decodable {
        var displayName: String?
        var contactEmail: String?
        var billingDetails: String?
        var plan: String?
        var payloadLogging: Bool?

        enum CodingKeys: String, CodingKey {
            case plan
            case displayName = "display_name"
            case contactEmail = "contact_email"
            case billingDetails = "billing_details"
            case payloadLogging = "payload_logging"
        }
    }

    struct DeletionBody: Encodable, Sendable {
        var id: String  // lower-case, as every other id in responses
        var deleted = true
        var revokedKeys: Int
        var shreddedDataKeys: Int

        enum CodingKeys: String, CodingKey {
            case id, deleted
            case revokedKeys = "revoked_keys"
            case shreddedDataKeys = "shredded_data_keys"
        }
    }

    func register(on group: RouterGroup<GatewayRequestContext>) {
        group.get("tenants") { request, context in
            let includeDeleted = request.uri.queryParameters.get("include_deleted") == "true"
            return JSONResponse(status: .ok, body: ListBody(data: try await tenants.list(includeDeleted: includeDeleted)))
        }
        group.post("tenants") { request, context in
            let principal = try context.requirePrincipal()
            let body = try await JSONBody.decode(CreateTenantRequest.self, from: request, context: context, limit: maxBodyBytes)
            let tenant = try await tenants.create(
                slug: body.slug, displayName: body.displayName, contactEmail: body.contactEmail,
                billingDetails: body.billingDetails, plan: body.plan, actor: .key(principal))
            return JSONResponse(status: .created, body: tenant)
        }
        group.get("tenants/:id") { _, context in
            JSONResponse(status: .ok, body: try await tenants.get(try await tenants.resolve(context)))
        }
        group.patch("tenants/:id") { request, context in
            let principal = try context.requirePrincipal()
            let id = try await tenants.resolve(context)
            let body = try await JSONBody.decode(UpdateTenantRequest.self, from: request, context: context, limit: maxBodyBytes)
            let changes = TenantChanges(
                displayName: body.displayName, contactEmail: body.contactEmail, billingDetails: body.billingDetails,
                plan: body.plan, payloadLogging: body.payloadLogging)
            return JSONResponse(status: .ok, body: try await tenants.update(id, changes, actor: .key(principal)))
        }
        group.delete("tenants/:id") { _, context in
            let principal = try context.requirePrincipal()
            let id = try await tenants.resolve(context)
            let report = try await tenants.delete(id, actor: .key(principal))
            return JSONResponse(status: .ok, body: DeletionBody(id: id.uuidString.lowercased(), revokedKeys: report.revokedKeys, shreddedDataKeys: report.shreddedDataKeys))
        }
        group.post("tenants/:id/suspend") { _, context in
            let principal = try context.requirePrincipal()
            return JSONResponse(status: .ok, body: try await tenants.suspend(try await tenants.resolve(context), actor: .key(principal)))
        }
        group.post("tenants/:id/resume") { _, context in
            let principal = try context.requirePrincipal()
            return JSONResponse(status: .ok, body: try await tenants.resume(try await tenants.resolve(context), actor: .key(principal)))
        }
        group.get("tenants/:id/keys") { _, context in
            let tenant = try await tenants.resolve(context)
            return JSONResponse(status: .ok, body: ListBody(data: try await apiKeys.list(tenant: tenant)))
        }
        group.post("tenants/:id/keys") { request, context in
            let principal = try context.requirePrincipal()
            let tenant = try await tenants.resolve(context)
            let body = try await JSONBody.decode(TenantKeyRoutes.CreateKeyRequest.self, from: request, context: context, limit: maxBodyBytes)
            let created = try await apiKeys.create(tenant: tenant, try body.newKey(canonicalModel: canonicalModel), issuer: .operator(.key(principal)))
            return JSONResponse(status: .created, body: CreatedKeyBody(created))
        }
        group.delete("tenants/:id/keys/:key") { _, context in
            let principal = try context.requirePrincipal()
            let tenant = try await tenants.resolve(context)
            return JSONResponse(status: .ok, body: try await apiKeys.revoke(try TenantKeyRoutes.id(context, "key"), tenant: tenant, actor: .key(principal)))
        }
        group.get("audit") { request, context in
            let query = request.uri.queryParameters
            var tenant: UUID?
            if let reference = query.get("tenant") { tenant = try await tenants.resolve(reference) }
            let since = try query.get("since").map { text -> Date in
                guard let date = ISO8601DateFormatter().date(from: text) else {
                    throw OpenAIError.invalidRequest("since must be an ISO 8601 time", param: "since")
                }
                return date
            }
            let limit = min(max(Int(query.get("limit") ?? "") ?? 1000, 1), 10_000)
            return JSONResponse(status: .ok, body: ListBody(data: try await auditLog(tenant, since, limit)))
        }
    }
}

extension TenantService {
    /// The tenant a path names (`{id}`): by id or by slug; not found otherwise.
    func resolve(_ context: GatewayRequestContext) async throws -> UUID {
        try await resolve(try TenantKeyRoutes.reference(context))
    }
}
