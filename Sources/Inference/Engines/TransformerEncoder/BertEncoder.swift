import Foundation

/// BERT (Devlin et al. 2018) as a sentence encoder, e.g. all-MiniLM-L6-v2: word, position and
/// token-type embeddings, post-LN encoder layers (self-attention, GELU MLP), then the pooling
/// and normalisation that the model's sentence-transformers configuration asks for.
/// Weight names match Hugging Face's `BertModel`; Linear weights are `[out, in]`.
public final class BertEncoder: Sendable {
    public struct Config: Sendable, Equatable {
        package var layers: Int
        package var heads: Int
        public var width: Int
        package var intermediate: Int
        package var maxPositions: Int
        public var vocabularySize: Int
        package var layerNormEpsilon: Float
        /// Longest input in tokens (sentence-transformers' `max_seq_length`, else `maxPositions`).
        public var maxSequenceLength: Int
        package var pooling: Pooling
        package var normalize: Bool

        package var headSize: Int { width / heads }
    }

    package enum Pooling: String, Sendable {
        case mean, cls, max
    }

    /// One encoder layer. `nn.Linear` weights (`[out, in]`) are packed for the products at load;
    /// query, key and value become one `[C, 3C]` product.
    struct Layer: Sendable {
        let queryKeyValueWeight: PackedMatrix
        let queryKeyValueBias: FloatBuffer
        let attentionOutputWeight: PackedMatrix
        let attentionOutputBias: FloatBuffer
        let attentionNormWeight, attentionNormBias: FloatBuffer
        let intermediateWeight: PackedMatrix
        let intermediateBias: FloatBuffer
        let outputWeight: PackedMatrix
        let outputBias: FloatBuffer
        let outputNormWeight, outputNormBias: FloatBuffer
    }

    public let config: Config
    package let tokenizer: WordPieceTokenizer
    let wordEmbeddings, positionEmbeddings, tokenTypeEmbeddings: FloatBuffer
    let embeddingNormWeight, embeddingNormBias: FloatBuffer
    let layers: [Layer]

