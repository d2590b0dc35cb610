import Foundation
import Inference

/// One decoding token's attention (GPT-2 124M: 12 layers, 12 heads of 64) against caches too
/// big for the L3 cache, as in decoding, where the weights stream through it between layers:
/// the library's kernel on head-major caches beside the former kernel on position-major caches
/// (per position a dot product, then `out += p * v` through memory), alternating, best of five.
enum AttentionProbe {
    static func run() {
        let (layers, heads, headSize) = (12, 12, 64)
        let width = heads * headSize
        for length in [48, 128, 512, 1000] {
            // Enough independent caches that one round's keys and values exceed 64 MiB.
            let copies = max(1, (64 << 20) / (layers * 2 * length * width * 4))
            let caches = (0..<copies * layers).map { _ in (keys: FloatBuffer(count: length * width), values: FloatBuffer(count: length * width)) }
            for cache in caches {
                for i in 0..<(length * width) {
                    cache.keys[i] = Float((i * 7) % 17) * 0.01
                    cache.values[i] = Float((i * 5) % 13) * 0.01
                }
            }
            let query = FloatBuffer(count: 3 * width)
            for i in 0..<(3 * width) { query[i] = Float(i % 11) * 0.02 }
            let output = FloatBuffer(count: width)
            let scores = FloatBuffer(count: length)
            func current() {
                for cache in caches {
                    Attention.causal(
                        query: query.pointer, queryStride: 3 * width, keys: cache.keys.pointer, values: cache.values.pointer,
                        positionStride: headSize, headStride: length * headSize, output: output.pointer, tokens: 1, start: length - 1,
                        heads: heads, headSize: headSize, scores: scores.pointer)
                }
            }
            func former() {
                for cache in caches {
                    formerCausal(
                        query: query.pointer, keys: cache.keys.pointer, values: cache.values.pointer, output: output.pointer,
                        visible: length, heads: heads, headSize: headSize, scores: scores.pointer)
                }
            }
            var best = (current: Double.infinity, former: Double.infinity)
            for _ in 0..<5 {
                best.current = min(best.current, time(current) / Double(copies))
                best.former = min(best.former, time(former) / Double(copies))
            }
            print(String(
                format: "context %4d: %.3f ms per token (former layout and kernel %.3f ms), %.2fx; %.1f GB/s", length, best.current * 1000,
                best.former * 1000, best.former / best.current, Double(layers * 2 * length * width * 4) / best.current / 1e9))
        }
        softmaxes()
    }

    /// A prompt's softmaxes (one per token and head, over the positions it sees): the
    /// library's against scalar `expf`, as it was, alternating, best of five.
    static func softmaxes() {
        for length in [128, 1024] {
            let rows = (1...length).map { visible in (0..<visible).map { Float(($0 * 37) % 101) * 0.05 - 2.5 } }
            let buffer = FloatBuffer(count: length)
            func run(_ softmax: (UnsafeMutablePointer<Float>, Int) -> Void) -> Double {
                time {
                    for _ in 0..<12 {
                        for row in rows {
                            for (i, value) in row.enumerated() { buffer[i] = value }
                            softmax(buffer.pointer, row.count)
                        }
                    }
                }
            }
            var best = (current: Double.infinity, former: Double.infinity)
            for _ in 0..<5 {
                best.current = min(best.current, run { Kernels.softmax($0, count: $1) })
                best.former = min(best.former, run(formerSoftmax))
            }
            print(String(
                format: "softmaxes of a %4d-token prompt (12 heads): %.3f ms (scalar expf %.3f ms), %.2fx", length, best.current * 1000,
                best.former * 1000, best.former / best.current))
        }
    }

    static func formerSoftmax(_ values: UnsafeMutablePointer<Float>, _ count: Int) {
        var maximum = -Float.infinity
        for i in 0..<count { maximum = max(maximum, values[i]) }
        var sum: Float = 0
        for i in 0..<count {
            let e = expf(values[i] - maximum)
            values[i] = e
            sum += e
        }
        let inverse = 1 / sum
        for i in 0..<count { values[i] *= inverse }
    }

    static func time(_ body: () -> Void) -> Double {
        let start = Date()
        body()
        return Date().timeIntervalSince(start)
    }

    /// The kernel as it was, on `[positions, heads * headSize]` caches.
    static func formerCausal(
        query: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
        visible: Int, heads: Int, headSize: Int, scores: UnsafeMutablePointer<Float>
    ) {
        let width = heads * headSize
        let scale = 1 / Float(headSize).squareRoot()
        for h in 0..<heads {
            let q = query + h * headSize
            for p in 0..<visible { scores[p] = Kernels.dot(q, keys + p * width + h * headSize, count: headSize) * scale }
            Kernels.softmax(scores, count: visible)
            let out = output + h * headSize
            out.initialize(repeating: 0, count: headSize)
            for p in 0..<visible { Kernels.axpy(scores[p], values + p * width + h * headSize, out, count: headSize) }
        }
    }
}

/// Sampling one token from GPT-2's 50,257 logits at temperature 1 (and with top_p 0.9), as
/// every sampling sequence does every step: the library's against the former scalar-`expf`
/// weights, alternating, best of five.
enum SamplingProbe {
    static func run() {
        var random = SeededGenerator(seed: 3)
        let logits = (0..<50_257).map { _ in Float(random.unit() * 20 - 10) }
        for topP in [1.0, 0.9] {
            var parameters = SamplingParameters()
            parameters.topP = topP
            func time(_ draw: (inout SeededGenerator) -> Int) -> Double {
                var generator = SeededGenerator(seed: 1)
                let start = Date()
                var sum = 0
                for _ in 0..<200 { sum &+= draw(&generator) }
                if sum == -1 { print(sum) }
                return Date().timeIntervalSince(start) / 200
            }
            var best = (current: Double.infinity, former: Double.infinity)
            for _ in 0..<5 {
                best.current = min(best.current, time { Sampler.sample(logits, parameters: parameters, using: &$0) })
                best.former = min(best.former, time { former(logits, parameters: parameters, using: &$0) })
            }
            print(String(format: "sample, top_p %.1f: %.1f µs per token (former weights %.1f µs), %.2fx", topP, best.current * 1e6, best.former * 1e6, best.former / best.current))
        }
    }

    /// The sampler as it was (every candidate's weight through scalar expf).
    static func former(_ logits: [Float], parameters: SamplingParameters, using random: inout SeededGenerator) -> Int {
        let inverseTemperature = Float(1 / parameters.temperature)
        var candidates = Array(logits.indices)
        let maximum = candidates.reduce(-Float.infinity) { max($0, logits[$1]) }
        var weights = candidates.map { Double(expf((logits[$0] - maximum) * inverseTemperature)) }
        var total = weights.reduce(0, +)
        if parameters.topP < 1 {
            let floor = (1 - parameters.topP) / Double(candidates.count) * total
            var order = candidates.indices.filter { weights[$0] >= floor }
            order.sort { weights[$0] > weights[$1] }
            var kept: [Int] = []
            var cumulative = 0.0
            for index in order {
                kept.append(index)
                cumulative += weights[index] / total
                if cumulative >= parameters.topP { break }
            }
            candidates = kept.map { candidates[$0] }
            weights = kept.map { weights[$0] }
            total = weights.reduce(0, +)
        }
        var target = random.unit() * total
        for (index, weight) in weights.enumerated() {
            target -= weight
            if target < 0 { return candidates[index] }
        }
        return candidates[candidates.count - 1]
    }
}
