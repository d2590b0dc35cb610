import Foundation
import Postgres
import Testing
import TestSupport
@testable import Inference

/// GGUF files quantized by llama.cpp's own `llama-quantize` (every block format it writes for a
/// Llama model), from a small random model whose rows are whole K-quant blocks
/// (bench/llama_shapes.py's tiny-256): each tensor reads back as the very floats gguf-py's
/// `dequantize` gives, and the quantized model computes what its float32 original does, within
/// what the format's rounding allows.
@Suite struct QuantizedGGUFTests {
    /// llama-quantize's names for the files; the K-quant mixes (_M) use several block formats.
    static let quantizations = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K"]

    static let quantize: String? = LlamaCppData.binDirectory.map { $0 + "/llama-quantize" }.flatMap {
        FileManager.default.isExecutableFile(atPath: $0) ? $0 : nil
    }
    static let missing = "llama.cpp's llama-quantize is not built (scripts/llama-cpp llama-quantize; scripts/test does it); skipping"

    static func run(_ tool: String, _ arguments: [String]) async throws -> String {
        let (status, output) = try await onOwnThread { try ChildProcess.run(tool, arguments) }
        try #require(status == 0, "\(tool) \(arguments.joined(separator: " ")) failed: \(output)")
        return output
    }

    /// tiny-256 as float32 GGUF and quantized to each of `types`, in a fresh folder.
    static func quantized(_ types: [String]) async throws -> String {
        let folder = NSTemporaryDirectory() + "mg-quantized-\(UUID().uuidString.prefix(8))"
        let bin = try #require(LlamaCppData.binDirectory), source = try #require(LlamaCppData.source)
        _ = try await run(bin + "/python-gguf", [SharedData.repository.path + "/bench/llama_shapes.py", "tiny-256", folder, source + "/models"])
        for type in types {
            _ = try await run(try #require(quantize), [folder + "/model-f32.gguf", folder + "/model-\(type).gguf", type, "1"])
        }
        return folder
    }

    @Test(.enabled(if: quantize != nil, "\(missing)"))
    func everyTensorReadsBackAsGGUFPyDequantizesIt() async throws {
        let folder = try await Self.quantized(Self.quantizations)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let python = try #require(LlamaCppData.binDirectory) + "/python-gguf"
        var formats: Set<String> = []
        for type in Self.quantizations {
            let path = folder + "/model-\(type).gguf"
            let listing = try await Self.run(python, [SharedData.repository.path + "/tools/gguf_dequantize.py", path, folder + "/\(type).f32"])
            let expected = try Data(contentsOf: URL(fileURLWithPath: folder + "/\(type).f32"))
            let file = try GGUFFile(path: path)
            #expect(listing.split(separator: "\n").count == file.tensors.count)
            var offset = 0, differing = 0, compared = 0
            for info in file.tensors {
                let values = try GGUFWeights.floats(file, info, shape: info.dimensions.reversed())
                formats.insert(GGUFFile.typeName(info.type))
                let bytes = values.count * 4
                try #require(offset + bytes <= expected.count, "\(type): gguf-py wrote fewer floats than the file holds")
                expected.withUnsafeBytes { reference in
                    for i in 0..<values.count {
                        let theirs = reference.loadUnaligned(fromByteOffset: offset + 4 * i, as: UInt32.self)
                        if values[i].bitPattern != UInt32(littleEndian: theirs) { differing += 1 }
                    }
                }
                compared += values.count
                offset += bytes
            }
            #expect(offset == expected.count && compared > 1_000_000)
            #expect(differing == 0, "\(type): \(differing) of \(compared) values differ from gguf-py's")
        }
        // Every block format llama.cpp's Llama quantizations write, besides the float vectors.
        #expect(formats == ["F32", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"], "\(formats.sorted())")
    }

    /// The RMS of `values - reference` over the RMS of `reference`.
    static func relativeRMS(_ values: [Float], from reference: [Float]) -> Float {
        func rms(_ xs: [Float]) -> Float { (xs.map { $0 * $0 }.reduce(0, +) / Float(xs.count)).squareRoot() }
        return rms(zip(values, reference).map { $0 - $1 }) / rms(reference)
    }

    @Test(.enabled(if: quantize != nil, "\(missing)"))
    func aQuantizedModelComputesWhatItsOriginalDoes() async throws {
        let types = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0"]
        let folder = try await Self.quantized(types)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let tokens = (0..<24).map { ($0 * 37 + 11) % 1024 }
        let original = LlamaGGUFTests.logits(try LlamaModel(gguf: GGUFFile(path: folder + "/model-f32.gguf")), tokens)
        var errors: [Float] = []
        for type in types {
            let logits = LlamaGGUFTests.logits(try LlamaModel(gguf: GGUFFile(path: folder + "/model-\(type).gguf")), tokens)
            errors.append(Self.relativeRMS(logits, from: original))
        }
        // Random weights carry rounding errors through every layer (measured, relative RMS:
        // Q8_0 0.015, Q6_K 0.054, Q4_K_M 0.160, Q4_0 0.194); a misread block gives errors of
        // the order of the logits themselves (about 1).
        #expect(errors[0] > 0 && errors[0] < 0.03, "Q8_0: \(errors[0])")
        #expect(errors.allSatisfy { $0 < 0.4 }, "\(zip(types, errors).map { "\($0) \($1)" })")
        // Fewer bits, larger errors: 8, 6, 5 and 4 bits in that order (Q4_0 has no per-32
        // minimum, so it trails Q4_K_M).
        #expect(errors == errors.sorted(), "\(zip(types, errors).map { "\($0) \($1)" })")
    }

    /// GGUF weights read as float32 only (the Q8_0 path turned off), for comparison.
    struct Widened: ModelWeights {
        let weights: GGUFWeights
        var path: String { weights.path }
        func contains(_ name: String) -> Bool { weights.contains(name) }
        func floats(_ name: String, shape: [Int]) throws -> FloatBuffer { try weights.floats(name, shape: shape) }
    }

    @Test(.enabled(if: quantize != nil, "\(missing)"))
    func quantizedFilesStayQuantizedAndQuantizingAtLoadIsLlamaQuantizes() async throws {
        let folder = try await Self.quantized(Self.quantizations)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let tokens = (0..<24).map { ($0 * 37 + 11) % 1024 }
        var formats: Set<PackedMatrix.Format> = []
        var integerErrors: [String] = []
        defer { print("integer products against float32, relative RMS of the logits: \(integerErrors)") }
        for type in Self.quantizations {
            let file = try GGUFFile(path: folder + "/model-\(type).gguf")
            let model = try LlamaModel(gguf: file)
            // Every matrix packed from the file's blocks, none widened.
            let matrices = model.blocks.flatMap { $0.qkv.parts.map(\.matrix) + $0.gateUp.parts.map(\.matrix) + [$0.output, $0.down] }
                + [model.embedding, model.head.matrix]
            #expect(matrices.allSatisfy { $0.format.quantization != nil }, "\(type): \(matrices.map(\.format))")
            formats.formUnion(matrices.map(\.format))
            // The same file widened to float32 at load: the very same logits from the float32
            // kernels (a quantized product there is the dequantized matrix's float32 product);
            // the integer kernels round X to 8 bits per block of 32.
            let widened = try LlamaModel(
                config: model.config,
                weights: Widened(weights: GGUFWeights(file: file, name: GGUFWeights.llamaName, interleavedRotary: true, heads: model.config.heads, kvHeads: model.config.kvHeads)))
            #expect(widened.blocks[0].qkv.parts.map(\.matrix.format) == [.f32])
            let exact = PackedMatrix.$integerProducts.withValue(false) { LlamaGGUFTests.logits(model, tokens) }
            let logits = LlamaGGUFTests.logits(model, tokens), fromFloats = LlamaGGUFTests.logits(widened, tokens)
            #expect(exact.count == fromFloats.count && zip(exact, fromFloats).allSatisfy { $0 == $1 }, "\(type): packed and widened differ")
            let error = Self.relativeRMS(logits, from: fromFloats)
            integerErrors.append("\(type) \(error)")
            #expect(error < 0.05, "\(type): the integer products' logits are \(error) (relative RMS) from the float32 ones")
            // The safetensors folder quantized at load (weight_format q8_0 or q4_0) is
            // llama-quantize's file: the same scales and levels in every matrix that the file
            // holds in that format (its Q4_0 has the output head in Q6_K), and for Q8_0 the same logits.
            if let format = ["Q8_0": PackedMatrix.Format.q8_0, "Q4_0": .q4_0][type] {
                let atLoad = try LlamaModel(directory: folder, format: format)
                let ours = atLoad.blocks.flatMap { $0.qkv.parts.map(\.matrix) + $0.gateUp.parts.map(\.matrix) + [$0.output, $0.down] } + [atLoad.embedding]
                for (mine, theirs) in zip(ours, matrices) {
                    let differing = (0..<(mine.rows * mine.columns)).filter {
                        mine.element(row: $0 / mine.columns, column: $0 % mine.columns) != theirs.element(row: $0 / mine.columns, column: $0 % mine.columns)
                    }.count
                    #expect(mine.format == format && theirs.format == format && differing == 0, "\(type): \(differing) weights differ")
                }
                if format == .q8_0 {
                    let differing = zip(logits, LlamaGGUFTests.logits(atLoad, tokens)).filter { $0 != $1 }.count
                    #expect(differing == 0, "\(type): \(differing) of \(logits.count) logits differ from the file's")
                }
            }
        }
        // Every quantized format, and in a Q4_K_M file, q/k and v in different ones (split).
        #expect(formats == [.q8_0, .q4_0, .q4_1, .q4_k, .q5_0, .q5_1, .q5_k, .q6_k, .q2_k], "\(formats)")
        let mixed = try LlamaModel(gguf: GGUFFile(path: folder + "/model-Q4_K_M.gguf"))
        #expect(mixed.blocks.contains { $0.qkv.parts.count == 3 }, "\(mixed.blocks.map { $0.qkv.parts.map(\.matrix.format) })")
    }

    /// 10,000 mutated files (bytes changed, extreme numbers written, ranges inserted or removed
    /// in the metadata and tensor table, truncations, changed tensor data) from two real models:
    /// tiny-qwen2 (tokenizer, chat template, float32 and Q8_0 tensors) and tiny-256 in Q4_K_M
    /// (K-quant blocks). Each loads as a whole model or fails with a one-line load error; a
    /// crash, a hang or any other error fails the test.
    @Test(.enabled(if: quantize != nil, "\(missing)"), .timeLimit(.minutes(10)))
    func mutatedFilesLoadOrFailWithOneLine() async throws {
        let qwen = try await LlamaGGUFTests.convert("tiny-qwen2", "f32")
        defer { try? FileManager.default.removeItem(atPath: qwen) }
        _ = try await Self.run(try #require(Self.quantize), [qwen + "/model.gguf", qwen + "/model-q8_0.gguf", "Q8_0", "1"])
        let tiny = try await Self.quantized(["Q4_K_M"])
        defer { try? FileManager.default.removeItem(atPath: tiny) }
        // Each file with where its tensor data starts: the mutations aim at what comes before.
        let bases = try [qwen + "/model-q8_0.gguf", tiny + "/model-Q4_K_M.gguf"].map { path in
            (bytes: [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))), header: try GGUFFile(path: path).tensors.map(\.offset).min() ?? 0)
        }
        for base in bases { try #require(base.header > 1000, "the metadata is \(base.header) bytes") }
        let path = qwen + "/mutated.gguf"
        var random = SeededGenerator(seed: 25)
        var loaded = 0, refused = 0, reasons: [String: Int] = [:]
        for round in 0..<10_000 {
            let base = bases[round % bases.count]
            var bytes = base.bytes
            switch Int.random(in: 0..<10, using: &random) {
            case 0..<5:  // a few bytes of the header changed
                for _ in 0...Int.random(in: 0..<4, using: &random) { bytes[Int.random(in: 0..<base.header, using: &random)] = .random(in: 0...255, using: &random) }
            case 5..<7:  // an extreme number written over a count, length, dimension, type or offset
                let at = Int.random(in: 0..<(base.header - 8), using: &random)
                let value: UInt64 = [0, 1, 0xFF, 0x7FFF_FFFF, 0xFFFF_FFFF, 1 << 40, 0x7FFF_FFFF_FFFF_FFFF, .max].randomElement(using: &random) ?? 0
                withUnsafeBytes(of: value.littleEndian) { word in
                    for i in 0..<(Bool.random(using: &random) ? 8 : 4) { bytes[at + i] = word[i] }
                }
            case 7:  // cut short
                bytes.removeLast(Int.random(in: 1...bytes.count, using: &random))
            case 8:  // bytes inserted into or removed from the header
                let at = Int.random(in: 0..<base.header, using: &random), count = Int.random(in: 1...16, using: &random)
                if Bool.random(using: &random) {
                    bytes.insert(contentsOf: (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) }, at: at)
                } else {
                    bytes.removeSubrange(at..<min(base.header, at + count))
                }
            default:  // tensor data changed (any bytes are some numbers)
                for _ in 0..<16 { bytes[Int.random(in: base.header..<bytes.count, using: &random)] = .random(in: 0...255, using: &random) }
            }
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            do {
                _ = try TransformerLMFactory.loadGGUF(path: path, directory: qwen)
                loaded += 1
            } catch let error as ModelLoadError {
                refused += 1
                let line = "\(error)"
                #expect(!line.contains("\n") && line.hasPrefix("mutated.gguf"), "round \(round): \(line)")
                reasons[String(error.reason.prefix(24)), default: 0] += 1
            } catch {
                Issue.record("round \(round): not a load error: \(error)")
            }
        }
        #expect(loaded + refused == 10_000 && loaded > 500 && refused > 5_000, "\(loaded) loaded, \(refused) refused")
        #expect(reasons.count > 20, "\(reasons)")
    }