    /// Loads a Hugging Face BERT folder (`config.json`, `model.safetensors`, `vocab.txt`) with
    /// optional sentence-transformers files (`modules.json`, `1_Pooling/config.json`,
    /// `sentence_bert_config.json`). `options` from the manifest override them.
    public init(directory: String, options: [String: JSONValue] = [:]) throws {
        let hf = try HFConfig(path: directory + "/config.json")
        let sentence = (try? HFConfig(path: directory + "/sentence_bert_config.json"))
        let poolingConfig = try? HFConfig(path: directory + "/1_Pooling/config.json")
        var pooling = Pooling.mean
        if poolingConfig?.values["pooling_mode_cls_token"]?.bool == true { pooling = .cls }
        if poolingConfig?.values["pooling_mode_max_tokens"]?.bool == true { pooling = .max }
        if let name = options["pooling"]?.string {
            guard let chosen = Pooling(rawValue: name) else {
                throw ModelLoadError(file: directory + "/model.json", reason: "pooling must be mean, cls or max")
            }
            pooling = chosen
        }
        let modules = (try? String(contentsOfFile: directory + "/modules.json", encoding: .utf8)) ?? ""
        let normalize = options["normalize"]?.bool ?? modules.contains("sentence_transformers.models.Normalize")
        let maxPositions = try hf.int("max_position_embeddings")
        config = Config(
            layers: try hf.int("num_hidden_layers"), heads: try hf.int("num_attention_heads"), width: try hf.int("hidden_size"),
            intermediate: try hf.int("intermediate_size"), maxPositions: maxPositions, vocabularySize: try hf.int("vocab_size"),
            layerNormEpsilon: Float(hf.double("layer_norm_eps", default: 1e-12)),
            maxSequenceLength: min(
                try options.positiveInt("max_sequence_length", file: directory + "/model.json") ?? sentence?.values["max_seq_length"]?.positiveInt
                    ?? maxPositions, maxPositions),
            pooling: pooling, normalize: normalize)
        let lowercase = (try? HFConfig(path: directory + "/tokenizer_config.json"))?.values["do_lower_case"]?.bool ?? true
        tokenizer = try WordPieceTokenizer(vocabularyFile: directory + "/vocab.txt", lowercase: lowercase)
        try checkVocabulary(tokenizer: tokenizer.vocabularySize, file: directory + "/vocab.txt", model: config.vocabularySize)

        let file = try SafetensorsFile(path: directory + "/" + (options["weights"]?.string ?? "model.safetensors"))
        let prefix = file.contains("bert.embeddings.word_embeddings.weight") ? "bert." : ""
        let c = config.width
        let inner = config.intermediate
        func tensor(_ name: String, _ shape: [Int]) throws -> FloatBuffer { try file.floats(prefix + name, shape: shape) }
        func linear(_ name: String, out: Int, in inputs: Int) throws -> PackedMatrix {
            PackedMatrix(try tensor(name, [out, inputs]), rows: inputs, columns: out, transposed: true)
        }
        wordEmbeddings = try tensor("embeddings.word_embeddings.weight", [config.vocabularySize, c])
        positionEmbeddings = try tensor("embeddings.position_embeddings.weight", [maxPositions, c])
        tokenTypeEmbeddings = try file.floats(prefix + "embeddings.token_type_embeddings.weight")
        embeddingNormWeight = try tensor("embeddings.LayerNorm.weight", [c])
        embeddingNormBias = try tensor("embeddings.LayerNorm.bias", [c])
        layers = try (0..<config.layers).map { index in
            let p = "encoder.layer.\(index)."
            // Stack query, key and value as the rows of one [3C, C] Linear weight.
            let stacked = FloatBuffer(count: 3 * c * c, zeroed: false)
            let stackedBias = FloatBuffer(count: 3 * c, zeroed: false)
            for (part, name) in ["query", "key", "value"].enumerated() {
                let weight = try tensor(p + "attention.self.\(name).weight", [c, c])
                let bias = try tensor(p + "attention.self.\(name).bias", [c])
                (stacked.pointer + part * c * c).update(from: weight.pointer, count: c * c)
                (stackedBias.pointer + part * c).update(from: bias.pointer, count: c)
            }
            return Layer(
                queryKeyValueWeight: PackedMatrix(stacked, rows: c, columns: 3 * c, transposed: true),
                queryKeyValueBias: stackedBias,
                attentionOutputWeight: try linear(p + "attention.output.dense.weight", out: c, in: c),
                attentionOutputBias: try tensor(p + "attention.output.dense.bias", [c]),
                attentionNormWeight: try tensor(p + "attention.output.LayerNorm.weight", [c]),
                attentionNormBias: try tensor(p + "attention.output.LayerNorm.bias", [c]),
                intermediateWeight: try linear(p + "intermediate.dense.weight", out: inner, in: c),
                intermediateBias: try tensor(p + "intermediate.dense.bias", [inner]),
                outputWeight: try linear(p + "output.dense.weight", out: c, in: inner), outputBias: try tensor(p + "output.dense.bias", [c]),
                outputNormWeight: try tensor(p + "output.LayerNorm.weight", [c]), outputNormBias: try tensor(p + "output.LayerNorm.bias", [c]))
        }
    }

    /// Embeds a batch of texts in one pass; returns one vector per text and the token counts.
    public func embed(_ texts: [String]) -> (vectors: [[Float]], tokens: [Int]) {
        let sequences = texts.map { tokenizer.encode($0, maxLength: config.maxSequenceLength) }
        return (embed(tokenIDs: sequences), sequences.map(\.count))
    }

