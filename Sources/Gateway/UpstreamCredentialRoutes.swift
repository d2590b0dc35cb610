import Foundation
import Hummingbird
import Inference
import Tenancy

/// `PUT|GET|DELETE /admin/v1/models/{name}/credential`: the secret an upstream model's
/// servers want (sent as `Authorization: Bearer`). Stored sealed; what comes back is only its
/// fingerprint. Every instance uses a new credential within seconds, without a restart.
struct UpstreamCredentialRoutes {
    let credentials: UpstreamCredentials
    let registry: ModelRegistry
    let maxBodyBytes: Int

    struct CredentialInput: Decodable {
        var credential: String
    }

    struct Cleared: Encodable {
        var model: String
        var deleted: Bool
    }

    /// The model's own name; refused for a model that is not served by upstreams.
    func upstreamModel(_ context: GatewayRequestContext) throws -> String {
        let name = context.parameters.get("name") ?? ""
        guard let info = registry.info(name) else {
            guard registry.discover().contains(name) else { throw TenancyError.notFound("no model '\(name)' in the model directory") }
            return name
        }
        guard info.engine == "upstream" else {
            throw TenancyError.invalid(field: "name", message: "'\(info.name)' is served by the \(info.engine) engine; only upstream models take a credential")
        }
        return info.name
    }

    func register(admin: RouterGroup<GatewayRequestContext>) {
        admin.put("models/:name/credential") { request, context in
            let principal = try context.requirePrincipal()
            let model = try upstreamModel(context)
            let body = try await JSONBody.decode(CredentialInput.self, from: request, context: context, limit: maxBodyBytes)
            return JSONResponse(status: .ok, body: try await credentials.set(model: model, secret: body.credential, actor: .key(principal)))
        }
        admin.get("models/:name/credential") { _, context in
            let model = try upstreamModel(context)
            guard let info = try await credentials.info(model: model) else { throw TenancyError.notFound("model '\(model)' has no credential") }
            return JSONResponse(status: .ok, body: info)
        }
        admin.delete("models/:name/credential") { _, context in
            let principal = try context.requirePrincipal()
            let model = try upstreamModel(context)
            return JSONResponse(status: .ok, body: Cleared(model: model, deleted: try await credentials.clear(model: model, actor: .key(principal))))
        }
    }
}
