import CPrefetch
import Foundation

/// Causal multi-head attention against a key/value cache (with `kvGroup` query heads per
/// key/value head: grouped-query attention).
///
/// Layout: `q` is `[tokens, heads * headSize]`. In the cache, head `h`'s key (and value) for
/// position `p` starts at `h * headStride + p * positionStride`: `[heads, positions, headSize]`
/// (one contiguous run per head, what decoding streams best) or `[positions, heads * headSize]`.
/// Token `t` sits at position `start + t` and attends to positions `0 ... start + t`. Kernels
/// know nothing of models: the caller fills the cache first.
package enum Attention {
    /// `only` limits the work to some heads (callers that share the heads among threads).
    /// Keys and values are float32, or float16 (an `AttentionCache` of half the bytes), widened
    /// as they are read.
    package static func causal<Element: CacheElement>(
        query: UnsafePointer<Float>, queryStride: Int, keys: UnsafePointer<Element>, values: UnsafePointer<Element>,
        positionStride: Int, headStride: Int, output: UnsafeMutablePointer<Float>, tokens: Int, start: Int, heads: Int, headSize: Int,
        scores: UnsafeMutablePointer<Float>, only: Range<Int>? = nil, kvGroup: Int = 1
    ) {
        let width = heads * headSize
        let scale = 1 / Float(headSize).squareRoot()
        // A decoding token reads each head's keys and values once, from memory (the weights
        // have streamed through the caches since they were written). Each head fetches its
        // values while its scores are computed, and the next head's keys while it finishes:
        // the hardware prefetcher only ramps up some way into each new run. A prompt's tokens
        // share their runs, which stay cached, so there this would be wasted instructions.
        let run = (start + 1) * headSize * MemoryLayout<Element>.size
        let runBytes = tokens == 1 && positionStride == headSize && run <= Self.prefetchedRun ? run : 0
        for t in 0..<tokens {
            let visible = start + t + 1
            let range = only ?? 0..<heads
            if let first = range.first { prefetch(keys + first / kvGroup * headStride, bytes: runBytes) }
            for h in range {
                let q = query + t * queryStride + h * headSize
                let kv = h / kvGroup  // grouped-query attention: query heads share a key/value head
                prefetch(values + kv * headStride, bytes: runBytes)
                Self.scores(q, keys: keys + kv * headStride, stride: positionStride, count: visible, headSize: headSize, scale: scale, into: scores)
                if h + 1 < range.upperBound { prefetch(keys + (h + 1) / kvGroup * headStride, bytes: runBytes) }
                Kernels.softmax(scores, count: visible)
                Self.weightedSum(
                    scores, values: values + kv * headStride, stride: positionStride, count: visible, headSize: headSize,
                    into: output + t * width + h * headSize)
            }
        }
    }

    /// The longest run fetched ahead (a context of 256). Past it the hardware prefetcher has
    /// long runs to work on, and on the attention probe fetching ahead did no better there.
    static let prefetchedRun = 64 << 10

    /// Asks for `bytes` from `run` into the cache, a line at a time (nothing for 0).
    @inline(__always)
    static func prefetch<Element>(_ run: UnsafePointer<Element>, bytes: Int) {
        let raw = UnsafeRawPointer(run)
        var offset = 0
        while offset < bytes {
            mg_prefetch(raw + offset)
            offset += 64
        }
    }

    /// Bidirectional attention with a key mask (encoders): every token sees every unmasked
    /// position of its own sequence. `q`, `k`, `v` are `[length, heads * headSize]`.
    package static func bidirectional(
        query: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>, stride: Int,
        output: UnsafeMutablePointer<Float>, length: Int, validLength: Int, heads: Int, headSize: Int,
        scores: UnsafeMutablePointer<Float>
    ) {
        let width = heads * headSize
        let scale = 1 / Float(headSize).squareRoot()
        for t in 0..<length {
            for h in 0..<heads {
                let q = query + t * stride + h * headSize
                Self.scores(q, keys: keys + h * headSize, stride: stride, count: validLength, headSize: headSize, scale: scale, into: scores)
                Kernels.softmax(scores, count: validLength)
                Self.weightedSum(scores, values: values + h * headSize, stride: stride, count: validLength, headSize: headSize, into: output + t * width + h * headSize)
            }
        }
    }

    /// `scores[p] = scale * (q · keys[p * stride ..< p * stride + headSize])` for `p < count`.
    /// Four positions at a time: each of `q`'s vectors is loaded once for four keys, and the four
    /// sums are independent chains (one position's eight dependent FMAs would wait on latency).
    @inline(__always)
    static func scores<Element: CacheElement>(
        _ q: UnsafePointer<Float>, keys: UnsafePointer<Element>, stride: Int, count: Int, headSize: Int, scale: Float,
        into scores: UnsafeMutablePointer<Float>
    ) {
        guard headSize % 8 == 0 else {
            for p in 0..<count { scores[p] = Element.dot(q, keys + p * stride, count: headSize) * scale }
            return
        }
        let rq = UnsafeRawPointer(q)
        var p = 0
        while p + 4 <= count {
            let k0 = keys + p * stride, k1 = keys + (p + 1) * stride, k2 = keys + (p + 2) * stride, k3 = keys + (p + 3) * stride
            var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
            var i = 0
            while i < headSize {
                let qv = rq.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                a0 = a0.addingProduct(qv, Element.load8(k0 + i))
                a1 = a1.addingProduct(qv, Element.load8(k1 + i))
                a2 = a2.addingProduct(qv, Element.load8(k2 + i))
                a3 = a3.addingProduct(qv, Element.load8(k3 + i))
                i += 8
            }
            scores[p] = a0.sum() * scale
            scores[p + 1] = a1.sum() * scale
            scores[p + 2] = a2.sum() * scale
            scores[p + 3] = a3.sum() * scale
            p += 4
        }
        while p < count {
            scores[p] = Element.dot(q, keys + p * stride, count: headSize) * scale
            p += 1
        }
    }

    /// `output[0 ..< headSize] = sum over p < count of weights[p] * values[p * stride ..< + headSize]`.
    /// 32 dimensions at a time, summed in registers over every position (two positions per
    /// round, eight independent chains) and stored once, instead of loading and storing the
    /// output for each position.
    @inline(__always)
    static func weightedSum<Element: CacheElement>(
        _ weights: UnsafePointer<Float>, values: UnsafePointer<Element>, stride: Int, count: Int, headSize: Int,
        into output: UnsafeMutablePointer<Float>
    ) {
        var d = 0
        while d + 32 <= headSize {
            var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
            var b0 = SIMD8<Float>(), b1 = SIMD8<Float>(), b2 = SIMD8<Float>(), b3 = SIMD8<Float>()
            var p = 0
            while p + 2 <= count {
                let v = values + p * stride + d, w = values + (p + 1) * stride + d
                let x = SIMD8<Float>(repeating: weights[p]), y = SIMD8<Float>(repeating: weights[p + 1])
                a0 = a0.addingProduct(x, Element.load8(v))
                a1 = a1.addingProduct(x, Element.load8(v + 8))
                a2 = a2.addingProduct(x, Element.load8(v + 16))
                a3 = a3.addingProduct(x, Element.load8(v + 24))
                b0 = b0.addingProduct(y, Element.load8(w))
                b1 = b1.addingProduct(y, Element.load8(w + 8))
                b2 = b2.addingProduct(y, Element.load8(w + 16))
                b3 = b3.addingProduct(y, Element.load8(w + 24))
                p += 2
            }
            if p < count {
                let v = values + p * stride + d
                let x = SIMD8<Float>(repeating: weights[p])
                a0 = a0.addingProduct(x, Element.load8(v))
                a1 = a1.addingProduct(x, Element.load8(v + 8))
                a2 = a2.addingProduct(x, Element.load8(v + 16))
                a3 = a3.addingProduct(x, Element.load8(v + 24))
            }
            let out = UnsafeMutableRawPointer(output + d)
            out.storeBytes(of: a0 + b0, toByteOffset: 0, as: SIMD8<Float>.self)
            out.storeBytes(of: a1 + b1, toByteOffset: 32, as: SIMD8<Float>.self)
            out.storeBytes(of: a2 + b2, toByteOffset: 64, as: SIMD8<Float>.self)
            out.storeBytes(of: a3 + b3, toByteOffset: 96, as: SIMD8<Float>.self)
            d += 32
        }
        guard d < headSize else { return }
        let rest = output + d
        rest.initialize(repeating: 0, count: headSize - d)
        for p in 0..<count { Element.axpy(weights[p], values + p * stride + d, rest, count: headSize - d) }
    }
}

