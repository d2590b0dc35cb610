import Inference
import Tenancy

/// Model visibility as the gateway asks it: Tenancy's rule (`Principal.maySee`) applied to
/// what the registry knows of a model.
enum ModelAccess {
    static func visible(_ info: ModelInfo, to principal: Principal) -> Bool {
        principal.maySee(model: info.name, visibility: info.tenants)
    }
}
