/// Errors of the tenancy layer, mapped once at the edge (HTTP status or CLI line).
public enum TenancyError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The object does not exist, or the caller may not know it exists (cross-tenant access).
    case notFound(String)
    /// A uniqueness or state conflict (duplicate slug, already revoked...).
    case conflict(String)
    /// A field is invalid; `field` names it.
    case invalid(field: String, message: String)
    /// The caller lacks a scope or the tenant is not active.
    case forbidden(String)
    /// The caller asked to hand out more than it holds itself (a scope, a model, a lifetime);
    /// `field` names the request field.
    case notGrantable(field: String, message: String)

    public var description: String {
        switch self {
        case .notFound(let message), .conflict(let message), .forbidden(let message): message
        case .invalid(let field, let message): "\(field): \(message)"
        case .notGrantable(_, let message): message
        }
    }
}
