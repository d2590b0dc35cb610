import Foundation

/// The Llama family as Hugging Face's `LlamaForCausalLM`, `Qwen2ForCausalLM` and
/// `MistralForCausalLM` compute it: RMSNorm, rotary position embeddings (rope_theta, Llama 3's
/// and linear rope_scaling), grouped-query attention, optional q/k/v biases (Qwen2), a SwiGLU
/// MLP and a tied or untied output head. The same kernels, cache and output head as GPT-2.
package final class LlamaModel: CausalLM {
    package struct Config: Sendable, Equatable {
        package var layers: Int
        package var heads: Int
        package var kvHeads: Int
        package var width: Int
        package var headSize: Int
        package var intermediate: Int
        package var contextLength: Int
        package var vocabularySize: Int
        package var rmsEpsilon: Float
        package var ropeTheta: Double
        package var ropeScaling: RopeScaling?
        package var tiedEmbeddings: Bool
        package var attentionBias: Bool
    }

    package enum RopeScaling: Sendable, Equatable {
        /// Llama 3.1's: low frequencies slowed by `factor`, high ones kept, a smooth blend between.
        case llama3(factor: Double, lowFrequencyFactor: Double, highFrequencyFactor: Double, originalContext: Double)
        case linear(factor: Double)
        /// One divisor per rotary frequency, as llama.cpp's GGUF files carry Llama 3's scaling
        /// (`rope_freqs.weight`, which its converter computes from the same rule).
        case factors([Float])
    }

    struct Block: Sendable {
        let attentionNorm: FloatBuffer  // input_layernorm [C]
        let qkv: Linear  // [C, (H + 2 Hkv) D]: q_proj, k_proj, v_proj side by side
        let qkvBias: FloatBuffer?
        let output: PackedMatrix  // o_proj [H D, C]
        let mlpNorm: FloatBuffer  // post_attention_layernorm [C]
        let gateUp: Linear  // [C, 2 I]: gate_proj, up_proj side by side
        let down: PackedMatrix  // down_proj [I, C]
    }

    /// Linear layers side by side: one packed matrix, or one per layer where the file stores
    /// them in different quantized formats (a Q4_K_M file's v_proj in Q6_K beside q_proj and
    /// k_proj in Q4_K), each writing its columns of the same output rows.
    struct Linear: Sendable {
        let parts: [(matrix: PackedMatrix, column: Int)]
        let columns: Int

        var byteCount: Int { parts.reduce(0) { $0 + $1.matrix.byteCount } }

        func multiply(_ x: UnsafePointer<Float>, m: Int, into y: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>? = nil) {
            for (matrix, column) in parts {
                matrix.multiply(x, m: m, ldx: matrix.rows, into: y + column, ldy: columns, bias: bias.map { $0 + column })
            }
        }
    }

    package let config: Config
    /// embed_tokens `[V, C]` kept as `[C, V]`: lookups read its columns; the head when tied.
    let embedding: PackedMatrix
    let blocks: [Block]
    let finalNorm: FloatBuffer
    let head: OutputHead
    /// Per rotary pair i: the angle per position, as transformers computes it (float32).
    let inverseFrequencies: [Float]
    /// What the key/value caches it makes hold.
    package let cacheFormat: AttentionCache.Format

    package var contextLength: Int { config.contextLength }
    package var vocabularySize: Int { config.vocabularySize }
    package var hasBoundedHead: Bool { head.bounded != nil }
    package var cacheBytesPerPosition: Int { config.layers * 2 * config.kvHeads * config.headSize * cacheFormat.bytes }
    package var weightBytes: Int {
        let matrices = blocks.reduce(0) { $0 + $1.qkv.byteCount + $1.output.byteCount + $1.gateUp.byteCount + $1.down.byteCount }
        let untied = head.matrix === embedding ? 0 : head.matrix.byteCount
        return matrices + embedding.byteCount + untied + (head.bounded?.byteCount ?? 0) + 4 * config.width * (2 * config.layers + 1)
    }

    /// Reads a Hugging Face folder: `config.json` (`model_type` llama, qwen2 or mistral) and
    /// `model.safetensors` or shards listed in `model.safetensors.index.json`.
    package convenience init(directory: String, format: PackedMatrix.Format = .f32, cacheFormat: AttentionCache.Format = .f32) throws {
        let path = directory + "/config.json"
        let hf = try HFConfig(path: path)
        let type = hf.string("model_type") ?? ""
        guard ["llama", "qwen2", "mistral"].contains(type) else {
            throw ModelLoadError(file: path, reason: "model_type '\(type)' is not supported (llama, qwen2, mistral and gpt2 are)")
        }
        let width = try hf.int("hidden_size"), heads = try hf.int("num_attention_heads")
        var context = try hf.int("max_position_embeddings")
        // Mistral's sliding window: exact up to the window, so the context stops there.
        if let window = hf.values["sliding_window"]?.positiveInt, window < context, hf.values["use_sliding_window"]?.bool != false, type == "mistral" {
            context = window
        }
        var scaling: RopeScaling?
        if let object = hf.values["rope_scaling"]?.object {
            let kind = object["rope_type"]?.string ?? object["type"]?.string ?? ""
            guard let factor = object["factor"]?.number, factor >= 1 else {
                throw ModelLoadError(file: path, reason: "rope_scaling.factor must be a number of at least 1")
            }
            switch kind {
            case "llama3":
                guard let low = object["low_freq_factor"]?.number, let high = object["high_freq_factor"]?.number, high > low,
                    let original = object["original_max_position_embeddings"]?.number
                else { throw ModelLoadError(file: path, reason: "rope_scaling (llama3) needs low_freq_factor < high_freq_factor and original_max_position_embeddings") }
                scaling = .llama3(factor: factor, lowFrequencyFactor: low, highFrequencyFactor: high, originalContext: original)
            case "linear": scaling = .linear(factor: factor)
            case "default": scaling = nil
            default: throw ModelLoadError(file: path, reason: "rope_scaling type '\(kind)' is not supported (llama3, linear)")
            }
        }
        let config = Config(
            layers: try hf.int("num_hidden_layers"), heads: heads, kvHeads: hf.values["num_key_value_heads"] == nil ? heads : try hf.int("num_key_value_heads"),
            width: width, headSize: hf.values["head_dim"] == nil ? width / heads : try hf.int("head_dim"), intermediate: try hf.int("intermediate_size"),
            contextLength: context, vocabularySize: try hf.int("vocab_size"), rmsEpsilon: Float(hf.double("rms_norm_eps", default: 1e-6)),
            ropeTheta: hf.double("rope_theta", default: 10_000), ropeScaling: scaling,
            tiedEmbeddings: hf.values["tie_word_embeddings"]?.bool ?? false,
            attentionBias: type == "qwen2" || hf.values["attention_bias"]?.bool == true)
        try self.init(config: config, weights: try SafetensorsShards(directory: directory), format: format, cacheFormat: cacheFormat)
    }

    package init(config: Config, weights: some ModelWeights, format: PackedMatrix.Format = .f32, cacheFormat: AttentionCache.Format = .f32) throws {
        let c = config.width, d = config.headSize, h = config.heads, kv = config.kvHeads, inner = config.intermediate
        guard kv >= 1, h % kv == 0 else { throw ModelLoadError(file: weights.path, reason: "num_attention_heads \(h) is not a multiple of num_key_value_heads \(kv)") }
        guard d % 2 == 0 else { throw ModelLoadError(file: weights.path, reason: "head size \(d) is odd: rotary embeddings pair its halves") }
        self.config = config
        self.cacheFormat = cacheFormat
        func tensor(_ name: String, _ shape: [Int]) throws -> FloatBuffer { try weights.floats(name, shape: shape) }
        /// Linear weights `[out, in]` side by side (along out), packed as `[in, out]`: quantized as
        /// the file stores them where every part is, in one format or one matrix each, else from
        /// floats in `format`.
        func linear(_ names: [(String, Int)], inputs: Int = c) throws -> Linear {
            let total = names.reduce(0) { $0 + $1.1 }
            if let matrix = try weights.quantizedMatrix(names, inputs: inputs) { return Linear(parts: [(matrix, 0)], columns: total) }
            let each = try names.map { try weights.quantizedMatrix([$0], inputs: inputs) }
            if names.count > 1, each.allSatisfy({ $0 != nil }) {
                var first = 0
                return Linear(parts: zip(each.compactMap { $0 }, names).map { matrix, name in
                    defer { first += name.1 }
                    return (matrix, first)
                }, columns: total)
            }
            return Linear(parts: [(try floatMatrix(names, inputs: inputs), 0)], columns: total)
        }
        /// One linear layer's weights as one matrix.
        func matrix(_ name: String, _ rows: Int, inputs: Int = c) throws -> PackedMatrix {
            try weights.quantizedMatrix([(name, rows)], inputs: inputs) ?? floatMatrix([(name, rows)], inputs: inputs)
        }
        func floatMatrix(_ names: [(String, Int)], inputs: Int) throws -> PackedMatrix {
            let total = names.reduce(0) { $0 + $1.1 }
            if names.count == 1 { return PackedMatrix(try tensor(names[0].0, [total, inputs]), rows: inputs, columns: total, transposed: true, format: format) }
            let joined = FloatBuffer(count: total * inputs, zeroed: false)
            var offset = 0
            for (name, rows) in names {
                let part = try tensor(name, [rows, inputs])
                (joined.pointer + offset * inputs).update(from: part.pointer, count: rows * inputs)
                offset += rows
            }
            return PackedMatrix(joined, rows: inputs, columns: total, transposed: true, format: format)
        }
        embedding = try matrix("model.embed_tokens.weight", config.vocabularySize)
        blocks = try (0..<config.layers).map { layer in
            let p = "model.layers.\(layer)."
            var bias: FloatBuffer?
            if config.attentionBias {
                let joined = FloatBuffer(count: (h + 2 * kv) * d, zeroed: false)
                for (index, (name, count)) in [("q_proj", h * d), ("k_proj", kv * d), ("v_proj", kv * d)].enumerated() {
                    let part = try tensor(p + "self_attn.\(name).bias", [count])
                    (joined.pointer + [0, h * d, (h + kv) * d][index]).update(from: part.pointer, count: count)
                }
                bias = joined
            }
            return Block(
                attentionNorm: try tensor(p + "input_layernorm.weight", [c]),
                qkv: try linear([(p + "self_attn.q_proj.weight", h * d), (p + "self_attn.k_proj.weight", kv * d), (p + "self_attn.v_proj.weight", kv * d)]),
                qkvBias: bias,
                output: try matrix(p + "self_attn.o_proj.weight", c, inputs: h * d),
                mlpNorm: try tensor(p + "post_attention_layernorm.weight", [c]),
                gateUp: try linear([(p + "mlp.gate_proj.weight", inner), (p + "mlp.up_proj.weight", inner)]),
                down: try matrix(p + "mlp.down_proj.weight", c, inputs: inner))
        }
        finalNorm = try tensor("model.norm.weight", [c])
        if config.tiedEmbeddings || !weights.contains("lm_head.weight") {
            head = OutputHead(embedding, width: c, vocabulary: config.vocabularySize)
        } else {
            head = OutputHead(try matrix("lm_head.weight", config.vocabularySize), width: c, vocabulary: config.vocabularySize)
        }
        inverseFrequencies = Self.inverseFrequencies(headSize: d, theta: config.ropeTheta, scaling: config.ropeScaling)
    }

    /// transformers' `inv_freq` (`_compute_default_rope_parameters`, `_compute_llama3_parameters`).
    static func inverseFrequencies(headSize: Int, theta: Double, scaling: RopeScaling?) -> [Float] {
        let base: [Float] = (0..<(headSize / 2)).map { i in 1 / Float(pow(theta, Double(2 * i) / Double(headSize))) }
        switch scaling {
        case nil: return base
        case .linear(let factor): return base.map { $0 / Float(factor) }
        case .factors(let factors): return zip(base, factors).map { $0 / $1 }
        case .llama3(let factor, let low, let high, let original):
            let lowWavelength = Float(original / low), highWavelength = Float(original / high)
            return base.map { frequency in
                let wavelength = 2 * Float.pi / frequency
                if wavelength < highWavelength { return frequency }
                if wavelength > lowWavelength { return frequency / Float(factor) }
                let smooth = (Float(original) / wavelength - Float(low)) / Float(high - low)
                return (1 - smooth) * frequency / Float(factor) + smooth * frequency
            }
        }
    }

    package func makeCache(capacity: Int) -> AttentionCache {
        AttentionCache(
            layers: config.layers, heads: config.kvHeads, headSize: config.headSize, capacity: min(capacity, config.contextLength), format: cacheFormat)
    }

    /// Rotates each pair (i, i + D/2) of every head in `vector` by position × frequency.
    private func rotate(_ vector: UnsafeMutablePointer<Float>, heads: Int, position: Int, cosines: [Float], sines: [Float]) {
        let d = config.headSize, half = d / 2
        for head in 0..<heads {
            let base = vector + head * d
            for i in 0..<half {
                let (x1, x2) = (base[i], base[i + half])
                base[i] = x1 * cosines[i] - x2 * sines[i]
                base[i + half] = x2 * cosines[i] + x1 * sines[i]
            }
        }
    }

    /// `x * rsqrt(mean(x²) + eps) * weight`, per row.
    private func rmsNorm(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, rows: Int, weight: UnsafePointer<Float>) {
        let c = config.width
        for row in 0..<rows {
            let source = x + row * c, destination = y + row * c
            let mean = Kernels.dot(source, source, count: c) / Float(c)
            let scale = 1 / (mean + config.rmsEpsilon).squareRoot()
            for i in 0..<c { destination[i] = weight[i] * (source[i] * scale) }
        }
    }

    package func decode(_ steps: [DecodeStep]) -> [DecodeOutput] {
        let c = config.width, d = config.headSize, h = config.heads, kv = config.kvHeads, inner = config.intermediate
        let qkvWidth = (h + 2 * kv) * d
        let total = steps.reduce(0) { $0 + $1.tokens.count }
        guard total > 0 else { return steps.map { _ in .logits([]) } }
        let x = FloatBuffer(count: total * c, zeroed: false)
        let normed = FloatBuffer(count: total * c, zeroed: false)
        let qkv = FloatBuffer(count: total * qkvWidth, zeroed: false)
        let attended = FloatBuffer(count: total * h * d, zeroed: false)
        let gateUp = FloatBuffer(count: total * 2 * inner, zeroed: false)
        let hidden = FloatBuffer(count: total * inner, zeroed: false)
        var firstRows: [Int] = []
        var attentionWork = 0, cacheBytes = 0
        var rows = 0
        var positions: [Int] = []
        for step in steps {
            firstRows.append(rows)
            rows += step.tokens.count
            attentionWork += step.tokens.count * (step.cache.length + step.tokens.count) * 2 * h * d
            cacheBytes += (step.cache.length + step.tokens.count) * 2 * kv * d * 4
            positions += (0..<step.tokens.count).map { step.cache.length + $0 }
        }
        let attentionThreads = attentionWork >= 1_000_000 || cacheBytes >= 128 << 10 ? ComputeThreads.cores : 1
        let headGroups = steps.count >= 2 * ComputeThreads.cores ? 1 : min(kv, 4)
        // Each row's rotation, computed once for all layers.
        let angles = positions.map { position in inverseFrequencies.map { Float(position) * $0 } }
        let cosines = angles.map { $0.map { cos($0) } }, sines = angles.map { $0.map { sin($0) } }

        var row = 0
        for step in steps {
            for token in step.tokens {
                embedding.column(max(0, min(token, config.vocabularySize - 1)), into: x.pointer + row * c)
                row += 1
            }
        }
        for (layer, block) in blocks.enumerated() {
            rmsNorm(x.pointer, normed.pointer, rows: total, weight: block.attentionNorm.pointer)
            block.qkv.multiply(normed.pointer, m: total, into: qkv.pointer, bias: block.qkvBias?.pointer)
            for r in 0..<total {
                let base = qkv.pointer + r * qkvWidth
                rotate(base, heads: h, position: positions[r], cosines: cosines[r], sines: sines[r])
                rotate(base + h * d, heads: kv, position: positions[r], cosines: cosines[r], sines: sines[r])
            }
            var jobs: [GPT2Model.AttentionJob] = []
            for (index, step) in steps.enumerated() {
                let job = GPT2Model.AttentionJob(cache: step.cache, first: firstRows[index], tokens: step.tokens.count, start: step.cache.length)
                for t in 0..<job.tokens {
                    let source = qkv.pointer + (job.first + t) * qkvWidth
                    step.cache.store(layer: layer, position: job.start + t, keys: source + h * d, values: source + (h + kv) * d)
                }
                jobs.append(job)
            }
            // Query heads are shared out by whole key/value groups.
            let group = h / kv
            ComputeThreads.run(threads: attentionThreads, chunks: jobs.count * headGroups) { [jobs] chunk in
                let job = jobs[chunk / headGroups]
                let part = chunk % headGroups
                let first = part * kv / headGroups * group, end = (part + 1) * kv / headGroups * group
                withUnsafeTemporaryAllocation(of: Float.self, capacity: job.start + job.tokens) { scores in
                    guard let scores = scores.baseAddress else { return }
                    job.cache.attend(
                        layer: layer, query: qkv.pointer + job.first * qkvWidth, queryStride: qkvWidth, output: attended.pointer + job.first * h * d,
                        tokens: job.tokens, start: job.start, heads: h, scores: scores, only: first..<end, kvGroup: group)
                }
            }
            block.output.multiply(attended.pointer, m: total, into: x.pointer, accumulate: true)

            rmsNorm(x.pointer, normed.pointer, rows: total, weight: block.mlpNorm.pointer)
            block.gateUp.multiply(normed.pointer, m: total, into: gateUp.pointer)
            Kernels.swiGLU(gateUp.pointer, into: hidden.pointer, rows: total, width: inner)
            block.down.multiply(hidden.pointer, m: total, into: x.pointer, accumulate: true)
        }
        for step in steps { step.cache.advance(by: step.tokens.count) }
        return head.outputs(steps, residual: x) { row, into in
            self.rmsNorm(x.pointer + row * c, into, rows: 1, weight: self.finalNorm.pointer)
        }
    }
}