    /// Embeds pre-tokenised inputs (each already wrapped in `[CLS] ... [SEP]`).
    public func embed(tokenIDs sequences: [[Int]]) -> [[Float]] {
        let c = config.width
        let total = sequences.reduce(0) { $0 + $1.count }
        guard total > 0 else { return sequences.map { _ in [Float](repeating: 0, count: c) } }
        let x = FloatBuffer(count: total * c, zeroed: false)
        let qkv = FloatBuffer(count: total * 3 * c, zeroed: false)
        let context = FloatBuffer(count: total * c, zeroed: false)
        let projected = FloatBuffer(count: total * c, zeroed: false)
        let hidden = FloatBuffer(count: total * config.intermediate, zeroed: false)
        let scores = FloatBuffer(count: (sequences.map(\.count).max() ?? 1), zeroed: false)

        var row = 0
        for sequence in sequences {
            for (position, token) in sequence.enumerated() {
                let destination = x.pointer + row * c
                let word = wordEmbeddings.pointer + max(0, min(token, config.vocabularySize - 1)) * c
                let place = positionEmbeddings.pointer + min(position, config.maxPositions - 1) * c
                let type = tokenTypeEmbeddings.pointer
                for i in 0..<c { destination[i] = word[i] + place[i] + type[i] }
                row += 1
            }
        }
        Kernels.layerNorm(x.pointer, x.pointer, rows: total, width: c, weight: embeddingNormWeight.pointer, bias: embeddingNormBias.pointer, epsilon: config.layerNormEpsilon)

        for layer in layers {
            // Self-attention over each sequence separately (no padding), then add & norm.
            layer.queryKeyValueWeight.multiply(x.pointer, m: total, into: qkv.pointer, bias: layer.queryKeyValueBias.pointer)
            var first = 0
            for sequence in sequences {
                let offset = first * 3 * c
                Attention.bidirectional(
                    query: qkv.pointer + offset, keys: qkv.pointer + offset + c, values: qkv.pointer + offset + 2 * c, stride: 3 * c,
                    output: context.pointer + first * c, length: sequence.count, validLength: sequence.count,
                    heads: config.heads, headSize: config.headSize, scores: scores.pointer)
                first += sequence.count
            }
            projected.pointer.update(from: x.pointer, count: total * c)
            layer.attentionOutputWeight.multiply(context.pointer, m: total, into: projected.pointer, bias: layer.attentionOutputBias.pointer, accumulate: true)
            Kernels.layerNorm(projected.pointer, x.pointer, rows: total, width: c, weight: layer.attentionNormWeight.pointer, bias: layer.attentionNormBias.pointer, epsilon: config.layerNormEpsilon)

            // Feed-forward (exact GELU), then add & norm.
            layer.intermediateWeight.multiply(x.pointer, m: total, into: hidden.pointer, bias: layer.intermediateBias.pointer)
            Kernels.geluErf(hidden.pointer, count: total * config.intermediate)
            projected.pointer.update(from: x.pointer, count: total * c)
            layer.outputWeight.multiply(hidden.pointer, m: total, into: projected.pointer, bias: layer.outputBias.pointer, accumulate: true)
            Kernels.layerNorm(projected.pointer, x.pointer, rows: total, width: c, weight: layer.outputNormWeight.pointer, bias: layer.outputNormBias.pointer, epsilon: config.layerNormEpsilon)
        }

        var results: [[Float]] = []
        var first = 0
        for sequence in sequences {
            var pooled = [Float](repeating: config.pooling == .max ? -.infinity : 0, count: c)
            switch config.pooling {
            case .cls:
                for i in 0..<c { pooled[i] = x.pointer[first * c + i] }
            case .mean:
                for t in 0..<sequence.count {
                    for i in 0..<c { pooled[i] += x.pointer[(first + t) * c + i] }
                }
                let scale = 1 / Float(sequence.count)
                for i in 0..<c { pooled[i] *= scale }
            case .max:
                for t in 0..<sequence.count {
                    for i in 0..<c { pooled[i] = max(pooled[i], x.pointer[(first + t) * c + i]) }
                }
            }
            if config.normalize {
                let norm = pooled.reduce(0) { $0 + $1 * $1 }.squareRoot()
                if norm > 0 { for i in 0..<c { pooled[i] /= norm } }
            }
            results.append(pooled)
            first += sequence.count
        }
        return results
    }
}
