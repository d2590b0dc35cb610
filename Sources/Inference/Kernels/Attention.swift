import Foundation

/// Causal multi-head attention against a key/value cache.
///
/// Layout: `q` is `[tokens, heads * headSize]`; the cache holds `[positions, heads * headSize]`
/// for keys and values. Token `t` sits at position `start + t` and attends to positions
/// `0 ... start + t`. Kernels know nothing of models: the caller fills the cache first.
public enum Attention {
    /// `only` limits the work to some heads (callers that share the heads among threads).
    public static func causal(
        query: UnsafePointer<Float>, queryStride: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
        output: UnsafeMutablePointer<Float>, tokens: Int, start: Int, heads: Int, headSize: Int,
        scores: UnsafeMutablePointer<Float>, only: Range<Int>? = nil
    ) {
        let width = heads * headSize
        let scale = 1 / Float(headSize).squareRoot()
        for t in 0..<tokens {
            let visible = start + t + 1
            for h in only ?? 0..<heads {
                let q = query + t * queryStride + h * headSize
                for p in 0..<visible {
                    scores[p] = Kernels.dot(q, keys + p * width + h * headSize, count: headSize) * scale
                }
                Kernels.softmax(scores, count: visible)
                let out = output + t * width + h * headSize
                out.initialize(repeating: 0, count: headSize)
                for p in 0..<visible {
                    Kernels.axpy(scores[p], values + p * width + h * headSize, out, count: headSize)
                }
            }
        }
    }

    /// Bidirectional attention with a key mask (encoders): every token sees every unmasked
    /// position of its own sequence. `q`, `k`, `v` are `[length, heads * headSize]`.
    public static func bidirectional(
        query: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>, stride: Int,
        output: UnsafeMutablePointer<Float>, length: Int, validLength: Int, heads: Int, headSize: Int,
        scores: UnsafeMutablePointer<Float>
    ) {
        let width = heads * headSize
        let scale = 1 / Float(headSize).squareRoot()
        for t in 0..<length {
            for h in 0..<heads {
                let q = query + t * stride + h * headSize
                for p in 0..<validLength {
                    scores[p] = Kernels.dot(q, keys + p * stride + h * headSize, count: headSize) * scale
                }
                Kernels.softmax(scores, count: validLength)
                let out = output + t * width + h * headSize
                out.initialize(repeating: 0, count: headSize)
                for p in 0..<validLength {
                    Kernels.axpy(scores[p], values + p * stride + h * headSize, out, count: headSize)
                }
            }
        }
    }
}
