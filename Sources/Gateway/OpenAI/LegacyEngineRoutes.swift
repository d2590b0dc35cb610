import Foundation
import Hummingbird
import Inference
import Tenancy

/// OpenAI's engine routes, as the openai 0.x Python clients call them:
/// `openai.Completion.create(engine="text-davinci-002", ...)` posts to
/// `/v1/engines/text-davinci-002/completions`. An engine is a model (or an alias); the
/// engine-scoped routes are the model-scoped ones with the model taken from the path, through
/// the same pipeline.
struct LegacyEngineRoutes {
    let pipeline: InferencePipeline
    let registry: ModelRegistry

    /// An engine as the 0.x clients list it.
    struct EngineObject: Encodable, Sendable {
        var id: String
        var object = "engine"
        var created: Int
        var owner = "modelgate"
        var ready: Bool
        var task: String?
    }

    func register(on group: RouterGroup<GatewayRequestContext>) {
        let registry = self.registry
        group.get("engines") { _, context in
            let principal = try context.require(.inference)
            let engines = ModelAndUsageRoutes.listing(registry, for: principal).map {
                EngineObject(id: $0.id, created: $0.created, ready: true, task: $0.task)
            }
            return JSONResponse(status: .ok, body: ListBody(data: engines))
        }
        group.get("engines/:engine") { _, context in
            let principal = try context.require(.inference)
            let name = context.parameters.get("engine") ?? ""
            guard let info = registry.info(name), ModelAccess.visible(info, to: principal) else { throw InferencePipeline.modelNotFound(name) }
            return JSONResponse(
                status: .ok,
                body: EngineObject(id: name, created: Int(info.loadedAt?.timeIntervalSince1970 ?? 0), ready: info.status == .ready, task: info.task?.rawValue))
        }
        let pipeline = self.pipeline
        let routes: [(String, @Sendable ([UInt8], Request) throws -> InferenceCall)] = [
            ("completions", { body, _ in try CompletionsRoutes.completionCall(body) }),
            ("chat/completions", { body, _ in try CompletionsRoutes.chatCall(body) }),
            ("embeddings", { body, _ in try EmbeddingsAndImagesRoutes.embeddingCall(body) }),
        ]
        for (path, call) in routes {
            group.post("engines/:engine/\(path)") { request, context in
                let engine = context.parameters.get("engine") ?? ""
                return try await pipeline.serve(request, context, route: "/v1/engines/{engine}/\(path)") { body, request in
                    try call(try Self.naming(engine, in: body), request)
                }
            }
        }
    }

    /// The request body with `model` set to the path's engine (the 0.x clients leave it out);
    /// a body naming another model is refused.
    static func naming(_ engine: String, in body: [UInt8]) throws -> [UInt8] {
        guard !body.isEmpty, var object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] else {
            return body  // not a JSON object: the route's own decoding says what is wrong
        }
        if let model = object["model"] {
            guard model as? String == engine else {
                throw OpenAIError.invalidRequest("model '\(model)' differs from the engine '\(engine)' in the path", param: "model")
            }
            return body
        }
        object["model"] = engine
        return Array(try JSONSerialization.data(withJSONObject: object))
    }
}
