import Foundation
import Postgres
import Testing
import TestSupport
@testable import Inference

/// Llama-family GGUF files as llama.cpp's converter writes them (tools/hf_to_gguf.py, with the
/// sdist's gguf-py) from the tiny Llama and Qwen2 fixtures: the same model as the safetensors
/// folder, and through the engine a whole model (weights, tokenizer, chat template) in one file.
@Suite struct LlamaGGUFTests {
    /// The fixture written as GGUF in `type` (f32, f16, bf16), in a fresh folder with its model.json.
    static func convert(_ fixture: String, _ type: String) async throws -> String {
        let folder = NSTemporaryDirectory() + "mg-gguf-\(fixture)-\(type)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let python = try #require(LlamaCppData.binDirectory) + "/python-gguf"
        let script = SharedData.repository.path + "/tools/hf_to_gguf.py"
        let (status, output) = try await onOwnThread {
            try ChildProcess.run(python, [script, SharedData.fixtures + "/" + fixture, folder + "/model.gguf", type])
        }
        try #require(status == 0, "hf_to_gguf.py failed: \(output)")
        try #"{"engine": "transformer-lm"}"#.write(toFile: folder + "/model.json", atomically: true, encoding: .utf8)
        return folder
    }

    static func logits(_ model: LlamaModel, _ tokens: [Int]) -> [Float] {
        model.forward([.init(tokens: tokens, cache: model.makeCache(capacity: 64), allLogits: true)])[0]
    }

    @Test(.enabled(if: LlamaCppData.source != nil, "\(LlamaCppData.missing)"), arguments: LlamaModelTests.fixtures)
    func theGGUFFileIsTheSameModelAsTheSafetensorsFolder(fixture: String) async throws {
        let (reference, expected) = try LlamaModelTests.load(fixture)
        let tokens = expected.prompts[0].tokens
        let safetensors = Self.logits(reference, tokens)
        // float32: the same weights (llama's q/k rows put back in order), the same logits.
        let f32 = try await Self.convert(fixture, "f32")
        defer { try? FileManager.default.removeItem(atPath: f32) }
        let model = try LlamaModel(gguf: GGUFFile(path: f32 + "/model.gguf"))
        #expect(model.config.layers == reference.config.layers && model.config.kvHeads == reference.config.kvHeads)
        #expect(model.config.tiedEmbeddings == reference.config.tiedEmbeddings && model.config.attentionBias == reference.config.attentionBias)
        let fromGGUF = Self.logits(model, tokens)
        let worst = zip(fromGGUF, safetensors).map { abs($0 - $1) }.max() ?? .infinity
        // Llama 3's rope scaling arrives as per-frequency divisors, a rounding away from
        // transformers' own products; without it the two are the same floats.
        #expect(worst <= (reference.config.ropeScaling == nil ? 0 : 1e-5), "\(fixture) f32: max |Δ| = \(worst)")

        // bfloat16 matrices: the same as the safetensors weights rounded to bfloat16 at load.
        let bf16 = try await Self.convert(fixture, "bf16")
        defer { try? FileManager.default.removeItem(atPath: bf16) }
        let rounded = try LlamaModel(directory: SharedData.fixtures + "/" + fixture, format: .bf16)
        let fromBF16 = Self.logits(try LlamaModel(gguf: GGUFFile(path: bf16 + "/model.gguf"), format: .bf16), tokens)
        let worstBF16 = zip(fromBF16, Self.logits(rounded, tokens)).map { abs($0 - $1) }.max() ?? .infinity
        #expect(worstBF16 <= (reference.config.ropeScaling == nil ? 0 : 1e-5), "\(fixture) bf16: max |Δ| = \(worstBF16)")

        // float16: close to float32 (measured: 0.0152 on tiny-llama, whose weights are large).
        let f16 = try await Self.convert(fixture, "f16")
        defer { try? FileManager.default.removeItem(atPath: f16) }
        let fromF16 = Self.logits(try LlamaModel(gguf: GGUFFile(path: f16 + "/model.gguf")), tokens)
        let worstF16 = zip(fromF16, safetensors).map { abs($0 - $1) }.max() ?? .infinity
        #expect(worstF16 > 0 && worstF16 < 5e-2, "\(fixture) f16: max |Δ| = \(worstF16)")
    }

    @Test(.enabled(if: LlamaCppData.source != nil, "\(LlamaCppData.missing)"))
    func aGGUFFileIsAWholeModelForTheEngine() async throws {
        let folder = try await Self.convert("tiny-qwen2", "f32")
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let engine = try TransformerLMFactory.load(directory: folder, manifest: try EngineFactories.check(directory: folder))
        guard case .text(let generator) = engine else {
            Issue.record("not a text engine")
            return
        }
        defer { generator.shutdown() }
        // The tokenizer and the chat template come from the file, as the folder's would.
        let source = SharedData.fixtures + "/tiny-qwen2"
        let fromFolder = try BPETokenizer(directory: source)
        for text in ["Hello, world!", "<|im_end|> stays text", "ünïcödé 123"] {
            #expect(generator.tokenizer.encode(text) == fromFolder.encode(text), "\(text)")
        }
        let turns = [ChatTurn(role: "user", content: "Hi")]
        let expected = try ChatFormat.load(directory: source, option: nil).render(turns)
        #expect(try generator.chatFormat.render(turns) == expected)
        #expect(expected.text.hasSuffix("<|im_start|>assistant\n"))
    }

