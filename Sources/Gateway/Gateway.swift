import Foundation
import Hummingbird
import Logging
import Tenancy

/// Everything the HTTP layer needs from the services below it.
public struct GatewayDependencies: Sendable {
    public var readiness: @Sendable () async -> ReadinessReport
    public var authenticator: Authenticator
    public var tenants: TenantService
    public var apiKeys: APIKeyService
    public var auditLog: @Sendable (UUID?, Date?, Int) async throws -> [AuditEntry]
    public var maxBodyBytes: Int

    public init(
        readiness: @escaping @Sendable () async -> ReadinessReport, authenticator: Authenticator, tenants: TenantService,
        apiKeys: APIKeyService, auditLog: @escaping @Sendable (UUID?, Date?, Int) async throws -> [AuditEntry],
        maxBodyBytes: Int
    ) {
        self.readiness = readiness
        self.authenticator = authenticator
        self.tenants = tenants
        self.apiKeys = apiKeys
        self.auditLog = auditLog
        self.maxBodyBytes = maxBodyBytes
    }
}

/// Builds the router: a stack of small middlewares and route groups that only decode, call a
/// service and encode.
public enum Gateway {
    public static func makeRouter(_ dependencies: GatewayDependencies) -> Router<GatewayRequestContext> {
        let router = Router(context: GatewayRequestContext.self)
        router.add(middleware: RequestIDMiddleware())
        router.add(middleware: ErrorMappingMiddleware())
        HealthRoutes(readiness: dependencies.readiness).register(on: router)

        let authentication = AuthenticationMiddleware(authenticator: dependencies.authenticator)
        let tenantAPI = router.group("v1").add(middleware: authentication)
        IdentityRoutes().register(on: tenantAPI)
        TenantKeyRoutes(apiKeys: dependencies.apiKeys, tenants: dependencies.tenants, maxBodyBytes: dependencies.maxBodyBytes)
            .register(on: tenantAPI)
        let adminAPI = router.group("admin/v1").add(middleware: authentication)
        AdminRoutes(
            tenants: dependencies.tenants, apiKeys: dependencies.apiKeys, auditLog: dependencies.auditLog,
            maxBodyBytes: dependencies.maxBodyBytes
        ).register(on: adminAPI)
        return router
    }
}
