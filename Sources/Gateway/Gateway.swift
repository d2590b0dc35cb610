import Hummingbird
import Logging

/// Everything the HTTP layer needs from the services below it.
public struct GatewayDependencies: Sendable {
    public var readiness: @Sendable () async -> ReadinessReport

    public init(readiness: @escaping @Sendable () async -> ReadinessReport) {
        self.readiness = readiness
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
        return router
    }
}
