import Foundation
import Testing
import CKernels
import TestSupport

@testable import Inference

/// Packed products against the definition: row counts that exercise every row block and its padding (1 to 40), tall products cut
/// into row tiles, long ones cut into k-slices, products shared among threads, decoding batches that prefetch, column tails, bias and accumulation, both formats.
@Suite struct PackedMatrixTests {
    struct Case: CustomStringConvertible, Sendable {
        var m, k, n: Int
        var description: String { "\(m)x\(k) · \(k)x\(n)" }
    }

    static let cases = (1...40).map { Case(m: $0, k: 37, n: 45) } + [
        Case(m: 16, k: 768, n: 64), Case(m: 200, k: 70, n: 33), Case(m: 20, k: 2100, n: 17), Case(m: 3, k: 2100, n: 48),
        Case(m: 8, k: 512, n: 300),  // shared among the compute threads
        Case(m: 16, k: 768, n: 350),  // weights past 1 MiB: the later row blocks prefetch
    ]

    @Test func productsMatchTheDefinition() {
        var random = SeededGenerator(seed: 11)
        func values(_ count: Int) -> [Float] { (0..<count).map { _ in Float.random(in: -1...1, using: &random) } }
        func rounded(_ values: [Float]) -> [Float] { values.map { Float(bitPattern: UInt32(PackedMatrix.bfloat16($0)) << 16) } }
        // bf16 products both on the CPU's bfloat16 instructions (where it has them, from
        // `nativeRows` rows) and in float32 arithmetic.
        for (format, native) in [(PackedMatrix.Format.f32, false), (.bf16, true), (.bf16, false)] {
            for shape in Self.cases {
                let (m, k, n) = (shape.m, shape.k, shape.n)
                let w = values(k * n), x = values(m * k), bias = values(n), initial = values(m * n)
                // bf16 weights are compared with the rounded values they store, and the native
                // instructions' X with its rounded values too.
                let stored = format == .f32 ? w : rounded(w)
                let packed = PackedMatrix(FloatBuffer(w), rows: k, columns: n, format: format)
                let used = native && packed.usesNativeBF16(m: m) ? rounded(x) : x
                for accumulate in [false, true] {
                    let y = FloatBuffer(initial)
                    let xs = FloatBuffer(x), b = FloatBuffer(bias)
                    packed.multiply(xs.pointer, m: m, ldx: k, into: y.pointer, ldy: n, bias: b.pointer, accumulate: accumulate, native: native)
                    var worst: Float = 0
                    for r in 0..<m {
                        for c in 0..<n {
                            var sum = Double(bias[c]) + (accumulate ? Double(initial[r * n + c]) : 0)
                            for i in 0..<k { sum += Double(used[r * k + i]) * Double(stored[i * n + c]) }
                            worst = max(worst, abs(y[r * n + c] - Float(sum)))
                        }
                    }
                    #expect(worst < 2e-3, "\(format) native \(native) \(shape) accumulate \(accumulate): largest difference \(worst)")
                    // One panel alone (the bounded head's candidates) equals its columns of the
                    // whole one-row product.
                    if m == 1 && !accumulate {
                        let whole = FloatBuffer(count: n), alone = FloatBuffer(count: n)
                        packed.multiply(xs.pointer, m: 1, into: whole.pointer)
                        for panel in 0..<((n + 15) / 16) {
                            packed.multiplyPanel(panel, xs.pointer, into: alone.pointer)
                            let columns = panel * 16..<min(n, panel * 16 + 16)
                            #expect(columns.allSatisfy { alone[$0] == whole[$0] }, "\(format) \(shape): panel \(panel) alone differs")
                        }
                    }
                    // The AVX-512 kernel (f32, and bf16 widened to f32): every row's sum is one
                    // chain in K order, as the Swift blocks compute theirs, so they agree bit for bit.
                    if packed.usesWide(m: m, native: native) {
                        let swift = FloatBuffer(initial)
                        packed.multiply(
                            xs.pointer, m: m, ldx: k, into: swift.pointer, ldy: n, bias: b.pointer, accumulate: accumulate, native: native, wide: false)
                        for r in 0..<m {
                            #expect((0..<n).allSatisfy { y[r * n + $0] == swift[r * n + $0] }, "\(format) \(shape) accumulate \(accumulate): row \(r) differs")
                        }
                    }
                }
            }
        }
    }