    /// GPT-2 too: the demo model written by bench/gguf_gpt2.py (Conv1D weights stored
    /// transposed) is the same model as its safetensors folder, and a whole model for the engine.
    @Test(.enabled(if: LlamaCppData.source != nil, "\(LlamaCppData.missing)"))
    func theDemoModelAsGGUFIsTheSameGPT2() async throws {
        let source = SharedData.repository.appendingPathComponent("models/shakespeare").path
        let folder = NSTemporaryDirectory() + "mg-gguf-demo-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let python = try #require(LlamaCppData.binDirectory) + "/python-gguf"
        let script = SharedData.repository.path + "/bench/gguf_gpt2.py"
        let (status, output) = try await onOwnThread { try ChildProcess.run(python, [script, source, source, folder + "/model.gguf"]) }
        try #require(status == 0, "gguf_gpt2.py failed: \(output)")
        try #"{"engine": "transformer-lm"}"#.write(toFile: folder + "/model.json", atomically: true, encoding: .utf8)

        let reference = try GPT2Model(directory: source)
        let model = try GPT2Model(gguf: GGUFFile(path: folder + "/model.gguf"))
        #expect(model.config == reference.config)
        let tokens = Array(0..<40).map { ($0 * 37) % reference.config.vocabularySize }
        let expected = reference.forward([.init(tokens: tokens, cache: reference.makeCache(capacity: 64), allLogits: true)])[0]
        let logits = model.forward([.init(tokens: tokens, cache: model.makeCache(capacity: 64), allLogits: true)])[0]
        #expect(logits == expected)

        let engine = try TransformerLMFactory.load(directory: folder, manifest: try EngineFactories.check(directory: folder))
        guard case .text(let generator) = engine else {
            Issue.record("not a text engine")
            return
        }
        defer { generator.shutdown() }
        let fromFolder = try BPETokenizer(directory: source)
        for text in ["ROMEO: But, soft! what light", "First Citizen:\nBefore we proceed"] {
            #expect(generator.tokenizer.encode(text) == fromFolder.encode(text), "\(text)")
        }

        // Quantized by llama-quantize to Q8_0: every matrix stays 8-bit, and with the exact
        // products computes what the same file widened to float32 does, exactly (the integer
        // products round X to 8 bits per block: close); the folder quantized at load
        // (weight_format q8_0) is the same model.
        let quantize = try #require(QuantizedGGUFTests.quantize, "\(QuantizedGGUFTests.missing)")
        _ = try await QuantizedGGUFTests.run(quantize, [folder + "/model.gguf", folder + "/model-q8_0.gguf", "Q8_0", "1"])
        let file = try GGUFFile(path: folder + "/model-q8_0.gguf")
        let q8 = try GPT2Model(gguf: file)
        let matrices = q8.blocks.flatMap { [$0.attentionWeight, $0.projectionWeight, $0.fcWeight, $0.fcProjectionWeight] } + [q8.tokenEmbedding]
        #expect(matrices.allSatisfy { $0.format == .q8_0 }, "\(matrices.map(\.format))")
        let widened = try GPT2Model(
            config: q8.config, weights: QuantizedGGUFTests.Widened(weights: GGUFWeights(file: file, name: GGUFWeights.gpt2Name, conv1D: true)))
        let exactLogits = PackedMatrix.$integerProducts.withValue(false) {
            q8.forward([.init(tokens: tokens, cache: q8.makeCache(capacity: 64), allLogits: true)])[0]
        }
        let widenedLogits = widened.forward([.init(tokens: tokens, cache: widened.makeCache(capacity: 64), allLogits: true)])[0]
        #expect(exactLogits == widenedLogits)
        let quantizedLogits = q8.forward([.init(tokens: tokens, cache: q8.makeCache(capacity: 64), allLogits: true)])[0]
        let error = QuantizedGGUFTests.relativeRMS(quantizedLogits, from: widenedLogits)
        #expect(error > 0 && error < 0.05, "the integer products' logits are \(error) (relative RMS) from the exact ones")
        let atLoad = try GPT2Model(directory: source, format: .q8_0)
        let atLoadLogits = atLoad.forward([.init(tokens: tokens, cache: atLoad.makeCache(capacity: 64), allLogits: true)])[0]
        let differing = zip(atLoadLogits, quantizedLogits).filter { $0 != $1 }.count
        #expect(differing == 0, "\(differing) of \(quantizedLogits.count) logits differ between the folder quantized at load and the Q8_0 file")
    }

    @Test(.enabled(if: LlamaCppData.source != nil, "\(LlamaCppData.missing)"))
    func aFileOfAnotherArchitectureOrWithoutItsTensorsFailsNamingIt() throws {
        // llama.cpp's GPT-2 vocabulary file: architecture gpt2, no tensors.
        #expect {
            _ = try LlamaModel(gguf: GGUFFile(path: try LlamaCppData.vocabulary("gpt-2")))
        } throws: { "\($0)".contains("general.architecture 'gpt2' is not supported") }
        #expect {
            _ = try GPT2Model(gguf: GGUFFile(path: try LlamaCppData.vocabulary("gpt-2")))
        } throws: { "\($0)".contains("token_embd.weight") && "\($0)".contains("missing") }
        // Qwen2's: the right architecture, but no tensors.
        #expect {
            _ = try LlamaModel(gguf: GGUFFile(path: try LlamaCppData.vocabulary("qwen2")))
        } throws: { "\($0)".contains("token_embd.weight") && "\($0)".contains("missing") }
    }
}
