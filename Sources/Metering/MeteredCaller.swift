import Foundation
import Postgres

/// Who a request is metered for: Metering's own view of a caller (the gateway makes it from
/// an authenticated key). Metering knows nothing of how keys are verified.
public struct MeteredCaller: Sendable, Equatable {
    public var tenantID: UUID
    public var keyID: UUID
    /// The tenant's plan (its default limits).
    public var plan: String
    /// The key's own limit overrides, by limit name (`LimitSettings.CodingKeys`).
    public var keyLimits: [String: Int]

    public init(tenantID: UUID, keyID: UUID, plan: String, keyLimits: [String: Int]) {
        self.tenantID = tenantID
        self.keyID = keyID
        self.plan = plan
        self.keyLimits = keyLimits
    }

    var tenantSubject: String { "tenant:" + tenantID.uuidString.lowercased() }
    var keySubject: String { "key:" + keyID.uuidString.lowercased() }
}

/// What changed in the limits, as other instances must hear it (their caches of keys and of
/// rate-limit state): a plan, a tenant's overrides, a key's.
public enum LimitChange: Sendable, Equatable {
    case plan(String)
    case tenant(UUID)
    case key(UUID)
}

/// Announces a limit change inside the transaction that makes it. The owner of the
/// announcement protocol (Tenancy's key-cache invalidation) implements it; the composition
/// root hands it to `LimitService`.
public protocol LimitChangeNotifier: Sendable {
    func limitsChanged(_ change: LimitChange, on connection: PostgresConnection) throws
}
