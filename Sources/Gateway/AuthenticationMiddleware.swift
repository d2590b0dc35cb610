import HTTPTypes
import Hummingbird
import Tenancy

/// Verifies the API key (`Authorization: Bearer` or `x-api-key`) and stores the principal in
/// the context. Failures are OpenAI-shaped: 401 `invalid_api_key`, 403 for a suspended tenant.
struct AuthenticationMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext
    static let apiKeyHeader = HTTPField.Name("x-api-key")!  // safe: constant, valid token

    let authenticator: Authenticator

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        let key = Authenticator.key(
            authorization: request.headers[.authorization], apiKeyHeader: request.headers[Self.apiKeyHeader])
        var context = context
        do {
            let principal = try await authenticator.authenticate(key, clientAddress: context.clientAddress)
            context.principal = principal
            context.access.caller(tenantID: principal.tenantID, keyPrefix: principal.keyPrefix)
            context.logger[metadataKey: "key_prefix"] = .string(principal.keyPrefix)
            if let tenant = principal.tenantID { context.logger[metadataKey: "tenant_id"] = .string(tenant.uuidString.lowercased()) }
        } catch {
            throw ErrorMapping.map(error)
        }
        return try await next(request, context)
    }
}
