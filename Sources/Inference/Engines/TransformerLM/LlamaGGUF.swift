import Foundation

/// A Llama-family model from a GGUF file, as llama.cpp's converter writes its `llama` and
/// `qwen2` architectures: hyperparameters from the metadata, tensors by llama.cpp's names,
/// in float32, float16 or bfloat16, or quantized in ggml's block formats (kept quantized).
extension LlamaModel {
    package convenience init(gguf file: GGUFFile, format: PackedMatrix.Format = .f32, cacheFormat: AttentionCache.Format = .f32) throws {
        let architecture = file.metadata["general.architecture"]?.text ?? ""
        guard ["llama", "qwen2"].contains(architecture) else {
            throw ModelLoadError(file: file.path, reason: "general.architecture '\(GGUFFile.shown(architecture))' is not supported (llama, qwen2)")
        }
        func number(_ key: String, default fallback: Int? = nil) throws -> Int { try file.positiveInt(architecture + "." + key, default: fallback) }
        func real(_ key: String, default fallback: Double) throws -> Double {
            guard let value = file.metadata[architecture + "." + key] else { return fallback }
            guard let number = value.double, number.isFinite, number > 0 else {
                throw ModelLoadError(file: file.path, reason: "metadata '\(architecture).\(key)' must be a positive number")
            }
            return number
        }
        let width = try number("embedding_length"), heads = try number("attention.head_count")
        var scaling: RopeScaling?
        if let frequencies = file.tensor("rope_freqs.weight") {
            let factors = try GGUFWeights.floats(file, frequencies, shape: [try number("attention.key_length", default: width / heads) / 2])
            scaling = .factors(Array(UnsafeBufferPointer(start: factors.pointer, count: factors.count)))
        } else if let kind = file.metadata[architecture + ".rope.scaling.type"]?.text, kind != "none" {
            guard kind == "linear" else {
                throw ModelLoadError(file: file.path, reason: "metadata '\(architecture).rope.scaling.type' '\(GGUFFile.shown(kind))' is not supported (linear)")
            }
            scaling = .linear(factor: try real("rope.scaling.factor", default: 1))
        }
        let config = Config(
            layers: try number("block_count"), heads: heads, kvHeads: try number("attention.head_count_kv", default: heads), width: width,
            headSize: try number("attention.key_length", default: width / heads), intermediate: try number("feed_forward_length"),
            contextLength: try number("context_length"), vocabularySize: try GGUFWeights.vocabularySize(file),
            rmsEpsilon: Float(try real("attention.layer_norm_rms_epsilon", default: 1e-6)), ropeTheta: try real("rope.freq_base", default: 10_000),
            ropeScaling: scaling, tiedEmbeddings: file.tensor("output.weight") == nil, attentionBias: file.tensor("blk.0.attn_q.bias") != nil)
        let weights = GGUFWeights(
            file: file, name: GGUFWeights.llamaName, interleavedRotary: architecture == "llama", heads: heads, kvHeads: config.kvHeads)
        try self.init(config: config, weights: weights, format: format, cacheFormat: cacheFormat)
    }
}

extension GPT2Model {
    /// GPT-2 from a GGUF file as llama.cpp's converter writes its `gpt2` architecture
    /// (bench/gguf_gpt2.py): F32, F16 or BF16 tensors.
    package convenience init(gguf file: GGUFFile, format: PackedMatrix.Format = .f32, cacheFormat: AttentionCache.Format = .f32) throws {
        guard file.metadata["general.architecture"]?.text == "gpt2" else {
            throw ModelLoadError(file: file.path, reason: "general.architecture is not 'gpt2'")
        }
        func number(_ key: String) throws -> Int { try file.positiveInt("gpt2." + key) }
        let config = Config(
            layers: try number("block_count"), heads: try number("attention.head_count"), width: try number("embedding_length"),
            contextLength: try number("context_length"), vocabularySize: try GGUFWeights.vocabularySize(file),
            layerNormEpsilon: Float(file.metadata["gpt2.attention.layer_norm_epsilon"]?.double ?? 1e-5))
        let weights = GGUFWeights(file: file, name: GGUFWeights.gpt2Name, conv1D: true)
        try self.init(config: config, weights: weights, format: format, cacheFormat: cacheFormat)
    }
}

