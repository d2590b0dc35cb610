import Foundation
import Metering
import Tenancy

extension Principal {
    /// The tenant key as Metering meters it (tests only use tenant keys here).
    public var metered: MeteredCaller {
        MeteredCaller(tenantID: tenantID ?? UUID(), keyID: keyID, plan: tenantPlan ?? "", keyLimits: limits)
    }
}
