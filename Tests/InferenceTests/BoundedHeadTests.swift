import Foundation
import Testing
import CKernels
import TestSupport

@testable import Inference

/// The greedy head's int8 copy: its product against the byte-at-a-time definition, and its
/// argmax against the full product's on rows built to defeat a loose bound (near ties the int8
/// copy cannot tell apart, exact ties, outlier dimensions, penalties either way, rows that are
/// not finite), in both weight formats. Skipped (with a message) on a CPU without AVX512-VNNI,
/// where the model uses the whole head instead.
@Suite(.enabled(if: BoundedHead.available, "this CPU lacks AVX512-VNNI: greedy steps use the whole head"))
struct BoundedHeadTests {
    /// One row's logits as the full product computes them, penalties subtracted, and its argmax.
    static func fullArgmax(_ matrix: PackedMatrix, _ x: [Float], _ penalties: [Int: Float]) -> Int {
        let y = FloatBuffer(count: matrix.columns, zeroed: false)
        x.withUnsafeBufferPointer { matrix.multiply($0.baseAddress!, m: 1, into: y.pointer) }
        var logits = Array(UnsafeBufferPointer(start: y.pointer, count: matrix.columns))
        for (token, penalty) in penalties { logits[token] -= penalty }
        return Sampler.argmax(logits)
    }

