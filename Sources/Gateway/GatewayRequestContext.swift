import Foundation
import Hummingbird
import Logging
import Tenancy

/// Per-request state carried through the middleware chain.
public struct GatewayRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The `x-request-id` of this request (accepted from the client or minted).
    public var requestID: String = ""
    /// The verified caller; set by the authentication middleware on authenticated routes.
    public var principal: Principal?
    /// The peer's IP address (for failed-attempt accounting).
    public let clientAddress: String
    /// What the access log will say about this request.
    public let access = AccessRecord()

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.clientAddress = source.channel.remoteAddress?.ipAddress ?? "unknown"
    }

    /// The principal, or 401 if the route forgot authentication (a programming error, not a crash).
    public func requirePrincipal() throws -> Principal {
        guard let principal else {
            throw OpenAIError(status: .unauthorized, message: AuthenticationError.missingKey.message, type: "invalid_request_error", code: "invalid_api_key")
        }
        return principal
    }

    /// The principal if it holds `scope`, else 403.
    public func require(_ scope: Scope) throws -> Principal {
        let principal = try requirePrincipal()
        guard principal.has(scope) else {
            throw OpenAIError(
                status: .forbidden, message: "This API key lacks the '\(scope.rawValue)' scope required for this route.",
                type: "permission_error", code: "insufficient_scope")
        }
        return principal
    }

    /// The caller's tenant (tenant keys only), with `scope`.
    public func requireTenant(_ scope: Scope) throws -> (Principal, UUID) {
        let principal = try require(scope)
        guard let tenant = principal.tenantID else {
            throw OpenAIError(
                status: .forbidden, message: "Operator keys belong to no tenant; use a tenant key for this route.",
                type: "permission_error", code: "tenant_key_required")
        }
        return (principal, tenant)
    }
}