/// What a key/value cache holds: float32, or float16 (half the memory; widened exactly to
/// float32 as read, so only the rounding when stored differs).
package protocol CacheElement {
    /// Eight elements from `source` as floats.
    static func load8(_ source: UnsafePointer<Self>) -> SIMD8<Float>
    /// `x · source[0 ..< count]`.
    static func dot(_ x: UnsafePointer<Float>, _ source: UnsafePointer<Self>, count: Int) -> Float
    /// `y += a * source[0 ..< count]`.
    static func axpy(_ a: Float, _ source: UnsafePointer<Self>, _ y: UnsafeMutablePointer<Float>, count: Int)
    /// Stores `count` floats, rounded to this type.
    static func store(_ source: UnsafePointer<Float>, into target: UnsafeMutablePointer<Self>, count: Int)
}

extension Float: CacheElement {
    @inline(__always)
    package static func load8(_ source: UnsafePointer<Float>) -> SIMD8<Float> {
        UnsafeRawPointer(source).loadUnaligned(as: SIMD8<Float>.self)
    }
    @inline(__always)
    package static func dot(_ x: UnsafePointer<Float>, _ source: UnsafePointer<Float>, count: Int) -> Float { Kernels.dot(x, source, count: count) }
    @inline(__always)
    package static func axpy(_ a: Float, _ source: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
        Kernels.axpy(a, source, y, count: count)
    }
    @inline(__always)
    package static func store(_ source: UnsafePointer<Float>, into target: UnsafeMutablePointer<Float>, count: Int) {
        target.update(from: source, count: count)
    }
}

