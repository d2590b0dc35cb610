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

/// `options.kv_cache_mb`: the key/value cache the running sequences hold never passes the
/// budget (requests wait their turn), a request that could never fit is refused, and a budget
/// the machine cannot hold fails the load with the numbers.
@Suite struct KeyValueCacheBudgetTests {
    @Test func runningSequencesStayWithinTheBudgetAndAllFinish() async throws {
        let folder = SharedData.fixtures + "/tiny-llama"
        let model = try LlamaModel(directory: folder)
        let tokenizer = try BPETokenizer(directory: folder)
        let perRequest = Scheduler.cacheBytes(model: model, promptTokens: 10, maxTokens: 20, choices: 1)
        #expect(perRequest == 30 * 2 * 2 * 2 * 16 * 4)  // positions x layers x (k, v) x kv heads x head size x float
        let budget = perRequest * 3 / 2  // room for one request at a time
        let generator = TextGenerator(model: model, tokenizer: tokenizer, stopTokens: [], cacheBudget: budget)
        defer { generator.shutdown() }
        var parameters = SamplingParameters()
        parameters.maxTokens = 20
        parameters.temperature = 0
        let streams = try (0..<4).map { index in
            try generator.generate(GenerationRequest(prompt: (1...10).map { $0 + index }, parameters: parameters))
        }
        for stream in streams {
            var completion = -1
            for try await event in stream { if case .finished(_, _, let tokens) = event { completion = tokens } }
            #expect(completion == 20)
        }
        let peak = generator.statistics.peakCacheBytes
        #expect(peak > 0 && peak <= budget, "peak \(peak) bytes, budget \(budget)")

        var larger = parameters
        larger.maxTokens = 40
        #expect(throws: GenerationError.self) { try generator.validate(GenerationRequest(prompt: Array(1...10), parameters: larger)) }
        larger.maxTokens = 20
        larger.n = 2
        #expect(throws: GenerationError.self) { try generator.validate(GenerationRequest(prompt: Array(1...10), parameters: larger)) }
    }

    @Test func aBudgetTheMachineCannotHoldFailsTheLoad() throws {
        let folder = try tinyLlamaFolderForManifests()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        for (megabytes, loads) in [(16, true), (1 << 24, false), ((1 << 24) + 1, false)] {
            try #"{"engine": "transformer-lm", "options": {"kv_cache_mb": \#(megabytes)}}"#.write(toFile: folder + "/model.json", atomically: true, encoding: .utf8)
            do {
                let engine = try TransformerLMFactory.load(directory: folder, manifest: try EngineFactories.check(directory: folder))
                if case .text(let generator) = engine {
                    #expect(generator.cacheBudget == megabytes << 20)
                    generator.shutdown()
                }
                #expect(loads, "\(megabytes) MB loaded")
            } catch {
                #expect(!loads, "\(error)")
                #expect("\(error)".contains("options.kv_cache_mb"), "\(error)")
            }
        }
    }
}

/// `options.kv_cache_format: "f16"`: keys and values stored as float16 (half the memory per
/// position), widened exactly as attention reads them.
@Suite struct HalfPrecisionCacheTests {
    static func load(_ fixture: String) throws -> (f32: LlamaModel, f16: LlamaModel, LlamaModelTests.Reference) {
        let (model, reference) = try LlamaModelTests.load(fixture)
        return (model, try LlamaModel(directory: SharedData.fixtures + "/" + fixture, cacheFormat: .f16), reference)
    }

