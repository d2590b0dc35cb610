import Hummingbird
import Tenancy

/// Lets a request through only when its key holds `scope` (403 otherwise): one check for a
/// whole route group, such as the operator API's `admin`, instead of one per route.
struct ScopeMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext
    let scope: Scope

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        _ = try context.require(scope)
        return try await next(request, context)
    }
}