/// A GGUF file's tensors by the Hugging Face names a model asks for.
struct GGUFWeights: ModelWeights {
    let file: GGUFFile
    /// llama.cpp's name for a Hugging Face tensor name.
    let name: (String) -> String?
    /// llama.cpp's converter reorders q_proj's and k_proj's rows for `llama` (its rotation pairs
    /// neighbours, transformers' pairs the two halves of a head); `qwen2` keeps them.
    var interleavedRotary = false
    var heads = 0, kvHeads = 0
    /// GPT-2's Conv1D weights are `[in, out]` in Hugging Face's files and `[out, in]` in GGUF.
    var conv1D = false

    var path: String { file.path }

    static func llamaName(_ huggingFace: String) -> String? {
        switch huggingFace {
        case "model.embed_tokens.weight": return "token_embd.weight"
        case "model.norm.weight": return "output_norm.weight"
        case "lm_head.weight": return "output.weight"
        default: break
        }
        return layerName(huggingFace, prefix: "model.layers.", modules: [
            "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
            "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
            "mlp.down_proj": "ffn_down",
        ])
    }

    static func gpt2Name(_ huggingFace: String) -> String? {
        let name = huggingFace.hasPrefix("transformer.") ? String(huggingFace.dropFirst("transformer.".count)) : huggingFace
        switch name {
        case "wte.weight": return "token_embd.weight"
        case "wpe.weight": return "position_embd.weight"
        case "ln_f.weight": return "output_norm.weight"
        case "ln_f.bias": return "output_norm.bias"
        default: break
        }
        return layerName(name, prefix: "h.", modules: [
            "ln_1": "attn_norm", "ln_2": "ffn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "mlp.c_fc": "ffn_up",
            "mlp.c_proj": "ffn_down",
        ])
    }

    /// `<prefix>N.<module>.<weight|bias>` as `blk.N.<llama.cpp's module>.<weight|bias>`.
    static func layerName(_ name: String, prefix: String, modules: [String: String]) -> String? {
        guard name.hasPrefix(prefix) else { return nil }
        let rest = name.dropFirst(prefix.count)
        guard let dot = rest.firstIndex(of: "."), let layer = Int(rest[..<dot]) else { return nil }
        let tail = rest[rest.index(after: dot)...]
        guard let last = tail.lastIndex(of: "."), let module = modules[String(tail[..<last])] else { return nil }
        return "blk.\(layer).\(module)\(tail[last...])"
    }

    /// The rows of the token embedding: the model's vocabulary.
    static func vocabularySize(_ file: GGUFFile) throws -> Int {
        guard let embedding = file.tensor("token_embd.weight"), embedding.dimensions.count == 2 else {
            throw ModelLoadError(file: file.path, tensor: "token_embd.weight", reason: "missing, or not a matrix")
        }
        return embedding.dimensions[1]
    }

    func contains(_ name: String) -> Bool { self.name(name).flatMap(file.tensor) != nil }

    func floats(_ name: String, shape: [Int]) throws -> FloatBuffer {
        guard let target = self.name(name), let info = file.tensor(target) else {
            throw ModelLoadError(file: path, tensor: self.name(name) ?? name, reason: "missing")
        }
        if conv1D, shape.count == 2, name.hasSuffix(".weight"), info.dimensions.count == 2, target.hasPrefix("blk.") {
            // Read as GGUF holds it, [out, in], and turned back to [in, out].
            let stored = try Self.floats(file, info, shape: [shape[1], shape[0]])
            let values = FloatBuffer(count: stored.count, zeroed: false)
            for row in 0..<shape[1] {
                for column in 0..<shape[0] { values[column * shape[1] + row] = stored[row * shape[0] + column] }
            }
            return values
        }
        let values = try Self.floats(file, info, shape: shape)
        let groups = rotaryGroups(name)
        if groups > 0, let rows = shape.first { Self.halveRotaryPairs(values, rows: rows, columns: values.count / rows, heads: groups) }
        return values
    }