    @Test(arguments: LlamaModelTests.fixtures) func logitsStayCloseToTransformersAndTheCacheHalves(fixture: String) throws {
        let (f32, f16, reference) = try Self.load(fixture)
        #expect(f16.cacheBytesPerPosition * 2 == f32.cacheBytesPerPosition)
        var largest: Float = 0
        for prompt in reference.prompts {
            let cache = f16.makeCache(capacity: 64)
            let logits = f16.forward([.init(tokens: prompt.tokens, cache: cache, allLogits: true)])[0]
            let worst = zip(logits, prompt.logits.flatMap { $0 }).map { abs($0 - $1) }.max() ?? .infinity
            largest = max(largest, worst)
            #expect(worst < F16Bound.logits, "\(fixture): max |Δ| = \(worst)")
            // What the cache holds is each float rounded to float16.
            let keys = cache.keys[0].assumingMemoryBound(to: Float16.self)
            let exact = f32.makeCache(capacity: 64)
            _ = f32.forward([.init(tokens: prompt.tokens, cache: exact)])
            let exactKeys = exact.keys[0].assumingMemoryBound(to: Float.self)
            for position in 0..<prompt.tokens.count {
                for i in 0..<f32.config.headSize {
                    #expect(keys[position * f32.config.headSize + i] == Float16(exactKeys[position * f32.config.headSize + i]))
                }
            }
        }
        // The rounding is really there (the f32 cache is within 1e-4 of transformers).
        #expect(largest > 1e-6, "\(fixture): f16 logits identical to f32")
    }

    @Test(arguments: LlamaModelTests.fixtures) func greedyDecodingWithTheCacheEqualsRecomputingAndCopiesCarryOn(fixture: String) throws {
        let (_, model, reference) = try Self.load(fixture)
        for prompt in reference.prompts {
            let cache = model.makeCache(capacity: 64)
            var logits = model.forward([.init(tokens: prompt.tokens, cache: cache)])[0]
            var generated: [Int] = []
            for step in 0..<32 {
                let next = Sampler.argmax(logits)
                generated.append(next)
                if step == 16 {
                    // A copy (n > 1 choices) continues exactly as the original.
                    let copy = cache.copy()
                    let fromCopy = model.forward([.init(tokens: [next], cache: copy)])[0]
                    logits = model.forward([.init(tokens: [next], cache: cache)])[0]
                    #expect(fromCopy == logits, "\(fixture)")
                } else {
                    logits = model.forward([.init(tokens: [next], cache: cache)])[0]
                }
                // Both read keys and values back from a float16 cache: the same bits.
                let recomputed = model.forward([.init(tokens: prompt.tokens + generated, cache: model.makeCache(capacity: 64))])[0]
                #expect(logits == recomputed, "\(fixture) step \(step)")
            }
            let agree = zip(generated, prompt.greedy).prefix { $0 == $1 }.count
            #expect(agree >= F16Bound.greedyPrefix, "\(fixture): \(agree) of 32 greedy tokens as transformers's")
        }
    }

    @Test func theOptionIsCheckedAtLoad() throws {
        let folder = try tinyLlamaFolderForManifests()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        for (value, loads) in [(#""f16""#, true), (#""f32""#, true), (#""f8""#, false), ("16", false)] {
            try #"{"engine": "transformer-lm", "options": {"kv_cache_format": \#(value)}}"#.write(toFile: folder + "/model.json", atomically: true, encoding: .utf8)
            do {
                let engine = try TransformerLMFactory.load(directory: folder, manifest: try EngineFactories.check(directory: folder))
                if case .text(let generator) = engine { generator.shutdown() }
                #expect(loads, "\(value) loaded")
            } catch {
                #expect(!loads, "\(error)")
                #expect("\(error)" == "model.json: options.kv_cache_format must be \"f32\" or \"f16\"", "\(error)")
            }
        }
    }
}

/// Bounds for the float16 cache: on the fixtures the logits differ from transformers' by at
/// most 0.0042 (tiny-llama) and 0.0043 (tiny-qwen2), and all 32 greedy tokens agree.
enum F16Bound {
    static let logits: Float = 1e-2
    static let greedyPrefix = 32
}

/// A fresh folder with the tiny Llama's files linked in, for a test to write its own model.json.
func tinyLlamaFolderForManifests() throws -> String {
    let folder = NSTemporaryDirectory() + "mg-kv-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    let source = SharedData.fixtures + "/tiny-llama"
    for file in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        try FileManager.default.createSymbolicLink(atPath: folder + "/" + file, withDestinationPath: source + "/" + file)
    }
    return folder
}