    static let quantizedCases = (1...8).map { Case(m: $0, k: 256, n: 45) } + [
        Case(m: 16, k: 512, n: 64), Case(m: 130, k: 256, n: 40), Case(m: 20, k: 2304, n: 17), Case(m: 3, k: 2304, n: 48),
        Case(m: 8, k: 512, n: 300),
    ]

    /// Quantized matrices packed from ggml blocks of every type (random bytes, finite float16
    /// scales): each weight is the float gguf-py's dequantize gives (GGMLQuants, checked against
    /// gguf-py by the GGUF tests), and every product the very floats of the float32 product of
    /// the dequantized matrix (each weight multiplied out, then the same chains of multiply-adds),
    /// on the AVX-512 kernel and the Swift blocks alike.
    @Test(arguments: [UInt32(8), 2, 3, 6, 7, 10, 11, 12, 13, 14])
    func quantizedProductsAreTheDequantizedMatrixProducts(type: UInt32) throws {
        var random = SeededGenerator(seed: 12 + UInt64(type))
        func values(_ count: Int) -> [Float] { (0..<count).map { _ in Float.random(in: -1...1, using: &random) } }
        let format = try #require(PackedMatrix.Format(ggmlType: type))
        for shape in Self.quantizedCases {
            let (m, k, n) = (shape.m, shape.k, shape.n)
            let (blocks, _, packed) = try Self.randomBlocks(type, k: k, n: n, &random)
            let dequantized = FloatBuffer(count: n * k)
            blocks.withUnsafeBytes { GGMLQuants.dequantize(type, $0.baseAddress!, count: n * k, into: dequantized.pointer) }
            #expect(packed.format == format && packed.byteCount == (n + 15) / 16 * 16 * k * format.rowBytes / 16)
            let differingWeights = (0..<(n * k)).filter { packed.element(row: $0 % k, column: $0 / k).bitPattern != dequantized[$0].bitPattern }.count
            #expect(differingWeights == 0, "\(format) \(shape): \(differingWeights) weights differ from the dequantized ones")
            let x = FloatBuffer(values(m * k)), bias = FloatBuffer(values(n)), initial = values(m * n)
            let reference = PackedMatrix(dequantized, rows: k, columns: n, transposed: true)
            for accumulate in [false, true] {
                let expected = FloatBuffer(initial)
                reference.multiply(x.pointer, m: m, ldx: k, into: expected.pointer, ldy: n, bias: bias.pointer, accumulate: accumulate)
                for wide in [true, false] {
                    let y = FloatBuffer(initial)
                    packed.multiply(x.pointer, m: m, ldx: k, into: y.pointer, ldy: n, bias: bias.pointer, accumulate: accumulate, native: false, wide: wide)
                    let differing = (0..<(m * n)).filter { y[$0] != expected[$0] }.count
                    #expect(differing == 0, "\(format) \(shape) wide \(wide) accumulate \(accumulate): \(differing) values differ")
                }
            }
            if m == 1 {
                let whole = FloatBuffer(count: n), alone = FloatBuffer(count: n)
                packed.multiply(x.pointer, m: 1, ldx: k, into: whole.pointer, ldy: n, native: false)
                for panel in 0..<((n + 15) / 16) {
                    packed.multiplyPanel(panel, x.pointer, into: alone.pointer)
                    #expect((panel * 16..<min(n, panel * 16 + 16)).allSatisfy { alone[$0] == whole[$0] }, "\(format) \(shape): panel \(panel) alone differs")
                }
            }
        }
    }