    @Test func theVNNIProductEqualsTheDefinition() throws {
        var random = SeededGenerator(seed: 5)
        for (m, k, n) in [(1, 5, 3), (3, 64, 40), (4, 768, 70), (7, 33, 17), (9, 130, 65)] {
            let w = (0..<(k * n)).map { _ in Float.random(in: -1...1, using: &random) }
            let head = try #require(BoundedHead(building: PackedMatrix(FloatBuffer(w), rows: k, columns: n)))
            let x = (0..<(m * k)).map { _ in Float.random(in: -3...3, using: &random) }
            var statistics = BoundedHead.Statistics()
            // Both paths run through `argmax`: the chosen columns must agree and come out right.
            let fast = x.withUnsafeBufferPointer {
                head.argmax($0.baseAddress!, m: m, ldx: k, adjustments: [], statistics: &statistics)
            }
            let slow = x.withUnsafeBufferPointer {
                head.argmax($0.baseAddress!, m: m, ldx: k, adjustments: [], statistics: &statistics, reference: true)
            }
            #expect(fast == slow, "m \(m) k \(k) n \(n)")
            // And the approximations themselves, value for value.
            let (fastValues, slowValues) = (head.approximations(x, m: m), head.approximations(x, m: m, reference: true))
            #expect(fastValues == slowValues, "m \(m) k \(k) n \(n)")
            // The approximation is close to the product (int8 is good to about 1%).
            let exact = (0..<m).flatMap { r in (0..<n).map { j in (0..<k).reduce(Float(0)) { $0 + x[r * k + $1] * w[$1 * n + j] } } }
            let padded = head.panels * PackedMatrix.panelWidth
            let scale = exact.map(abs).max() ?? 1
            for r in 0..<m {
                for j in 0..<n { #expect(abs(fastValues[r * padded + j] - exact[r * n + j]) < 0.03 * scale) }
            }
        }
    }

    @Test func theChosenColumnIsTheFullProductsArgmax() throws {
        var random = SeededGenerator(seed: 17)
        let k = 96
        for format in [PackedMatrix.Format.f32, .bf16] {
            // 300 columns: a base direction plus 1e-4 of noise, so every value is within the
            // int8 copy's error of every other (and two columns are identical: an exact tie).
            let n = 300
            let base = (0..<k).map { _ in Float.random(in: -1...1, using: &random) }
            var columns = (0..<n).map { _ in base.map { $0 + Float.random(in: -1e-4...1e-4, using: &random) } }
            columns[211] = columns[17]
            var w = [Float](repeating: 0, count: k * n)
            for j in 0..<n { for i in 0..<k { w[i * n + j] = columns[j][i] } }
            let matrix = PackedMatrix(FloatBuffer(w), rows: k, columns: n, format: format)
            let head = try #require(BoundedHead(matrix))
            var rows: [[Float]] = []
            var adjustments: [[Int: Float]] = []
            for index in 0..<40 {
                var x = (0..<k).map { _ in Float.random(in: -1...1, using: &random) }
                if index % 4 == 1 { x[index % k] = 900 }  // an outlier dimension, as GPT-2's hidden states have
                if index % 5 == 2 { x = base }  // makes 17 and 211 the top pair: a tie goes to 17
                rows.append(x)
                var penalties: [Int: Float] = [:]
                if index % 3 == 0 { for _ in 0..<6 { penalties[Int.random(in: 0..<n, using: &random)] = Float.random(in: -0.01...0.01, using: &random) } }
                adjustments.append(penalties)
            }
            rows.append((0..<k).map { $0 == 3 ? .nan : 1 })  // not finite: the whole row, as argmax treats NaN
            adjustments.append([:])
            var statistics = BoundedHead.Statistics()
            let chosen = rows.flatMap { $0 }.withUnsafeBufferPointer {
                head.argmax($0.baseAddress!, m: rows.count, ldx: k, adjustments: adjustments, statistics: &statistics)
            }
            for (index, x) in rows.enumerated() {
                #expect(chosen[index] == Self.fullArgmax(matrix, x, adjustments[index]), "\(format) row \(index)")
            }
            #expect(statistics.rows == rows.count && statistics.fullRows >= 1)
        }
    }

    /// Weights int8 holds exactly (whole numbers up to 127): the copy's only error is X's
    /// rounding, which an outlier dimension makes coarse for every other.
    @Test func theRoundingOfXIsBoundedToo() throws {
        var random = SeededGenerator(seed: 29)
        let (k, n) = (64, 200)
        var w = (0..<(k * n)).map { _ in Float(Int.random(in: -127...127, using: &random)) }
        for j in 0..<n { w[j] = 127 }  // every column's largest is 127: its scale is exactly 1
        let matrix = PackedMatrix(FloatBuffer(w), rows: k, columns: n)
        let head = try #require(BoundedHead(matrix))
        var statistics = BoundedHead.Statistics()
        for trial in 0..<30 {
            var x = (0..<k).map { _ in Float.random(in: -1...1, using: &random) }
            x[1 + trial % (k - 1)] = 500
            let chosen = x.withUnsafeBufferPointer { head.argmax($0.baseAddress!, m: 1, ldx: k, adjustments: [], statistics: &statistics) }
            #expect(chosen == [Self.fullArgmax(matrix, x, [:])], "trial \(trial)")
        }
    }

    /// Where one column clearly leads, only a few are computed exactly: the copy does save work.
    @Test func aClearLeaderNeedsFewExactColumns() throws {
        var random = SeededGenerator(seed: 23)
        let (k, n) = (256, 4000)
        let w = (0..<(k * n)).map { _ in Float.random(in: -0.05...0.05, using: &random) }
        let matrix = PackedMatrix(FloatBuffer(w), rows: k, columns: n)
        let head = try #require(BoundedHead(matrix))
        var statistics = BoundedHead.Statistics()
        for trial in 0..<20 {
            // x along one column, plus noise: that column leads by a wide margin.
            let leader = (trial * 197) % n
            let x = (0..<k).map { w[$0 * n + leader] * 20 + Float.random(in: -0.1...0.1, using: &random) }
            let chosen = x.withUnsafeBufferPointer { head.argmax($0.baseAddress!, m: 1, ldx: k, adjustments: [[:]], statistics: &statistics) }
            #expect(chosen == [Self.fullArgmax(matrix, x, [:])])
            #expect(chosen == [leader])
        }
        #expect(statistics.fullRows == 0)
        #expect(statistics.candidates <= 20 * 16, "\(statistics.candidates) columns computed exactly for 20 rows of \(n)")
    }

    /// Draws through the int8 copy (rejection against each value's upper bound) follow the
    /// softmax of the exact values: 48,000 draws a case, every token's share within 5 standard
    /// errors of its probability, with penalties, at temperatures 1 and 0.4, and at 0.02, where
    /// almost every row runs out of proposals and draws from its whole row.
    @Test func drawsFollowTheExactSoftmax() throws {
        var random = SeededGenerator(seed: 41)
        let (k, n) = (48, 40)
        // Columns of very different sizes: their bounds differ, so the bounds' softmax is far
        // from the values' (drawing from it without the rejection fails this test).
        var w = [Float](repeating: 0, count: k * n)
        for j in 0..<n {
            let size = Float(1 + j % 5) * 0.05
            for i in 0..<k { w[i * n + j] = Float.random(in: -1...1, using: &random) * size }
        }
        let matrix = PackedMatrix(FloatBuffer(w), rows: k, columns: n)
        let head = try #require(BoundedHead(matrix))
        let x = (0..<k).map { _ in Float.random(in: -2...2, using: &random) }
        let penalties: [Int: Float] = [3: 0.7, 11: -0.4]
        var exact = (0..<n).map { j in (0..<k).reduce(Float(0)) { $0 + x[$1] * w[$1 * n + j] } }
        for (token, penalty) in penalties { exact[token] -= penalty }
        for temperature in [1.0, 0.4, 0.02] {
            let largest = exact.max() ?? 0
            let weights = exact.map { exp(Double($0 - largest) / temperature) }
            let probabilities = weights.map { $0 / weights.reduce(0, +) }
            var counts = [Int](repeating: 0, count: n)
            var statistics = BoundedHead.Statistics()
            let rows = 1200, rounds = 40
            let repeated = Array((0..<rows).map { _ in x }.joined())
            for _ in 0..<rounds {
                let choices = (0..<rows).map { _ in BoundedHead.Choice.sample(temperature: temperature, penalties: penalties, uniform: { random.unit() }) }
                let drawn = repeated.withUnsafeBufferPointer { head.choose($0.baseAddress!, m: rows, ldx: k, rows: choices, statistics: &statistics) }
                for token in drawn { counts[token] += 1 }
            }
            let total = Double(rows * rounds)
            for j in 0..<n {
                let p = probabilities[j], share = Double(counts[j]) / total
                let error = (p * (1 - p) / total).squareRoot()
                #expect(abs(share - p) <= 5 * error + 1e-4, "T \(temperature), token \(j): drawn \(share), probability \(p)")
            }
            if temperature == 0.02 { #expect(statistics.fullRows > 0, "the lowest temperature falls back to whole rows") }
            if temperature == 1.0 { #expect(statistics.fullRows == 0 && statistics.proposals < 4 * rows * rounds) }
        }
    }

    /// A model's greedy steps pick the tokens the full head does, in a batch and with penalties.
    @Test func greedyStepsPickTheFullHeadsTokens() throws {
        let directory = NSTemporaryDirectory() + "mg-greedy-gpt2-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try RandomGPT2.write(GPT2Model.Config(layers: 2, heads: 4, width: 64, contextLength: 96, vocabularySize: 1500), seed: 31, to: directory)
        let model = try GPT2Model(directory: directory)
        #expect(model.hasBoundedHead)
        let prompts = (0..<5).map { index in (0..<(3 + index)).map { ($0 * 13 + index * 7) % 1500 } }
        let (greedyCaches, fullCaches) = (prompts.map { _ in model.makeCache(capacity: 96) }, prompts.map { _ in model.makeCache(capacity: 96) })
        var counts = prompts.map { _ in [Int: Int]() }
        var greedyInput = prompts, fullInput = prompts
        let before = model.boundedHeadStatistics
        for step in 0..<30 {
            // Sequences 0 and 3 have penalties (3's negative: repeating is favoured).
            let penalties = counts.enumerated().map { index, counts in
                index == 0 ? Sampler.penalties(counts: counts, frequency: 0.5, presence: 0.3)
                    : index == 3 ? Sampler.penalties(counts: counts, frequency: -0.4, presence: 0) : [:]
            }
            let outputs = model.decode(zip(greedyInput, greedyCaches).enumerated().map { .init(tokens: $1.0, cache: $1.1, greedy: penalties[$0]) })
            let logits = model.forward(zip(fullInput, fullCaches).map { .init(tokens: $0, cache: $1) })
            for index in prompts.indices {
                var row = logits[index]
                for (token, penalty) in penalties[index] { row[token] -= penalty }
                let expected = Sampler.argmax(row)
                guard case .token(let token) = outputs[index] else {
                    Issue.record("step \(step): sequence \(index) got logits from a greedy step")
                    return
                }
                #expect(token == expected, "step \(step), sequence \(index)")
                counts[index][expected, default: 0] += 1
                greedyInput[index] = [token]
                fullInput[index] = [expected]
            }
        }
        let after = model.boundedHeadStatistics
        #expect(after.rows - before.rows == 30 * prompts.count)
        #expect(after.candidates - before.candidates < (after.rows - before.rows) * 1500 / 4, "the bound prunes most of the head")
    }
}

extension BoundedHead {
    /// The approximate values of `x · W` for `m` rows (padded to whole panels), for tests.
    func approximations(_ x: [Float], m: Int, reference: Bool = false) -> [Float] {
        let k = matrix.rows, padded = panels * PackedMatrix.panelWidth
        var xq = [UInt8](repeating: 0, count: m * k4)
        var scales = [Float](repeating: 0, count: m), norms = [Float](repeating: 0, count: 3 * m)
        mg_int8_quantize_rows(x, k, Int32(m), Int32(k), Int32(k4), &xq, &scales, &norms)
        var out = [Float](repeating: 0, count: m * padded)
        let product = reference ? mg_int8_panels_product_reference : mg_int8_panels_product
        product(xq, Int32(m), Int32(k4), quantized, columnSums, self.scales, scales, 0, Int32(panels), &out, padded)
        return out
    }
}
