import Foundation

/// Row-wise and elementwise kernels. Loops over raw pointers so the compiler vectorises them.
package enum Kernels {
    /// Layer normalisation of each of `rows` rows of width `width`, in place or into `output`:
    /// mean, then the mean square deviation (two passes, as accurate as the definition), eight
    /// lanes at a time (a float sum in one chain is not something the compiler may reorder).
    package static func layerNorm(
        _ input: UnsafePointer<Float>, _ output: UnsafeMutablePointer<Float>, rows: Int, width: Int,
        weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, epsilon: Float
    ) {
        let vectorWidth = width & ~7
        let (rw, rb) = (UnsafeRawPointer(weight), UnsafeRawPointer(bias))
        for row in 0..<rows {
            let x = input + row * width
            let y = output + row * width
            let (rx, ry) = (UnsafeRawPointer(x), UnsafeMutableRawPointer(y))
            var sums = SIMD8<Float>()
            var i = 0
            while i < vectorWidth {
                sums += rx.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                i += 8
            }
            var sum = sums.sum()
            for j in vectorWidth..<width { sum += x[j] }
            let mean = sum / Float(width)
            let means = SIMD8<Float>(repeating: mean)
            var squares = SIMD8<Float>()
            i = 0
            while i < vectorWidth {
                let d = rx.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) - means
                squares = squares.addingProduct(d, d)
                i += 8
            }
            var square = squares.sum()
            for j in vectorWidth..<width { square += (x[j] - mean) * (x[j] - mean) }
            let scale = 1 / (square / Float(width) + epsilon).squareRoot()
            let scales = SIMD8<Float>(repeating: scale)
            i = 0
            while i < vectorWidth {
                let d = rx.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) - means
                let value = rb.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                    .addingProduct(d * scales, rw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self))
                ry.storeBytes(of: value, toByteOffset: i * 4, as: SIMD8<Float>.self)
                i += 8
            }
            for j in vectorWidth..<width { y[j] = (x[j] - mean) * scale * weight[j] + bias[j] }
        }
    }

    /// GELU, tanh approximation (GPT-2's `gelu_new`), eight lanes at a time; a prompt's (more
    /// than 64K values) shared among the compute threads.
    package static func geluTanh(_ values: UnsafeMutablePointer<Float>, count: Int) {
        let chunk = 1 << 15
        guard count >= 2 * chunk, ComputeThreads.cores > 1 else { return geluTanhSerial(values, count: count) }
        nonisolated(unsafe) let values = values
        ComputeThreads.run(threads: ComputeThreads.cores, chunks: (count + chunk - 1) / chunk) { index in
            geluTanhSerial(values + index * chunk, count: min(chunk, count - index * chunk))
        }
    }

    static func geluTanhSerial(_ values: UnsafeMutablePointer<Float>, count: Int) {
        let c = SIMD8<Float>(repeating: 0.797_884_560_802_865_4)  // sqrt(2/pi)
        let a = SIMD8<Float>(repeating: 0.044715)
        let half = SIMD8<Float>(repeating: 0.5)
        let one = SIMD8<Float>(repeating: 1)
        let raw = UnsafeMutableRawPointer(values)
        var i = 0
        while i + 8 <= count {
            let x = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            let u = c * (x + a * x * x * x)
            raw.storeBytes(of: half * x * (one + Vector.tanh(u)), toByteOffset: i * 4, as: SIMD8<Float>.self)
            i += 8
        }
        while i < count {
            let x = values[i]
            values[i] = 0.5 * x * (1 + tanhf(0.797_884_560_802_865_4 * (x + 0.044715 * x * x * x)))
            i += 1
        }
    }

    /// GELU, exact erf form (BERT's `gelu`).
    package static func geluErf(_ values: UnsafeMutablePointer<Float>, count: Int) {
        let inverseSqrt2: Float = 0.707_106_781_186_547_5
        for i in 0..<count {
            let x = values[i]
            values[i] = 0.5 * x * (1 + erff(x * inverseSqrt2))
        }
    }

    /// `values[row] += bias` for each row.
    /// SwiGLU: `y[r, i] = silu(g[r, i]) · u[r, i]` where each row of `gateUp` is `[g | u]`
    /// (`width` each) and `silu(x) = x · sigmoid(x)`.
    package static func swiGLU(_ gateUp: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        for row in 0..<rows {
            let gate = gateUp + row * 2 * width, up = gate + width, out = y + row * width
            for i in 0..<width { out[i] = gate[i] / (1 + Foundation.exp(-gate[i])) * up[i] }
        }
    }

    package static func addBias(_ values: UnsafeMutablePointer<Float>, _ bias: UnsafePointer<Float>, rows: Int, width: Int) {
        for row in 0..<rows {
            let y = values + row * width
            for i in 0..<width { y[i] += bias[i] }
        }
    }

    /// Copies `count` floats; inline vector moves, for the short runs a call to memmove costs
    /// more than it moves.
    @inline(__always)
    static func copy(_ destination: UnsafeMutablePointer<Float>, _ source: UnsafePointer<Float>, count: Int) {
        let to = UnsafeMutableRawPointer(destination)
        let from = UnsafeRawPointer(source)
        var i = 0
        while i + 8 <= count {
            to.storeBytes(of: from.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self), toByteOffset: i * 4, as: SIMD8<Float>.self)
            i += 8
        }
        while i < count {
            destination[i] = source[i]
            i += 1
        }
    }

    /// Sets `count` floats to `value`.
    @inline(__always)
    static func fill(_ destination: UnsafeMutablePointer<Float>, _ value: Float, count: Int) {
        let to = UnsafeMutableRawPointer(destination)
        let vector = SIMD8<Float>(repeating: value)
        var i = 0
        while i + 8 <= count {
            to.storeBytes(of: vector, toByteOffset: i * 4, as: SIMD8<Float>.self)
            i += 8
        }
        while i < count {
            destination[i] = value
            i += 1
        }
    }

    /// `a += b`, elementwise.
    package static func add(_ a: UnsafeMutablePointer<Float>, _ b: UnsafePointer<Float>, count: Int) {
        for i in 0..<count { a[i] += b[i] }
    }

    /// Softmax of `count` values in place, numerically stable; eight at a time through
    /// `Vector.exp` (attention takes one per token and head: scalar `expf` was about 4% of a
    /// prompt's time).
    package static func softmax(_ values: UnsafeMutablePointer<Float>, count: Int) {
        let raw = UnsafeMutableRawPointer(values)
        let maximum = Self.maximum(values, count: count)
        let shift = SIMD8<Float>(repeating: maximum)
        var sums = SIMD8<Float>()
        var i = 0
        while i + 8 <= count {
            let e = Vector.exp(raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) - shift)
            raw.storeBytes(of: e, toByteOffset: i * 4, as: SIMD8<Float>.self)
            sums += e
            i += 8
        }
        var sum = sums.sum()
        while i < count {
            let e = expf(values[i] - maximum)
            values[i] = e
            sum += e
            i += 1
        }
        let inverse = 1 / sum
        for i in 0..<count { values[i] *= inverse }
    }

    /// The largest of `count` values (-infinity for none), eight lanes at a time.
    static func maximum(_ values: UnsafePointer<Float>, count: Int) -> Float {
        let raw = UnsafeRawPointer(values)
        var maxima = SIMD8<Float>(repeating: -.infinity)
        var i = 0
        while i + 8 <= count {
            let v = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            maxima = maxima.replacing(with: v, where: v .> maxima)
            i += 8
        }
        var maximum = maxima.max()
        while i < count {
            maximum = max(maximum, values[i])
            i += 1
        }
        return maximum
    }

    /// Dot product of two vectors.
    @inline(__always)
    package static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
        var s0 = SIMD8<Float>(), s1 = SIMD8<Float>()
        var i = 0
        while i + 16 <= count {
            s0 = s0.addingProduct(ra.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self), rb.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self))
            s1 = s1.addingProduct(ra.loadUnaligned(fromByteOffset: i * 4 + 32, as: SIMD8<Float>.self), rb.loadUnaligned(fromByteOffset: i * 4 + 32, as: SIMD8<Float>.self))
            i += 16
        }
        var sum = (s0 + s1).sum()
        while i < count {
            sum += a[i] * b[i]
            i += 1
        }
        return sum
    }

    /// `y += alpha * x`.
    @inline(__always)
    package static func axpy(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
        let rx = UnsafeRawPointer(x), ry = UnsafeMutableRawPointer(y)
        let scale = SIMD8<Float>(repeating: alpha)
        var i = 0
        while i + 8 <= count {
            let value = ry.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self).addingProduct(scale, rx.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self))
            ry.storeBytes(of: value, toByteOffset: i * 4, as: SIMD8<Float>.self)
            i += 8
        }
        while i < count {
            y[i] += alpha * x[i]
            i += 1
        }
    }

    /// Log-softmax of `count` logits into `output`.
    package static func logSoftmax(_ logits: UnsafePointer<Float>, _ output: UnsafeMutablePointer<Float>, count: Int) {
        let maximum = Self.maximum(logits, count: count)
        var sum: Float = 0
        for i in 0..<count { sum += expf(logits[i] - maximum) }
        let logSum = logf(sum) + maximum
        for i in 0..<count { output[i] = logits[i] - logSum }
    }
}