    /// Random ggml blocks of `type` for an `n` x `k` matrix (finite float16 scales), and the
    /// matrix packed from them.
    static func randomBlocks(_ type: UInt32, k: Int, n: Int, _ random: inout SeededGenerator) throws -> (blocks: [UInt8], rowBytes: Int, packed: PackedMatrix) {
        let layout = try #require(GGMLQuants.types[type]), format = try #require(PackedMatrix.Format(ggmlType: type))
        // Where each type keeps its float16 scale and minimum.
        let halves = [8: [0], 2: [0], 3: [0, 2], 6: [0], 7: [0, 2], 10: [80, 82], 11: [108], 12: [0, 2], 13: [0, 2], 14: [208]][Int(type)] ?? []
        let rowBytes = k / layout.elements * layout.bytes
        var blocks = (0..<(n * rowBytes)).map { _ in UInt8.random(in: 0...255, using: &random) }
        for block in 0..<(n * k / layout.elements) {
            for at in halves {
                let scale = Float16(Float.random(in: 0.001...0.05, using: &random)).bitPattern
                blocks[block * layout.bytes + at] = UInt8(scale & 0xFF)
                blocks[block * layout.bytes + at + 1] = UInt8(scale >> 8)
            }
        }
        let packed = blocks.withUnsafeBytes { bytes in
            PackedMatrix(ggml: { (type, bytes.baseAddress! + $0 * rowBytes) }, rows: k, columns: n, format: format)
        }
        return (blocks, rowBytes, packed)
    }

    /// The integer products' definition, written out: X's rows quantized per block of 32 (d the
    /// largest magnitude / 127, levels rounded to nearest even), then per column and group (in
    /// K order) acc = fma(integer sum of level x X level, scale x d, acc), plus
    /// fma(offset, d x X's group sum, acc) where there is an offset; bias, then y.
    static func integerProduct(
        _ type: UInt32, _ blocks: [UInt8], rowBytes: Int, k: Int, n: Int, x: [Float], m: Int, bias: [Float], initial: [Float], accumulate: Bool
    ) throws -> [Float] {
        let layout = try #require(GGMLQuants.types[type])
        var levels = [Int](repeating: 0, count: m * k), d = [Float](repeating: 0, count: m * k / 32)
        for r in 0..<m {
            for b in 0..<(k / 32) {
                let block = x[(r * k + 32 * b)..<(r * k + 32 * b + 32)]
                let scale = block.reduce(Float(0)) { max($0, abs($1)) } / 127
                let inverse: Float = scale != 0 && scale.isFinite ? 1 / scale : 0
                d[r * k / 32 + b] = scale
                for (i, value) in block.enumerated() { levels[r * k + 32 * b + i] = max(-127, min(127, Int(exactly: (value * inverse).rounded(.toNearestOrEven)) ?? 0)) }
            }
        }
        var y = initial
        blocks.withUnsafeBytes { bytes in
            for c in 0..<n {
                var acc = [Float](repeating: 0, count: m)
                for block in 0..<(k / layout.elements) {
                    GGMLQuants.groups(type, bytes.baseAddress! + c * rowBytes + block * layout.bytes) { index, size, scale, offset, level in
                        let first = block * layout.elements + index * size
                        for r in 0..<m {
                            let xs = (0..<size).map { levels[r * k + first + $0] }
                            let sum = (0..<size).reduce(0) { $0 + level($1) * xs[$1] }
                            let dr = d[r * k / 32 + first / 32]
                            acc[r] = acc[r].addingProduct(Float(sum), scale * dr)
                            if let offset { acc[r] = acc[r].addingProduct(offset, dr * Float(xs.reduce(0, +))) }
                        }
                    }
                }
                for r in 0..<m {
                    var value = acc[r] + bias[c]
                    if accumulate { value += initial[r * n + c] }
                    y[r * n + c] = value
                }
            }
        }
        return y
    }