/// Where a model's tensors come from, by their Hugging Face names, as float32.
package protocol ModelWeights {
    /// The file that errors name.
    var path: String { get }
    func contains(_ name: String) -> Bool
    func floats(_ name: String, shape: [Int]) throws -> FloatBuffer
    /// The ggml type of the `[out, in]` matrix `name` and where each of its output rows' blocks
    /// lie, if the file stores it quantized (then it is packed without widening); nil otherwise.
    func quantizedRows(_ name: String, shape: [Int]) throws -> (type: UInt32, row: (Int) -> UnsafeRawPointer)?
    /// Lets go of the file's pages of tensor `name` once it has been copied.
    func release(_ name: String)
}

extension ModelWeights {
    package func quantizedRows(_ name: String, shape: [Int]) throws -> (type: UInt32, row: (Int) -> UnsafeRawPointer)? { nil }
    package func release(_ name: String) {}

    /// The `[out, in]` matrices `parts` side by side (along out) as one packed `[in, out]`
    /// matrix from the file's quantized blocks, if every part is stored in types of one format.
    func quantizedMatrix(_ parts: [(String, Int)], inputs: Int) throws -> PackedMatrix? {
        var sources: [(first: Int, type: UInt32, row: (Int) -> UnsafeRawPointer)] = []
        var formats: Set<PackedMatrix.Format> = [], total = 0
        for (name, rows) in parts {
            guard let stored = try quantizedRows(name, shape: [rows, inputs]), let format = PackedMatrix.Format(ggmlType: stored.type) else { return nil }
            formats.insert(format)
            sources.append((total, stored.type, stored.row))
            total += rows
        }
        guard formats.count == 1, let format = formats.first, let first = sources.first else { return nil }
        defer { for (name, _) in parts { release(name) } }
        return PackedMatrix(ggml: { n in
            let source = sources.last { $0.first <= n } ?? first
            return (source.type, source.row(n - source.first))
        }, rows: inputs, columns: total, format: format)
    }
}