    /// `modelgate model check`: a quantized GGUF model folder loads as a server would load it,
    /// with its task and memory reported; a broken one fails with the server's one-line error.
    @Test(.enabled(if: quantize != nil, "\(missing)"))
    func theCLIChecksAModelFolderByLoadingIt() async throws {
        let folder = try await Self.quantized(["Q8_0"])
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let model = folder + "/check"
        try FileManager.default.createDirectory(atPath: model, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: folder + "/model-Q8_0.gguf", toPath: model + "/model.gguf")
        try #"{"engine": "transformer-lm"}"#.write(toFile: model + "/model.json", atomically: true, encoding: .utf8)
        let (status, output) = try await ModelGateProcess.run(["model", "check", model, "--json"], in: folder)
        try #require(status == 0, "\(output)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])
        #expect(report["task"] as? String == "text-generation" && report["folder"] as? String == model)
        let growth = try #require(report["memory_growth_bytes"] as? Int), loaded = try #require(report["resident_growth_bytes"] as? Int)
        #expect(loaded > 0 && growth >= loaded, "\(report)")

        // Kernels forced by MODELGATE_KERNELS: the exact products load and run; a name that is
        // not a variant, or a variant the CPU lacks, is one line and status 2, before any work.
        let (exact, exactOutput) = try await ModelGateProcess.run(["model", "check", model], in: folder, environment: ["MODELGATE_KERNELS": "quantized=exact,f32=avx2"])
        #expect(exact == 0, "\(exactOutput)")
        for (value, expected) in [("quantized=fast", "'quantized=fast' is not one of"), ("quantized", "'quantized' is not one of")]
            + (KernelSelection.CPU.current.avx512vnni ? [] : [("quantized=vnni", "quantized=vnni needs AVX512-VNNI, which this CPU lacks")]) {
            let (status, message) = try await ModelGateProcess.run(["model", "check", model], in: folder, environment: ["MODELGATE_KERNELS": value])
            #expect(status == 2 && message.contains(expected), "\(value): \(message)")
            #expect(message.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").count == 1, "\(message)")
        }

        // A truncated file: the load error a server would give, on one line, and a failure status.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: model + "/model.gguf"))
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: model + "/model.gguf"))
        let (failed, message) = try await ModelGateProcess.run(["model", "check", model], in: folder)
        #expect(failed != 0 && message.contains("model.gguf: tensor '") && message.contains("lies outside the file"), "\(message)")
        #expect(message.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").count == 1, "\(message)")
    }
}
