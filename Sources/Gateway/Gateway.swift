import Audit
import Foundation
import Hummingbird
import Inference
import Logging
import Metering
import Tenancy

/// Everything the HTTP layer needs from the services below it.
public struct GatewayDependencies: Sendable {
    public var readiness: @Sendable () async -> ReadinessReport
    public var authenticator: Authenticator
    public var tenants: TenantService
    public var apiKeys: APIKeyService
    public var auditLog: @Sendable (UUID?, Date?, Int) async throws -> [AuditEntry]
    public var registry: ModelRegistry
    public var meter: Meter
    public var idempotency: IdempotencyStore
    public var payloadLog: PayloadLog
    public var reports: Reports
    public var limits: LimitService
    public var prices: PriceBook
    /// Upstream models' credentials (sealed in PostgreSQL); nil: none can be set.
    public var upstreamCredentials: UpstreamCredentials?
    /// Asks every instance to `load`, `unload` or `reload` a model.
    public var modelControl: @Sendable (String, String) async throws -> Void
    public var maxBodyBytes: Int
    public var requestTimeout: Duration
    /// The Prometheus text exposition served at `GET /metrics`.
    public var metrics: @Sendable () async -> [UInt8]
    /// Whether `GET /metrics` needs an operator key.
    public var metricsNeedOperatorKey = false
    /// Drop OpenAI parameters a model's engine does not support instead of refusing them.
    public var dropUnsupportedParams = false
    /// The largest image decoded, and the most pixels one request's images may hold together.
    public var maxImagePixels = 40_000_000
    public var maxImagePixelsPerRequest = 100_000_000

    public init(
        readiness: @escaping @Sendable () async -> ReadinessReport, authenticator: Authenticator, tenants: TenantService,
        apiKeys: APIKeyService, auditLog: @escaping @Sendable (UUID?, Date?, Int) async throws -> [AuditEntry], registry: ModelRegistry,
        meter: Meter, idempotency: IdempotencyStore, payloadLog: PayloadLog, reports: Reports, limits: LimitService, prices: PriceBook,
        modelControl: @escaping @Sendable (String, String) async throws -> Void, maxBodyBytes: Int, requestTimeout: Duration,
        metrics: @escaping @Sendable () async -> [UInt8] = { [] }
    ) {
        self.readiness = readiness
        self.authenticator = authenticator
        self.tenants = tenants
        self.apiKeys = apiKeys
        self.auditLog = auditLog
        self.registry = registry
        self.meter = meter
        self.idempotency = idempotency
        self.payloadLog = payloadLog
        self.reports = reports
        self.limits = limits
        self.prices = prices
        self.modelControl = modelControl
        self.maxBodyBytes = maxBodyBytes
        self.requestTimeout = requestTimeout
        self.metrics = metrics
    }
}

/// Builds the router: a stack of small middlewares and route groups that only decode, call a
/// service and encode.
public enum Gateway {
    public static func makeRouter(_ dependencies: GatewayDependencies) -> Router<GatewayRequestContext> {
        let router = Router(context: GatewayRequestContext.self)
        router.add(middleware: RequestIDMiddleware())
        router.add(middleware: AccessLogMiddleware(logger: Logger(label: "modelgate.access")))
        router.add(middleware: ErrorMappingMiddleware())
        HealthRoutes(readiness: dependencies.readiness).register(on: router)
        router.get("openapi.json") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: OpenAPIDocument.json)))
        }

        let authentication = AuthenticationMiddleware(authenticator: dependencies.authenticator)
        let metrics = dependencies.metrics
        let needsKey = dependencies.metricsNeedOperatorKey
        (needsKey ? router.group().add(middleware: authentication) : router.group()).get("metrics") { _, context in
            if needsKey { _ = try context.require(.admin) }
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: await metrics())))
        }
        let tenantAPI = router.group("v1").add(middleware: authentication)
        let adminAPI = router.group("admin/v1").add(middleware: authentication).add(middleware: ScopeMiddleware(scope: .admin))
        IdentityRoutes().register(on: tenantAPI)
        // Allow-lists hold models' own names, whichever name (an alias) the request used.
        let registry = dependencies.registry
        let canonicalModel: @Sendable (String) -> String = { registry.canonicalName($0) ?? $0 }
        TenantKeyRoutes(
            apiKeys: dependencies.apiKeys, tenants: dependencies.tenants, maxBodyBytes: dependencies.maxBodyBytes, canonicalModel: canonicalModel
        ).register(on: tenantAPI)
        AdminRoutes(
            tenants: dependencies.tenants, apiKeys: dependencies.apiKeys, auditLog: dependencies.auditLog,
            maxBodyBytes: dependencies.maxBodyBytes, canonicalModel: canonicalModel
        ).register(on: adminAPI)
        let pipeline = InferencePipeline(
            registry: dependencies.registry, meter: dependencies.meter, idempotency: dependencies.idempotency,
            payloadLog: dependencies.payloadLog, maxBodyBytes: dependencies.maxBodyBytes, requestTimeout: dependencies.requestTimeout,
            dropUnsupportedParams: dependencies.dropUnsupportedParams,
            upstreamCredential: { [credentials = dependencies.upstreamCredentials] in try await credentials?.secret(for: $0) })
        CompletionsRoutes(pipeline: pipeline).register(on: tenantAPI)
        EmbeddingsAndImagesRoutes(
            pipeline: pipeline,
            imageLimits: .init(maxPixels: dependencies.maxImagePixels, maxPixelsPerRequest: dependencies.maxImagePixelsPerRequest)
        ).register(on: tenantAPI)
        PayloadLogRoutes(payloadLog: dependencies.payloadLog).register(on: tenantAPI)
        LegacyEngineRoutes(pipeline: pipeline, registry: dependencies.registry).register(on: tenantAPI)
        ModelAndUsageRoutes(
            registry: dependencies.registry, reports: dependencies.reports, limits: dependencies.limits, prices: dependencies.prices,
            tenants: dependencies.tenants, modelControl: dependencies.modelControl, maxBodyBytes: dependencies.maxBodyBytes
        ).register(tenant: tenantAPI, admin: adminAPI)
        if let credentials = dependencies.upstreamCredentials {
            UpstreamCredentialRoutes(credentials: credentials, registry: dependencies.registry, maxBodyBytes: dependencies.maxBodyBytes)
                .register(admin: adminAPI)
        }
        return router
    }
}
