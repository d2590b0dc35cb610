import Foundation
import Synchronization

/// GPT-2 (Radford et al. 2019) as in Hugging Face's `GPT2LMHeadModel`: token and position
/// embeddings, pre-LN blocks (attention, MLP with tanh-GELU), a final layer norm and an output
/// head tied to the token embeddings. Parameter names match the checkpoint (`wte`, `h.0.ln_1`,
/// `attn.c_attn`, `mlp.c_fc`...), so loading is a name-for-name copy.
package final class GPT2Model: CausalLM {
    package struct Config: Sendable, Equatable {
        package var layers: Int
        package var heads: Int
        package var width: Int
        package var contextLength: Int
        package var vocabularySize: Int
        package var layerNormEpsilon: Float

        package var headSize: Int { width / heads }

        package init(layers: Int, heads: Int, width: Int, contextLength: Int, vocabularySize: Int, layerNormEpsilon: Float = 1e-5) {
            self.layers = layers
            self.heads = heads
            self.width = width
            self.contextLength = contextLength
            self.vocabularySize = vocabularySize
            self.layerNormEpsilon = layerNormEpsilon
        }
    }

    /// One transformer block's weights. Conv1D weights are `[in, out]` in the checkpoint and
    /// packed for the matrix products at load.
    struct Block: Sendable {
        let ln1Weight, ln1Bias: FloatBuffer  // [C]
        let attentionWeight: PackedMatrix  // c_attn: [C, 3C]
        let attentionBias: FloatBuffer  // [3C]
        let projectionWeight: PackedMatrix  // attn.c_proj: [C, C]
        let projectionBias: FloatBuffer
        let ln2Weight, ln2Bias: FloatBuffer  // [C]
        let fcWeight: PackedMatrix  // mlp.c_fc: [C, 4C]
        let fcBias: FloatBuffer
        let fcProjectionWeight: PackedMatrix  // mlp.c_proj: [4C, C]
        let fcProjectionBias: FloatBuffer
    }

    package let config: Config
    /// wte `[V, C]`, kept as the output head `Wᵀ [C, V]` (tied); embedding lookups read its columns.
    let tokenEmbedding: PackedMatrix
    let positionEmbedding: FloatBuffer  // wpe: [T, C]
    let blocks: [Block]
    let finalNormWeight, finalNormBias: FloatBuffer  // ln_f: [C]
    /// The tied output head (`tokenEmbedding`) and its int8 copy.
    let head: OutputHead
    /// What the key/value caches it makes hold.
    package let cacheFormat: AttentionCache.Format

    /// Loads `config.json` and `model.safetensors` from a Hugging Face GPT-2 folder.
    package convenience init(
        directory: String, weightsFile: String = "model.safetensors", format: PackedMatrix.Format = .f32, cacheFormat: AttentionCache.Format = .f32
    ) throws {
        let hf = try HFConfig(path: directory + "/config.json")
        let config = Config(
            layers: try hf.int("n_layer", "num_hidden_layers"), heads: try hf.int("n_head", "num_attention_heads"),
            width: try hf.int("n_embd", "hidden_size"), contextLength: try hf.int("n_positions", "n_ctx"),
            vocabularySize: try hf.int("vocab_size"), layerNormEpsilon: Float(hf.double("layer_norm_epsilon", default: 1e-5)))
        let file = try SafetensorsFile(path: directory + "/" + weightsFile)
        if file.contains("lm_head.weight"), file.shape("lm_head.weight") != [config.vocabularySize, config.width] {
            throw ModelLoadError(
                file: file.path, tensor: "lm_head.weight", reason: "shape \(file.shape("lm_head.weight") ?? []), expected \([config.vocabularySize, config.width])")
        }
        try self.init(config: config, weights: file, format: format, cacheFormat: cacheFormat)
    }

    package init(config: Config, weights file: some ModelWeights, format: PackedMatrix.Format = .f32, cacheFormat: AttentionCache.Format = .f32) throws {
        guard config.width % config.heads == 0 else {
            throw ModelLoadError(file: file.path, reason: "n_embd \(config.width) is not a multiple of n_head \(config.heads)")
        }
        self.config = config
        self.cacheFormat = cacheFormat
        let c = config.width
        // GPT2LMHeadModel saves "transformer.h.0..."; GPT2Model saves "h.0...".
        let prefix = file.contains("transformer.wte.weight") ? "transformer." : ""
        func tensor(_ name: String, _ shape: [Int]) throws -> FloatBuffer { try file.floats(prefix + name, shape: shape) }
        /// A Conv1D weight `[in, out]`: quantized as the file stores it (as `[out, in]`), else from floats.
        func packed(_ name: String, _ shape: [Int]) throws -> PackedMatrix {
            if let matrix = try file.quantizedMatrix([(prefix + name, shape[1])], inputs: shape[0]) { return matrix }
            return PackedMatrix(try tensor(name, shape), rows: shape[0], columns: shape[1], format: format)
        }
        if let matrix = try file.quantizedMatrix([(prefix + "wte.weight", config.vocabularySize)], inputs: c) {
            tokenEmbedding = matrix
        } else {
            tokenEmbedding = PackedMatrix(
                try tensor("wte.weight", [config.vocabularySize, c]), rows: c, columns: config.vocabularySize, transposed: true, format: format)
        }
        positionEmbedding = try tensor("wpe.weight", [config.contextLength, c])
        blocks = try (0..<config.layers).map { layer in
            let p = "h.\(layer)."
            return Block(
                ln1Weight: try tensor(p + "ln_1.weight", [c]), ln1Bias: try tensor(p + "ln_1.bias", [c]),
                attentionWeight: try packed(p + "attn.c_attn.weight", [c, 3 * c]), attentionBias: try tensor(p + "attn.c_attn.bias", [3 * c]),
                projectionWeight: try packed(p + "attn.c_proj.weight", [c, c]), projectionBias: try tensor(p + "attn.c_proj.bias", [c]),
                ln2Weight: try tensor(p + "ln_2.weight", [c]), ln2Bias: try tensor(p + "ln_2.bias", [c]),
                fcWeight: try packed(p + "mlp.c_fc.weight", [c, 4 * c]), fcBias: try tensor(p + "mlp.c_fc.bias", [4 * c]),
                fcProjectionWeight: try packed(p + "mlp.c_proj.weight", [4 * c, c]), fcProjectionBias: try tensor(p + "mlp.c_proj.bias", [c]))
        }
        finalNormWeight = try tensor("ln_f.weight", [c])
        finalNormBias = try tensor("ln_f.bias", [c])
        head = OutputHead(tokenEmbedding, width: c, vocabulary: config.vocabularySize)
    }

    /// Bytes of weights read per decoded token (the memory-bandwidth bound of batch-1 decoding).
    package var weightBytesPerToken: Int {
        let c = config.width
        let matrices = blocks.reduce(0) {
            $0 + $1.attentionWeight.byteCount + $1.projectionWeight.byteCount + $1.fcWeight.byteCount + $1.fcProjectionWeight.byteCount
        }
        let vectors = 4 * (config.layers * (4 * c + 3 * c + c + 4 * c + c) + 2 * c)
        return matrices + tokenEmbedding.byteCount + vectors
    }

    /// The same for a greedy step, which reads the head's int8 copy instead (nil without it).
    package var greedyWeightBytesPerToken: Int? {
        head.bounded.map { weightBytesPerToken - tokenEmbedding.byteCount + $0.byteCount }
    }

    // MARK: Forward

    /// One sequence's attention in a step: its cache and its rows.
    struct AttentionJob: @unchecked Sendable {
        let cache: AttentionCache
        let first, tokens, start: Int
    }

    package typealias KVCache = AttentionCache
    package typealias Step = DecodeStep
    package typealias Output = DecodeOutput

    package var contextLength: Int { config.contextLength }
    package var cacheBytesPerPosition: Int { config.layers * 2 * config.width * cacheFormat.bytes }
    package var weightBytes: Int { weightBytesPerToken + positionEmbedding.count * 4 + (head.bounded?.byteCount ?? 0) }
    package var vocabularySize: Int { config.vocabularySize }

    package func makeCache(capacity: Int) -> AttentionCache {
        AttentionCache(
            layers: config.layers, heads: config.heads, headSize: config.headSize, capacity: min(capacity, config.contextLength), format: cacheFormat)
    }

    /// Whether greedy and sampling steps use the head's bounded int8 copy (else the whole head).
    package var hasBoundedHead: Bool { head.bounded != nil }

    /// Greedy and sampling steps' rows so far (see `OutputHead.statistics`).
    package var boundedHeadStatistics: (rows: Int, candidates: Int, fullRows: Int, proposals: Int) { head.statistics }

    /// Runs one batched step for several sequences at once: every matrix product covers all
    /// their new tokens (weights are read once per step), attention runs per sequence against
    /// its own cache. Returns, per sequence, its logits, or its token for a greedy step.
    package func decode(_ steps: [DecodeStep]) -> [DecodeOutput] {
        let c = config.width
        let total = steps.reduce(0) { $0 + $1.tokens.count }
        guard total > 0 else { return steps.map { _ in .logits([]) } }
        let x = FloatBuffer(count: total * c, zeroed: false)  // residual stream [T, C]
        let h = FloatBuffer(count: total * c, zeroed: false)  // normalised
        let qkv = FloatBuffer(count: total * 3 * c, zeroed: false)
        let attended = FloatBuffer(count: total * c, zeroed: false)
        let hidden = FloatBuffer(count: total * 4 * c, zeroed: false)
        var firstRows: [Int] = []  // each sequence's first row in the step
        var attentionWork = 0, cacheBytes = 0  // per layer
        var rows = 0
        for step in steps {
            firstRows.append(rows)
            rows += step.tokens.count
            attentionWork += step.tokens.count * (step.cache.length + step.tokens.count) * 2 * c
            cacheBytes += (step.cache.length + step.tokens.count) * 2 * c * 4
        }
        // Even one token's attention is worth sharing once its keys and values pass 128 KiB
        // a layer (a context of about 20 tokens): they stream from memory, the weights having
        // passed through the caches since. Measured against 1 MiB, alternating tokens in one
        // run: 1.0-1.2% faster decoding at contexts up to 250; sharing always: 1-2% slower.
        let attentionThreads = attentionWork >= 1_000_000 || cacheBytes >= 128 << 10 ? ComputeThreads.cores : 1
        // Few sequences (a long prompt): their heads are shared out too.
        let headGroups = steps.count >= 2 * ComputeThreads.cores ? 1 : min(config.heads, 4)

        // Embeddings.
        var row = 0
        for step in steps {
            for (offset, token) in step.tokens.enumerated() {
                let position = step.cache.length + offset
                let destination = x.pointer + row * c
                tokenEmbedding.column(max(0, min(token, config.vocabularySize - 1)), into: destination)
                let positionRow = positionEmbedding.pointer + position * c
                for i in 0..<c { destination[i] += positionRow[i] }
                row += 1
            }
        }

        for (layer, block) in blocks.enumerated() {
            // Attention: h = ln_1(x); q, k, v = h · c_attn; x += c_proj(attention(q, k, v)).
            Kernels.layerNorm(x.pointer, h.pointer, rows: total, width: c, weight: block.ln1Weight.pointer, bias: block.ln1Bias.pointer, epsilon: config.layerNormEpsilon)
            block.attentionWeight.multiply(h.pointer, m: total, into: qkv.pointer, bias: block.attentionBias.pointer)
            var jobs: [AttentionJob] = []
            for (index, step) in steps.enumerated() {
                let job = AttentionJob(cache: step.cache, first: firstRows[index], tokens: step.tokens.count, start: step.cache.length)
                for t in 0..<job.tokens {
                    let source = qkv.pointer + (job.first + t) * 3 * c
                    step.cache.store(layer: layer, position: job.start + t, keys: source + c, values: source + 2 * c)
                }
                jobs.append(job)
            }
            // Each (sequence, group of heads) attends on its own, shared among the compute
            // threads when there is enough work (they write disjoint parts of `attended`).
            let heads = config.heads
            ComputeThreads.run(threads: attentionThreads, chunks: jobs.count * headGroups) { [jobs] chunk in
                let job = jobs[chunk / headGroups]
                let group = chunk % headGroups
                withUnsafeTemporaryAllocation(of: Float.self, capacity: job.start + job.tokens) { scores in
                    guard let scores = scores.baseAddress else { return }  // at least one position
                    job.cache.attend(
                        layer: layer, query: qkv.pointer + job.first * 3 * c, queryStride: 3 * c, output: attended.pointer + job.first * c,
                        tokens: job.tokens, start: job.start, heads: heads, scores: scores,
                        only: (group * heads / headGroups)..<((group + 1) * heads / headGroups))
                }
            }
            block.projectionWeight.multiply(attended.pointer, m: total, into: x.pointer, bias: block.projectionBias.pointer, accumulate: true)

            // MLP: x += c_proj(gelu(c_fc(ln_2(x)))).
            Kernels.layerNorm(x.pointer, h.pointer, rows: total, width: c, weight: block.ln2Weight.pointer, bias: block.ln2Bias.pointer, epsilon: config.layerNormEpsilon)
            block.fcWeight.multiply(h.pointer, m: total, into: hidden.pointer, bias: block.fcBias.pointer)
            Kernels.geluTanh(hidden.pointer, count: total * 4 * c)
            block.fcProjectionWeight.multiply(hidden.pointer, m: total, into: x.pointer, bias: block.fcProjectionBias.pointer, accumulate: true)
        }
        for step in steps { step.cache.advance(by: step.tokens.count) }

        return head.outputs(steps, residual: x) { row, into in
            Kernels.layerNorm(
                x.pointer + row * c, into, rows: 1, width: c, weight: self.finalNormWeight.pointer, bias: self.finalNormBias.pointer,
                epsilon: self.config.layerNormEpsilon)
        }
    }
}

