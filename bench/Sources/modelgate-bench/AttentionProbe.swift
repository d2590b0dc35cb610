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
