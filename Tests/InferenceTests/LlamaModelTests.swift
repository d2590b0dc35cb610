import Foundation
import Testing
@testable import Inference

/// The Llama family against transformers (tools/make_llama_fixtures.py): a tiny Llama with
/// grouped-query attention, an untied head and Llama 3 rope scaling, and a tiny Qwen2 with
/// q/k/v biases and a tied head, in float32.
@Suite struct LlamaModelTests {
    struct Reference: Decodable {
        struct Prompt: Decodable {
            var tokens: [Int]
            var logits: [[Float]]
            var greedy: [Int]
        }
        var prompts: [Prompt]
    }

    static let fixtures = ["tiny-llama", "tiny-qwen2"]

    static func load(_ name: String) throws -> (LlamaModel, Reference) {
        let folder = SharedData.fixtures + "/" + name
        let reference = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: URL(fileURLWithPath: folder + "/reference.json")))
        return (try LlamaModel(directory: folder), reference)
    }

    @Test func theFixturesExerciseWhatTheyClaim() throws {
        let (llama, _) = try Self.load("tiny-llama")
        #expect(llama.config.kvHeads == 2 && llama.config.heads == 4 && !llama.config.tiedEmbeddings && !llama.config.attentionBias)
        #expect(llama.config.ropeScaling == .llama3(factor: 8, lowFrequencyFactor: 1, highFrequencyFactor: 4, originalContext: 16))
        let (qwen, _) = try Self.load("tiny-qwen2")
        #expect(qwen.config.tiedEmbeddings && qwen.config.attentionBias && qwen.config.ropeScaling == nil)
    }

    @Test(arguments: fixtures) func logitsMatchTransformersWithin1e4AtEveryPosition(fixture: String) throws {
        let (model, reference) = try Self.load(fixture)
        for prompt in reference.prompts {
            let logits = model.forward([.init(tokens: prompt.tokens, cache: model.makeCache(capacity: 64), allLogits: true)])[0]
            let expected = prompt.logits.flatMap { $0 }
            #expect(logits.count == expected.count)
            let worst = zip(logits, expected).map { abs($0 - $1) }.max() ?? .infinity
            #expect(worst < 1e-4, "\(fixture): max |Δ| = \(worst)")
        }
    }

    @Test(arguments: fixtures) func greedyContinuationsMatchFor32TokensThroughTheCache(fixture: String) throws {
        let (model, reference) = try Self.load(fixture)
        for prompt in reference.prompts {
            let cache = model.makeCache(capacity: 64)
            var logits = model.forward([.init(tokens: prompt.tokens, cache: cache)])[0]
            var generated: [Int] = []
            var recomputed: [Float] = []
            for _ in 0..<32 {
                let next = logits.indices.max { logits[$0] < logits[$1] } ?? 0
                generated.append(next)
                logits = model.forward([.init(tokens: [next], cache: cache)])[0]
                // Incremental decoding equals recomputing the whole sequence.
                recomputed = model.forward([.init(tokens: prompt.tokens + generated, cache: model.makeCache(capacity: 64))])[0]
                #expect(zip(logits, recomputed).map { abs($0 - $1) }.max() ?? 1 < 1e-4)
            }
            #expect(generated == prompt.greedy, "\(fixture)")
        }
    }

    @Test(arguments: fixtures) func aBatchedStepEqualsSeparateSteps(fixture: String) throws {
        let (model, reference) = try Self.load(fixture)
        let prompts = reference.prompts.map(\.tokens)
        let caches = prompts.map { _ in model.makeCache(capacity: 64) }
        let batched = model.forward(zip(prompts, caches).map { .init(tokens: $0, cache: $1, allLogits: true) })
        for (index, prompt) in prompts.enumerated() {
            let alone = model.forward([.init(tokens: prompt, cache: model.makeCache(capacity: 64), allLogits: true)])[0]
            #expect(batched[index].count == alone.count)
            #expect(zip(batched[index], alone).allSatisfy { $0 == $1 }, "\(fixture)")
        }
        // And decoding steps of both sequences together equal each alone.
        let next = model.forward(zip(prompts, caches).map { .init(tokens: [$0.first ?? 0], cache: $1) })
        for (index, prompt) in prompts.enumerated() {
            let cache = model.makeCache(capacity: 64)
            _ = model.forward([.init(tokens: prompt, cache: cache)])
            let alone = model.forward([.init(tokens: [prompt.first ?? 0], cache: cache)])[0]
            #expect(zip(next[index], alone).allSatisfy { abs($0 - $1) < 1e-5 })
        }
    }

    @Test func anIncompleteOrUnsupportedFolderFailsNamingTheFileAndField() throws {
        let folder = NSTemporaryDirectory() + "mg-llama-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let source = SharedData.fixtures + "/tiny-llama"
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: source + "/config.json"))) as? [String: Any] ?? [:]
        func attempt(_ change: (inout [String: Any]) -> Void, weights: Bool = true) throws -> String {
            var edited = config
            change(&edited)
            try JSONSerialization.data(withJSONObject: edited).write(to: URL(fileURLWithPath: folder + "/config.json"))
            try? FileManager.default.removeItem(atPath: folder + "/model.safetensors")
            if weights { try FileManager.default.copyItem(atPath: source + "/model.safetensors", toPath: folder + "/model.safetensors") }
            do {
                _ = try LlamaModel(directory: folder)
                return ""
            } catch {
                return "\(error)"
            }
        }
        #expect(try attempt { _ in } == "")
        #expect(try attempt { $0["model_type"] = "mamba" }.contains("config.json: model_type 'mamba' is not supported"))
        #expect(try attempt { $0["num_key_value_heads"] = 3 }.contains("num_key_value_heads"))
        #expect(try attempt { $0["rope_scaling"] = ["rope_type": "yarn", "factor": 4.0] }.contains("rope_scaling type 'yarn'"))
        #expect(try attempt { $0.removeValue(forKey: "hidden_size") }.contains("hidden_size"))
        #expect(try attempt({ _ in }, weights: false).contains("model.safetensors"))
        let shapeError = try attempt { $0["intermediate_size"] = 128 }
        #expect(shapeError.contains("model.safetensors: tensor 'model.layers.0.mlp.") && shapeError.contains("shape"), "\(shapeError)")
    }
}
