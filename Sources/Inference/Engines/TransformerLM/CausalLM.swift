import Foundation
import Synchronization

/// A decoder-only language model as the generator drives it: batched steps over sequences,
/// each with its own key/value cache. GPT-2 and the Llama family are two implementations;
/// scheduling and sampling live outside the model.
package protocol CausalLM: AnyObject, Sendable {
    var contextLength: Int { get }
    var vocabularySize: Int { get }
    /// Whether greedy and sampling steps use the head's bounded int8 copy (else the whole head).
    var hasBoundedHead: Bool { get }
    /// Key/value cache bytes per position of one sequence (all layers).
    var cacheBytesPerPosition: Int { get }
    /// The bytes the weights take in memory (with the head's int8 copy).
    var weightBytes: Int { get }
    func makeCache(capacity: Int) -> AttentionCache
    /// Runs one batched step; per sequence, its logits, or its token for a greedy or
    /// sampling step.
    func decode(_ steps: [DecodeStep]) -> [DecodeOutput]
}

extension CausalLM {
    /// `decode`'s logits, per sequence (`[]` for a greedy step).
    package func forward(_ steps: [DecodeStep]) -> [[Float]] { decode(steps).map(\.logits) }
}

/// Keys and values per layer, `[heads, capacity, headSize]`: each head's positions are one
/// contiguous run, which a decoding step streams front to back (interleaved heads made
/// every head's read a 256-byte stride through all of them). In float32, or float16
/// (`kv_cache_format: "f16"`, as llama.cpp keeps its cache): half the memory per position.
package final class AttentionCache: @unchecked Sendable {
    package enum Format: String, Sendable {
        case f32, f16

        package var bytes: Int { self == .f32 ? 4 : 2 }
    }

    package let capacity: Int
    package let format: Format
    package private(set) var length = 0
    /// Each layer's keys and values, `format`'s elements.
    let keys: [UnsafeMutableRawPointer]
    let values: [UnsafeMutableRawPointer]
    private let buffers: [FloatBuffer]
    let heads: Int
    let headSize: Int

    init(layers: Int, heads: Int, headSize: Int, capacity: Int, format: Format = .f32) {
        self.capacity = capacity
        self.heads = heads
        self.headSize = headSize
        self.format = format
        // FloatBuffer counts floats: an f16 layer needs half as many.
        let floats = (heads * capacity * headSize * format.bytes + 3) / 4
        let buffers = (0..<(2 * layers)).map { _ in FloatBuffer(count: floats, zeroed: false) }
        self.buffers = buffers
        keys = (0..<layers).map { UnsafeMutableRawPointer(buffers[2 * $0].pointer) }
        values = (0..<layers).map { UnsafeMutableRawPointer(buffers[2 * $0 + 1].pointer) }
    }

    func advance(by count: Int) { length += count }

    /// Distance between two heads' runs, in elements.
    var headStride: Int { capacity * headSize }

    /// Stores the keys and values (`[heads * headSize]` each) of `position` in `layer`.
    func store(layer: Int, position: Int, keys key: UnsafePointer<Float>, values value: UnsafePointer<Float>) {
        switch format {
        case .f32: store(Float.self, layer: layer, position: position, key, value)
        case .f16: store(Float16.self, layer: layer, position: position, key, value)
        }
    }

    private func store<Element: CacheElement>(
        _ element: Element.Type, layer: Int, position: Int, _ key: UnsafePointer<Float>, _ value: UnsafePointer<Float>
    ) {
        let keyRuns = keys[layer].assumingMemoryBound(to: Element.self), valueRuns = values[layer].assumingMemoryBound(to: Element.self)
        for h in 0..<heads {
            Element.store(key + h * headSize, into: keyRuns + h * headStride + position * headSize, count: headSize)
            Element.store(value + h * headSize, into: valueRuns + h * headStride + position * headSize, count: headSize)
        }
    }

    /// A copy (for `n` > 1 choices sharing one prompt).
    package func copy() -> AttentionCache {
        let clone = AttentionCache(layers: keys.count, heads: heads, headSize: headSize, capacity: capacity, format: format)
        let run = headStride * format.bytes
        for layer in keys.indices {
            for h in 0..<heads {
                (clone.keys[layer] + h * run).copyMemory(from: keys[layer] + h * run, byteCount: length * headSize * format.bytes)
                (clone.values[layer] + h * run).copyMemory(from: values[layer] + h * run, byteCount: length * headSize * format.bytes)
            }
        }
        clone.length = length
        return clone
    }

    /// One sequence's attention in a step (`Attention.causal` on this cache's elements).
    func attend(
        layer: Int, query: UnsafePointer<Float>, queryStride: Int, output: UnsafeMutablePointer<Float>, tokens: Int, start: Int,
        heads: Int, scores: UnsafeMutablePointer<Float>, only: Range<Int>, kvGroup: Int = 1
    ) {
        func run<Element: CacheElement>(_ element: Element.Type) {
            Attention.causal(
                query: query, queryStride: queryStride, keys: UnsafePointer(keys[layer].assumingMemoryBound(to: Element.self)),
                values: UnsafePointer(values[layer].assumingMemoryBound(to: Element.self)), positionStride: headSize, headStride: headStride,
                output: output, tokens: tokens, start: start, heads: heads, headSize: headSize, scores: scores, only: only, kvGroup: kvGroup)
        }
        switch format {
        case .f32: run(Float.self)
        case .f16: run(Float16.self)
        }
    }
}