/// The final norm and the output head over a step's rows: whole logits for the rows that want
/// them, a block of rows at a time; the last rows of greedy and sampling steps through the
/// head's bounded int8 copy where there is one.
package final class OutputHead: Sendable {
    /// The head `[C, V]`.
    let matrix: PackedMatrix
    /// Its int8 copy for greedy and sampling steps (nil without AVX512-VNNI, and for a quantized
    /// head: the copy would take about as much memory again to read barely fewer bytes).
    let bounded: BoundedHead?
    let width: Int
    let vocabulary: Int
    private let counters = Mutex(BoundedHead.Statistics())

    /// Rows of the output head computed at once (a 256 x 50,257 block is 51 MB).
    static let headRows = 256

    init(_ matrix: PackedMatrix, width: Int, vocabulary: Int) {
        self.matrix = matrix
        self.bounded = matrix.format.quantization == nil ? BoundedHead(matrix) : nil
        self.width = width
        self.vocabulary = vocabulary
    }

    /// Greedy and sampling steps' rows so far: how many, the columns computed exactly, rows
    /// computed whole, and the sampling rows' draws (kept or not).
    var statistics: (rows: Int, candidates: Int, fullRows: Int, proposals: Int) {
        counters.withLock { ($0.rows, $0.candidates, $0.fullRows, $0.proposals) }
    }

    /// Per sequence, its logits or token, from the residual stream `x` (`[rows, C]`, the
    /// steps' tokens in order); `finalNorm` normalises row `r` of `x` into a buffer.
    func outputs(
        _ steps: [DecodeStep], residual x: FloatBuffer, finalNorm: (Int, UnsafeMutablePointer<Float>) -> Void
    ) -> [DecodeOutput] {
        let c = width
        // Final norm and the tied output head, only for the rows whose logits are wanted, a
        // block of rows at a time; bounded and sampling steps' last rows go through the bounded head.
        var selected: [(step: Int, row: Int, offset: Int)] = []  // row in x; offset among the step's tokens
        var boundedRows: [(step: Int, row: Int, choice: BoundedHead.Choice)] = []
        var row = 0
        for (index, step) in steps.enumerated() {
            let count = step.tokens.count
            if let choice = step.choice {
                boundedRows.append((index, row + count - 1, choice))
            } else {
                for offset in (step.allLogits ? 0 : max(0, count - 1))..<count { selected.append((index, row + offset, offset)) }
            }
            row += count
        }
        let vocabulary = self.vocabulary
        var results = [DecodeOutput](repeating: .logits([]), count: steps.count)
        if !boundedRows.isEmpty {
            let gathered = FloatBuffer(count: boundedRows.count * c, zeroed: false)
            for (index, entry) in boundedRows.enumerated() { finalNorm(entry.row, gathered.pointer + index * c) }
            let tokens: [Int]
            if let boundedHead = bounded {
                var statistics = BoundedHead.Statistics()
                tokens = boundedHead.choose(gathered.pointer, m: boundedRows.count, ldx: c, rows: boundedRows.map(\.choice), statistics: &statistics)
                counters.withLock {
                    $0.rows += statistics.rows
                    $0.candidates += statistics.candidates
                    $0.fullRows += statistics.fullRows
                    $0.proposals += statistics.proposals
                }
            } else {
                let logits = FloatBuffer(count: boundedRows.count * vocabulary, zeroed: false)
                matrix.multiply(gathered.pointer, m: boundedRows.count, into: logits.pointer)
                tokens = boundedRows.enumerated().map { index, entry in
                    var row = Array(UnsafeBufferPointer(start: logits.pointer + index * vocabulary, count: vocabulary))
                    for (token, penalty) in entry.choice.penalties where token >= 0 && token < vocabulary { row[token] -= penalty }
                    if case .sample(let temperature, _, let uniform) = entry.choice {
                        return Sampler.draw(row, temperature: temperature, uniform: uniform)
                    }
                    return Sampler.argmax(row)
                }
            }
            for (entry, token) in zip(boundedRows, tokens) { results[entry.step] = .token(token) }
        }
        var rowsOut = [[Float]](repeating: [], count: steps.count)
        let gathered = FloatBuffer(count: min(selected.count, Self.headRows) * c, zeroed: false)
        let logits = FloatBuffer(count: min(selected.count, Self.headRows) * vocabulary, zeroed: false)
        for first in stride(from: 0, to: selected.count, by: Self.headRows) {
            let block = selected[first..<min(selected.count, first + Self.headRows)]
            for (index, entry) in block.enumerated() { finalNorm(entry.row, gathered.pointer + index * c) }
            matrix.multiply(gathered.pointer, m: block.count, into: logits.pointer)
            for (index, entry) in block.enumerated() {
                let rowLogits = UnsafeBufferPointer(start: logits.pointer + index * vocabulary, count: vocabulary)
                let step = steps[entry.step]
                if let eachRow = step.eachRow {
                    eachRow(entry.offset, rowLogits)
                    if entry.offset == step.tokens.count - 1 { rowsOut[entry.step] = Array(rowLogits) }
                } else {
                    rowsOut[entry.step] += rowLogits
                }
            }
        }
        for entry in selected where entry.offset == steps[entry.step].tokens.count - 1 { results[entry.step] = .logits(rowsOut[entry.step]) }
        return results
    }
}
