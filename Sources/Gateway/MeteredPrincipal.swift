import Metering
import Tenancy

extension Principal {
    /// The caller as Metering meters it; nil for an operator key (it runs no models).
    var metered: MeteredCaller? {
        guard let tenantID, let tenantPlan else { return nil }
        return MeteredCaller(tenantID: tenantID, keyID: keyID, plan: tenantPlan, keyLimits: limits)
    }
}
