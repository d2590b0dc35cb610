import Foundation
import Inference

/// Time spent inside the engines for the gateway benchmark's requests: a completion of one
/// token on a text model, and one image through a classifier (decode, preprocess, forward).
enum EngineProbe {
    static func run(models: String, seconds: Double) async throws {
        let registry = ModelRegistry(directory: models)
        await registry.loadAll()
        if case .text(let generator)? = registry.engine("shakespeare")?.1 {
            var parameters = SamplingParameters()
            parameters.maxTokens = 1
            parameters.temperature = 0
            let prompt = generator.tokenizer.encode("ROMEO:")
            let rate = try await measure(seconds: seconds) {
                for try await _ in try generator.generate(GenerationRequest(prompt: prompt, parameters: parameters)) {}
            }
            printJSON(["benchmark": "engine", "route": "completion", "engine_ms_per_request": (1000 / rate * 1000).rounded() / 1000])
        }
        if case .images(let service)? = registry.engine("cifar")?.1 {
            let image = Array(try Data(contentsOf: URL(fileURLWithPath: models + "/image.jpg")))
            let rate = try await measure(seconds: seconds) {
                _ = try await service.classify([try service.prepare(image)], topK: 3, fairnessKey: "bench")
            }
            printJSON(["benchmark": "engine", "route": "classification", "engine_ms_per_request": (1000 / rate * 1000).rounded() / 1000])
        }
    }

    static func measure(seconds: Double, _ body: () async throws -> Void) async throws -> Double {
        try await body()
        var count = 0
        let start = Date()
        while Date().timeIntervalSince(start) < seconds {
            try await body()
            count += 1
        }
        return Double(count) / Date().timeIntervalSince(start)
    }
}