extension Float16: CacheElement {
    /// One F16C instruction (the module is built for Haswell).
    @inline(__always)
    package static func load8(_ source: UnsafePointer<Float16>) -> SIMD8<Float> {
        SIMD8<Float>(UnsafeRawPointer(source).loadUnaligned(as: SIMD8<Float16>.self))
    }
    package static func dot(_ x: UnsafePointer<Float>, _ source: UnsafePointer<Float16>, count: Int) -> Float {
        var sum: Float = 0
        for i in 0..<count { sum += x[i] * Float(source[i]) }
        return sum
    }
    package static func axpy(_ a: Float, _ source: UnsafePointer<Float16>, _ y: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { y[i] += a * Float(source[i]) }
    }
    /// Rounded to nearest, ties to even (F16C's `vcvtps2ph` under the default rounding mode).
    package static func store(_ source: UnsafePointer<Float>, into target: UnsafeMutablePointer<Float16>, count: Int) {
        var i = 0
        while i + 8 <= count {
            UnsafeMutableRawPointer(target + i).storeBytes(
                of: SIMD8<Float16>(UnsafeRawPointer(source + i).loadUnaligned(as: SIMD8<Float>.self)), as: SIMD8<Float16>.self)
            i += 8
        }
        while i < count {
            target[i] = Float16(source[i])
            i += 1
        }
    }
}
