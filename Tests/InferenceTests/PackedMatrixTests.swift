import Foundation
import Testing
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
        let layout = try #require(GGMLQuants.types[type]), format = try #require(PackedMatrix.Format(ggmlType: type))
        // Where each type keeps its float16 scale and minimum.
        let halves = [8: [0], 2: [0], 3: [0, 2], 6: [0], 7: [0, 2], 10: [80, 82], 11: [108], 12: [0, 2], 13: [0, 2], 14: [208]][Int(type)] ?? []
        for shape in Self.quantizedCases {
            let (m, k, n) = (shape.m, shape.k, shape.n)
            let rowBytes = k / layout.elements * layout.bytes
            var blocks = (0..<(n * rowBytes)).map { _ in UInt8.random(in: 0...255, using: &random) }
            for block in 0..<(n * k / layout.elements) {
                for at in halves {
                    let scale = Float16(Float.random(in: 0.001...0.05, using: &random)).bitPattern
                    blocks[block * layout.bytes + at] = UInt8(scale & 0xFF)
                    blocks[block * layout.bytes + at + 1] = UInt8(scale >> 8)
                }
            }
            let dequantized = FloatBuffer(count: n * k)
            let packed = blocks.withUnsafeBytes { bytes in
                GGMLQuants.dequantize(type, bytes.baseAddress!, count: n * k, into: dequantized.pointer)
                return PackedMatrix(ggml: { (type, bytes.baseAddress! + $0 * rowBytes) }, rows: k, columns: n, format: format)
            }
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
                    packed.multiply(x.pointer, m: m, ldx: k, into: y.pointer, ldy: n, bias: bias.pointer, accumulate: accumulate, wide: wide)
                    let differing = (0..<(m * n)).filter { y[$0] != expected[$0] }.count
                    #expect(differing == 0, "\(format) \(shape) wide \(wide) accumulate \(accumulate): \(differing) values differ")
                }
            }
            if m == 1 {
                let whole = FloatBuffer(count: n), alone = FloatBuffer(count: n)
                packed.multiply(x.pointer, m: 1, into: whole.pointer)
                for panel in 0..<((n + 15) / 16) {
                    packed.multiplyPanel(panel, x.pointer, into: alone.pointer)
                    #expect((panel * 16..<min(n, panel * 16 + 16)).allSatisfy { alone[$0] == whole[$0] }, "\(format) \(shape): panel \(panel) alone differs")
                }
            }
        }
    }

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
