import Foundation

/// What a key may do. Routes declare the scope they need.
public enum Scope: String, Sendable, CaseIterable, Codable, Comparable {
    /// Call models (completions, embeddings, classifications) and list them.
    case inference
    /// Read the tenant's own usage.
    case usageRead = "usage:read"
    /// Manage the tenant's own keys (a tenant administrator).
    case keysManage = "keys:manage"
    /// Read the tenant's own payload logs (its prompts and completions, when it opted in).
    case logsRead = "logs:read"
    /// Operator: manage tenants, plans, models, billing. Belongs to no tenant.
    case admin

    public static func < (lhs: Scope, rhs: Scope) -> Bool { lhs.rawValue < rhs.rawValue }

    /// Parses a comma-separated list (`inference,usage:read`); throws naming the bad scope.
    public static func parseList(_ text: String) throws -> [Scope] {
        let names = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        return try names.map { name in
            guard let scope = Scope(rawValue: name) else {
                throw TenancyError.invalid(
                    field: "scopes",
                    message: "unknown scope '\(name)' (known: \(Scope.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            return scope
        }
    }
}
