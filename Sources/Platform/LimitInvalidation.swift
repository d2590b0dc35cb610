import Metering
import Postgres
import Tenancy

/// Metering announces limit changes through Tenancy's key-cache invalidation (the owner of
/// that protocol), so every instance drops its cached keys and rate-limit observations.
struct LimitInvalidation: LimitChangeNotifier {
    let notifier = AuthNotifier()

    func limitsChanged(_ change: LimitChange, on connection: PostgresConnection) throws {
        switch change {
        case .plan(let plan): try notifier.planChanged(plan, connection)
        case .tenant(let tenant): try notifier.tenantChanged(tenant, connection)
        case .key(let key): try notifier.keyChanged(key, connection)
        }
    }
}