    /// The integer kernels (llama.cpp's way: X quantized to 8 bits per block of 32) against
    /// their definition, written out above, bit for bit, for every format they take: AVX2 on
    /// every x86 CPU, AVX-512 VNNI where the CPU has it (its own test, skipped elsewhere).
    func checkIntegerProducts(type: UInt32, vnni: Bool) throws {
        var random = SeededGenerator(seed: 40 + UInt64(type))
        func values(_ count: Int) -> [Float] { (0..<count).map { _ in Float.random(in: -1...1, using: &random) } }
        for shape in Self.quantizedCases {
            let (m, k, n) = (shape.m, shape.k, shape.n)
            let (blocks, rowBytes, packed) = try Self.randomBlocks(type, k: k, n: n, &random)
            #expect(packed.usesInteger)
            var x = values(m * k)
            // A block of zeros (d 0) and one of a single value.
            for i in 0..<32 { x[i] = 0 }
            if k >= 64 { for i in 33..<64 { x[i] = 0 } }
            let (bias, initial) = (values(n), values(m * n))
            for accumulate in [false, true] {
                let expected = try Self.integerProduct(type, blocks, rowBytes: rowBytes, k: k, n: n, x: x, m: m, bias: bias, initial: initial, accumulate: accumulate)
                let y = FloatBuffer(initial), xs = FloatBuffer(x), b = FloatBuffer(bias)
                packed.multiplyInteger(xs.pointer, m: m, ldx: k, into: y.pointer, ldy: n, bias: b.pointer, accumulate: accumulate, vnni: vnni)
                let differing = (0..<(m * n)).filter { y[$0] != expected[$0] }.count
                #expect(differing == 0, "\(packed.format) \(shape) vnni \(vnni) accumulate \(accumulate): \(differing) of \(m * n) values differ")
            }
        }
        // Not finite X: a block with NaN or infinity makes its rows' products NaN.
        let (_, _, packed) = try Self.randomBlocks(type, k: 256, n: 20, &random)
        var x = values(3 * 256)
        x[5] = .nan
        x[256 + 40] = .infinity
        let y = FloatBuffer(count: 3 * 20), xs = FloatBuffer(x)
        packed.multiplyInteger(xs.pointer, m: 3, ldx: 256, into: y.pointer, ldy: 20, bias: nil, accumulate: false, vnni: vnni)
        #expect((0..<40).allSatisfy { y[$0].isNaN } && (40..<60).allSatisfy { y[$0].isFinite }, "\(packed.format): NaN and infinity")
    }

    static let integerTypes: [UInt32] = [8, 2, 3, 6, 7, 10, 11, 12, 13, 14]

    @Test(arguments: integerTypes)
    func integerProductsAreTheirDefinitionOnAVX2(type: UInt32) throws { try checkIntegerProducts(type: type, vnni: false) }

    @Test(.enabled(if: mg_int8_available() != 0, "AVX-512 VNNI integer products: this CPU lacks AVX-512 VNNI"), arguments: integerTypes)
    func integerProductsAreTheirDefinitionOnVNNI(type: UInt32) throws { try checkIntegerProducts(type: type, vnni: true) }

    /// Quantizing at load (weight_format q8_0 and q4_0): each weight within a step (Q8_0: half
    /// a step) of its value, plus the scale's float16 rounding; a K that is not whole blocks
    /// stays float32.
    @Test func quantizingAtLoadStaysWithinAStep() {
        var random = SeededGenerator(seed: 13)
        func values(_ count: Int) -> [Float] { (0..<count).map { _ in Float.random(in: -1...1, using: &random) } }
        let (k, n) = (96, 40)
        let w = values(k * n)
        for (format, levels, bound) in [(PackedMatrix.Format.q8_0, Float(127), Float(0.57)), (.q4_0, 8, 1.01)] {
            let packed = PackedMatrix(FloatBuffer(w), rows: k, columns: n, format: format)
            #expect(packed.format == format)
            var worst: Float = 0
            for i in 0..<k {
                for c in 0..<n {
                    let step = (i / 32 * 32..<i / 32 * 32 + 32).map { abs(w[$0 * n + c]) }.max()! / levels
                    worst = max(worst, abs(packed.element(row: i, column: c) - w[i * n + c]) / step)
                }
            }
            #expect(worst <= bound, "\(format): a weight is \(worst) steps from its value")
            #expect(PackedMatrix(FloatBuffer(values(37 * 5)), rows: 37, columns: 5, format: format).format == .f32)
        }
    }
}
