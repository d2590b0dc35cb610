import Foundation
import Testing

@testable import Inference

/// Layer norm and GELU against their definitions: widths on and off the eight-wide rounds, and
/// a GELU large enough to be shared among the compute threads.
@Suite struct ElementwiseTests {
    @Test func layerNormMatchesTheDefinition() {
        var random = SystemRandomNumberGenerator()
        for width in Array(1...20) + [64, 384, 765, 768] {
            let rows = 3
            let x = (0..<(rows * width)).map { _ in Float.random(in: -4...6, using: &random) }
            let weight = (0..<width).map { _ in Float.random(in: 0.5...1.5, using: &random) }
            let bias = (0..<width).map { _ in Float.random(in: -1...1, using: &random) }
            var y = [Float](repeating: .nan, count: rows * width)
            x.withUnsafeBufferPointer { x in
                y.withUnsafeMutableBufferPointer { y in
                    Kernels.layerNorm(x.baseAddress!, y.baseAddress!, rows: rows, width: width, weight: weight, bias: bias, epsilon: 1e-5)
                }
            }
            var worst = 0.0
            for row in 0..<rows {
                let values = x[(row * width)..<((row + 1) * width)].map(Double.init)
                let mean = values.reduce(0, +) / Double(width)
                let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(width)
                for (i, value) in values.enumerated() {
                    let expected = (value - mean) / (variance + 1e-5).squareRoot() * Double(weight[i]) + Double(bias[i])
                    worst = max(worst, abs(Double(y[row * width + i]) - expected))
                }
            }
            #expect(worst < 1e-4, "width \(width): off by \(worst)")
        }
    }

    @Test func geluMatchesTheDefinitionSharedOrNot() {
        var random = SystemRandomNumberGenerator()
        for count in [7, 1000, 200_003] {
            let x = (0..<count).map { _ in Float.random(in: -8...8, using: &random) }
            var y = x
            y.withUnsafeMutableBufferPointer { Kernels.geluTanh($0.baseAddress!, count: count) }
            var worst = 0.0
            for (value, result) in zip(x, y) {
                let v = Double(value)
                let expected = 0.5 * v * (1 + tanh(0.797_884_560_802_865_4 * (v + 0.044715 * v * v * v)))
                worst = max(worst, abs(Double(result) - expected))
            }
            #expect(worst < 1e-5, "count \(count): off by \(worst)")
        }
    }
}