/// Vectorised transcendental functions (about 1 ulp of float over the ranges used).
public enum Vector {
    /// `x` limited to `[low, high]` lane by lane: two compares and blends (the standard
    /// library's `clamped` goes through an out-of-line generic `pointwiseMin`/`pointwiseMax`).
    @inline(__always)
    static func clamp(_ x: SIMD8<Float>, _ low: Float, _ high: Float) -> SIMD8<Float> {
        let lower = SIMD8<Float>(repeating: low), upper = SIMD8<Float>(repeating: high)
        return x.replacing(with: lower, where: x .< lower).replacing(with: upper, where: x .> upper)
    }

    /// e^x, by range reduction to [-ln2/2, ln2/2] and a degree-6 polynomial.
    @inline(__always)
    package static func exp(_ x: SIMD8<Float>) -> SIMD8<Float> {
        let clamped = clamp(x, -87.3, 88.3)
        let n = (clamped * 1.442_695_040_888_963_4).rounded(.toNearestOrEven)
        // r = x - n ln2, in two parts for accuracy.
        let high: SIMD8<Float> = n * 0.693_145_751_953_125
        let low: SIMD8<Float> = n * 1.428_606_765_330_187_045e-06
        let r = clamped - high - low
        var p = SIMD8<Float>(repeating: 1.987_569_150_0e-4)
        p = p * r + SIMD8(repeating: 1.398_199_950_7e-3)
        p = p * r + SIMD8(repeating: 8.333_451_907_3e-3)
        p = p * r + SIMD8(repeating: 4.166_579_589_4e-2)
        p = p * r + SIMD8(repeating: 1.666_666_545_9e-1)
        p = p * r + SIMD8(repeating: 5.000_000_120_1e-1)
        let r2: SIMD8<Float> = r * r
        p = p * r2 + r + SIMD8(repeating: 1)
        // n is integral and small: adding 1.5·2²³ puts it in the mantissa's low bits.
        let shifted = unsafeBitCast(n + SIMD8(repeating: 12_582_912), to: SIMD8<Int32>.self)
        let integer = shifted &- SIMD8(repeating: 0x4B40_0000) &+ SIMD8(repeating: 127)
        let scale = unsafeBitCast(integer &<< 23, to: SIMD8<Float>.self)
        return p * scale
    }

    /// tanh(x) = sign(x) (1 - 2 / (e^{2|x|} + 1)); through an odd polynomial near 0, where that
    /// formula would lose precision to cancellation.
    @inline(__always)
    package static func tanh(_ x: SIMD8<Float>) -> SIMD8<Float> {
        let magnitude = x.replacing(with: -x, where: x .< 0)
        let doubled: SIMD8<Float> = 2 * clamp(magnitude, 0, 20)
        let e = exp(doubled)
        let large: SIMD8<Float> = 1 - 2 / (e + 1)
        let signed = large.replacing(with: -large, where: x .< 0)
        // tanh x = x - x³/3 + 2x⁵/15 - 17x⁷/315 + 62x⁹/2835 - ... for small |x|.
        let x2 = x * x
        var series = SIMD8<Float>(repeating: 62.0 / 2835)
        series = series * x2 + SIMD8(repeating: -17.0 / 315)
        series = series * x2 + SIMD8(repeating: 2.0 / 15)
        series = series * x2 + SIMD8(repeating: -1.0 / 3)
        series = series * x2 + SIMD8(repeating: 1)
        return signed.replacing(with: x * series, where: magnitude .< 0.25)
    }
}
