import Foundation
import Testing

@testable import Inference

/// What a model folder's own files may say: every count, size and option is checked at load and
/// a bad one fails the load with a reason naming it, never a crash (Int(1e300) traps) or a
/// silent fallback to a default.
@Suite struct ModelManifestTests {
    static let shakespeare = SharedData.repository.appendingPathComponent("models/shakespeare").path

    /// A copy of the demo model whose `model.json` (and, given, `config.json`) are replaced.
    static func folder(manifest: String, config: ((inout [String: Any]) -> Void)? = nil) throws -> String {
        let folder = NSTemporaryDirectory() + "mg-manifest-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        for file in ["config.json", "model.safetensors", "vocab.json", "merges.txt"] {
            try FileManager.default.createSymbolicLink(atPath: folder + "/" + file, withDestinationPath: shakespeare + "/" + file)
        }
        try manifest.write(toFile: folder + "/model.json", atomically: true, encoding: .utf8)
        if let config {
            var values = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: shakespeare + "/config.json"))) as? [String: Any] ?? [:]
            config(&values)
            try FileManager.default.removeItem(atPath: folder + "/config.json")
            try JSONSerialization.data(withJSONObject: values).write(to: URL(fileURLWithPath: folder + "/config.json"))
        }
        return folder
    }

    static func load(_ folder: String) throws -> TextGenerator {
        guard case .text(let generator) = try TransformerLMFactory.load(directory: folder, manifest: ModelManifest.load(directory: folder)) else {
            throw ModelLoadError(file: folder, reason: "not a text model")
        }
        return generator
    }

    static func manifest(options: String = "{}", defaults: String = "{}") -> String {
        #"{"engine": "transformer-lm", "task": "text-generation", "options": \#(options), "defaults": \#(defaults)}"#
    }

    @Test func optionsThatAreNotWholePositiveNumbersFailTheLoad() throws {
        for option in ["max_batch", "queue_capacity"] {
            for bad in ["1e300", "0", "-4", "2.5", #""8""#, "null"] {
                let folder = try Self.folder(manifest: Self.manifest(options: #"{"\#(option)": \#(bad)}"#))
                defer { try? FileManager.default.removeItem(atPath: folder) }
                #expect(throws: ModelLoadError(file: folder + "/model.json", reason: "options.\(option) must be a whole number of at least 1"), "\(option) \(bad)") {
                    _ = try Self.load(folder)
                }
            }
        }
        let folder = try Self.folder(manifest: Self.manifest(options: #"{"max_batch": 3, "queue_capacity": 5}"#))
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let generator = try Self.load(folder)
        defer { generator.shutdown() }
        #expect(generator.maxBatch == 3 && generator.queueCapacity == 5)
    }

    @Test func theWeightFormatIsF32BF16Q8_0OrQ4_0() throws {
        func format(_ options: String) throws -> PackedMatrix.Format {
            try JSONDecoder().decode(ModelManifest.self, from: Data(Self.manifest(options: options).utf8)).weightFormat(in: "/m")
        }
        #expect(try format("{}") == .f32)
        #expect(try format(#"{"weight_format": "bf16"}"#) == .bf16)
        #expect(try format(#"{"weight_format": "q8_0"}"#) == .q8_0 && format(#"{"weight_format": "q4_0"}"#) == .q4_0)
        for bad in [#""fp16""#, #""BF16""#, #""Q8_0""#, #""q4_1""#, #""q6_k""#, "16", "null"] {
            #expect(throws: ModelLoadError(file: "/m/model.json", reason: #"options.weight_format must be "f32", "bf16", "q8_0" or "q4_0""#), "\(bad)") {
                try format(#"{"weight_format": \#(bad)}"#)
            }
        }
    }

    @Test func samplingDefaultsAreCheckedAsARequestsAre() throws {
        func defaults(_ text: String) throws -> SamplingParameters {
            try JSONDecoder().decode(ModelManifest.self, from: Data(Self.manifest(defaults: text).utf8)).samplingDefaults(in: "/m")
        }
        let demo = try ModelManifest.load(directory: Self.shakespeare).samplingDefaults(in: Self.shakespeare)
        #expect(demo.temperature == 0.8 && demo.maxTokens == 64 && demo.topP == 1 && demo.topK == 0)
        let set = try defaults(#"{"temperature": 0, "top_p": 0.5, "top_k": 3, "max_tokens": 9}"#)
        #expect(set.temperature == 0 && set.topP == 0.5 && set.topK == 3 && set.maxTokens == 9)
        for (bad, reason) in [
            (#"{"temperature": 5}"#, "defaults.temperature: must be between 0 and 2"),
            (#"{"top_p": 0}"#, "defaults.top_p: must be greater than 0 and at most 1"),
            (#"{"top_k": -1}"#, "defaults.top_k: must not be negative"),
            (#"{"max_tokens": 0}"#, "defaults.max_tokens: must be at least 1"),
            (#"{"max_tokens": 1e300}"#, "defaults.max_tokens must be a whole number"),
            (#"{"top_k": 2.5}"#, "defaults.top_k must be a whole number"),
        ] {
            #expect(throws: ModelLoadError(file: "/m/model.json", reason: reason), "\(bad)") { try defaults(bad) }
        }
    }

    @Test func aTokenizerLargerThanTheModelFailsTheLoad() throws {
        let folder = try Self.folder(manifest: Self.manifest())
        defer { try? FileManager.default.removeItem(atPath: folder) }
        var vocabulary = try JSONDecoder().decode([String: Int].self, from: Data(contentsOf: URL(fileURLWithPath: Self.shakespeare + "/vocab.json")))
        vocabulary["an extra token"] = vocabulary.count
        try FileManager.default.removeItem(atPath: folder + "/vocab.json")
        try JSONEncoder().encode(vocabulary).write(to: URL(fileURLWithPath: folder + "/vocab.json"))
        #expect(throws: ModelLoadError(file: folder + "/vocab.json", reason: "token ids run to \(vocabulary.count - 1), past the model's \(vocabulary.count - 1) embeddings")) {
            _ = try Self.load(folder)
        }
    }

    @Test func configSizesThatAreNotWholePositiveNumbersFailTheLoad() throws {
        for (key, bad) in [("n_head", 0 as Any), ("n_layer", -2), ("n_embd", 1e300), ("n_positions", 64.5), ("vocab_size", "1024")] {
            let folder = try Self.folder(manifest: Self.manifest()) { $0[key] = bad }
            defer { try? FileManager.default.removeItem(atPath: folder) }
            #expect(throws: ModelLoadError(file: folder + "/config.json", reason: "\(key) must be a whole number of at least 1"), "\(key) \(bad)") {
                _ = try GPT2Model(directory: folder)
            }
        }
    }
}