/// One sequence's part of a batched step: new tokens appended after what its cache holds.
package struct DecodeStep {
    package var tokens: [Int]
    package var cache: AttentionCache
    /// Logits for every new token (prompt log-probabilities), or only the last.
    package var allLogits: Bool
    /// With `allLogits`: handed each new token's logits (its index among the new tokens, and
    /// the row) as they are computed, instead of returning them all; `forward` then returns
    /// only the last row. A long prompt's rows times a large vocabulary (1,000 x 50,257
    /// floats is 200 MB, for each of a batch's sequences) are never held at once.
    package var eachRow: ((Int, UnsafeBufferPointer<Float>) -> Void)?

    /// Greedy decoding: `decode` returns the most likely next token (after subtracting these
    /// penalties per token) instead of logits, without computing the whole head. Ignored
    /// with `allLogits`.
    package var greedy: [Int: Float]?
    /// Sampling without top_k or top_p: `decode` returns a token drawn from the softmax of
    /// the logits (less these penalties) at this temperature, with numbers in [0, 1) from
    /// `uniform`, without computing the whole head where the model has its int8 copy.
    /// Ignored with `allLogits`, or with `greedy`.
    package var sample: Sample?

    package struct Sample {
        package var temperature: Double
        package var penalties: [Int: Float]
        package var uniform: () -> Double

        package init(temperature: Double, penalties: [Int: Float], uniform: @escaping () -> Double) {
            self.temperature = temperature
            self.penalties = penalties
            self.uniform = uniform
        }
    }

    package init(
        tokens: [Int], cache: AttentionCache, allLogits: Bool = false, eachRow: ((Int, UnsafeBufferPointer<Float>) -> Void)? = nil,
        greedy: [Int: Float]? = nil, sample: Sample? = nil
    ) {
        self.tokens = tokens
        self.cache = cache
        self.allLogits = allLogits
        self.eachRow = eachRow
        self.greedy = greedy
        self.sample = sample
    }

    /// What the bounded head is to pick for this step, if anything.
    var choice: BoundedHead.Choice? {
        guard !allLogits, !tokens.isEmpty else { return nil }
        if let greedy { return .greedy(penalties: greedy) }
        if let sample { return .sample(temperature: sample.temperature, penalties: sample.penalties, uniform: sample.uniform) }
        return nil
    }
}

/// What a step yields for one sequence.
package enum DecodeOutput {
    /// Logits `[rows, V]` flattened (one row unless `allLogits` without `eachRow`).
    case logits([Float])
    /// The greedy step's token.
    case token(Int)

    package var logits: [Float] {
        if case .logits(let values) = self { return values }
        return []
    }

    package var token: Int? {
        if case .token(let token) = self { return token }
        return nil
    }
}