    /// The heads whose rows the converter reordered in tensor `name` (0: none).
    func rotaryGroups(_ name: String) -> Int {
        guard interleavedRotary else { return 0 }
        return name.contains("self_attn.q_proj.") ? heads : name.contains("self_attn.k_proj.") ? kvHeads : 0
    }

    func release(_ name: String) {
        if let target = self.name(name), let info = file.tensor(target) { file.release(info) }
    }

    func quantizedRows(_ name: String, shape: [Int]) throws -> (type: UInt32, row: (Int) -> UnsafeRawPointer)? {
        // GGUF keeps every matrix as [out, in], GPT-2's Conv1D weights included.
        guard shape.count == 2, let target = self.name(name), let info = file.tensor(target), let layout = GGMLQuants.types[info.type] else { return nil }
        guard info.dimensions == shape.reversed() else {
            throw ModelLoadError(file: file.path, tensor: GGUFFile.shown(info.name), reason: "shape \(Array(info.dimensions.reversed())) where \(shape) is expected")
        }
        let base = file.data(info), rowBytes = shape[1] / layout.elements * layout.bytes
        // Rows that the converter reordered for llama's rotation are read in transformers' order
        // (as `floats` puts them back): row n of head n / size.
        let groups = rotaryGroups(name)
        let size = groups > 0 ? shape[0] / groups : 1, half = size / 2
        let file = self.file
        return (info.type, { n in
            // Rows are packed in order: every 1,024, the pages of the heads before are done with.
            if n % 1024 == 0 { file.release(info.offset..<(info.offset + n / size * size * rowBytes)) }
            let r = n % size
            return base + (size == 1 ? n : n - r + 2 * (r % half) + r / half) * rowBytes
        })
    }

    /// A tensor as float32, checked against the shape expected (Hugging Face's order, outermost
    /// first; GGUF lists dimensions innermost first).
    static func floats(_ file: GGUFFile, _ info: GGUFFile.TensorInfo, shape: [Int]) throws -> FloatBuffer {
        guard info.dimensions == shape.reversed() else {
            throw ModelLoadError(file: file.path, tensor: GGUFFile.shown(info.name), reason: "shape \(Array(info.dimensions.reversed())) where \(shape) is expected")
        }
        let count = shape.reduce(1, *)
        let stored: StoredFloat
        switch info.type {
        case 0: stored = .f32
        case 1: stored = .f16
        case 30: stored = .bf16
        case let type where GGMLQuants.supports(type):
            let values = FloatBuffer(count: count, zeroed: false)
            GGMLQuants.dequantize(type, file.data(info), count: count, into: values.pointer)
            file.release(info)
            return values
        default:
            throw ModelLoadError(
                file: file.path, tensor: GGUFFile.shown(info.name),
                reason: "\(GGUFFile.typeName(info.type)) weights are not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and Q2_K to Q6_K are)")
        }
        defer { file.release(info) }
        return stored.widened(file.data(info), count: count)
    }

    /// Undoes the converter's reordering: within each head of `rows / heads` rows, row 2j + s
    /// (s = 0, 1) goes back to row s * (rows / heads / 2) + j.
    static func halveRotaryPairs(_ values: FloatBuffer, rows: Int, columns: Int, heads: Int) {
        let size = rows / heads, half = size / 2
        let copy = FloatBuffer(count: rows * columns, zeroed: false)
        copy.pointer.update(from: values.pointer, count: rows * columns)
        for head in 0..<heads {
            for j in 0..<half {
                for s in 0..<2 {
                    let from = head * size + 2 * j + s, to = head * size + s * half + j
                    (values.pointer + to * columns).update(from: copy.pointer + from * columns, count: columns)
                }
            }
        }
    }
}