/// A model's safetensors: one `model.safetensors`, or the shards that
/// `model.safetensors.index.json` maps each tensor to.
package final class SafetensorsShards: ModelWeights, Sendable {
    let files: [String: SafetensorsFile]
    /// Tensor -> the file that holds it.
    let map: [String: String]
    package let path: String

    package init(directory: String) throws {
        let index = directory + "/model.safetensors.index.json"
        if FileManager.default.fileExists(atPath: index) {
            path = index
            guard let data = FileManager.default.contents(atPath: index), let json = try? LiteralJSON.parse(Array(data)),
                let members = json["weight_map"]?.members
            else { throw ModelLoadError(file: index, reason: "weight_map: missing or not an object of tensor -> file") }
            var map: [String: String] = [:]
            var files: [String: SafetensorsFile] = [:]
            for (tensor, value) in members {
                guard let file = value.string, !file.contains("/") else { throw ModelLoadError(file: index, reason: "weight_map: '\(tensor)' names no file of the folder") }
                map[tensor] = file
                if files[file] == nil { files[file] = try SafetensorsFile(path: directory + "/" + file) }
            }
            self.map = map
            self.files = files
        } else {
            path = directory + "/model.safetensors"
            let file = try SafetensorsFile(path: path)
            files = ["model.safetensors": file]
            map = Dictionary(uniqueKeysWithValues: file.tensors.keys.map { ($0, "model.safetensors") })
        }
    }

    package func contains(_ name: String) -> Bool { map[name].flatMap { files[$0] }?.contains(name) ?? false }

    package func floats(_ name: String, shape: [Int]) throws -> FloatBuffer {
        guard let fileName = map[name], let file = files[fileName] else { throw ModelLoadError(file: path, tensor: name, reason: "missing") }
        return try file.floats(name, shape: shape)
    }
}
