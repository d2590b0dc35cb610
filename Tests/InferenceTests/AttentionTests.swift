import Foundation
import Inference
import Testing

@Suite struct AttentionTests {
    /// Causal attention by its definition, in double precision, from `[positions, heads * headSize]`.
    static func reference(
        query: [Float], queryStride: Int, keys: [Float], values: [Float], tokens: Int, start: Int, heads: Int, headSize: Int
    ) -> [Double] {
        let width = heads * headSize
        var output = [Double](repeating: 0, count: tokens * width)
        for t in 0..<tokens {
            for h in 0..<heads {
                let visible = start + t + 1
                var scores = (0..<visible).map { p in
                    (0..<headSize).reduce(0.0) { $0 + Double(query[t * queryStride + h * headSize + $1]) * Double(keys[p * width + h * headSize + $1]) }
                        / Double(headSize).squareRoot()
                }
                let maximum = scores.max() ?? 0
                scores = scores.map { exp($0 - maximum) }
                let sum = scores.reduce(0, +)
                for d in 0..<headSize {
                    output[t * width + h * headSize + d] = (0..<visible).reduce(0.0) { $0 + scores[$1] / sum * Double(values[$1 * width + h * headSize + d]) }
                }
            }
        }
        return output
    }

    /// Head sizes on and off the vector paths (multiples of 8 and of 32, and neither), position
    /// counts that leave every remainder of the four-key and two-value rounds, several tokens
    /// after a cached prefix, and both cache layouts.
    @Test(arguments: [8, 12, 16, 32, 40, 64, 96])
    func matchesTheDefinition(headSize: Int) {
        var random = SystemRandomNumberGenerator()
        let heads = 3
        let width = heads * headSize
        for (tokens, start) in [(1, 0), (1, 4), (1, 6), (3, 8), (2, 13)] {
            let positions = start + tokens
            let queryStride = 3 * width
            let query = (0..<(tokens * queryStride)).map { _ in Float.random(in: -1...1, using: &random) }
            let keys = (0..<(positions * width)).map { _ in Float.random(in: -1...1, using: &random) }
            let values = (0..<(positions * width)).map { _ in Float.random(in: -1...1, using: &random) }
            let expected = Self.reference(query: query, queryStride: queryStride, keys: keys, values: values, tokens: tokens, start: start, heads: heads, headSize: headSize)
            // The same cache position-major, and head-major with room for more positions.
            let capacity = positions + 5
            var headMajorKeys = [Float](repeating: .nan, count: heads * capacity * headSize)
            var headMajorValues = headMajorKeys
            for p in 0..<positions {
                for h in 0..<heads {
                    for d in 0..<headSize {
                        headMajorKeys[h * capacity * headSize + p * headSize + d] = keys[p * width + h * headSize + d]
                        headMajorValues[h * capacity * headSize + p * headSize + d] = values[p * width + h * headSize + d]
                    }
                }
            }
            for (cacheKeys, cacheValues, positionStride, headStride) in [(keys, values, width, headSize), (headMajorKeys, headMajorValues, headSize, capacity * headSize)] {
                var output = [Float](repeating: .nan, count: tokens * width)
                var scores = [Float](repeating: 0, count: positions)
                query.withUnsafeBufferPointer { q in
                    cacheKeys.withUnsafeBufferPointer { k in
                        cacheValues.withUnsafeBufferPointer { v in
                            output.withUnsafeMutableBufferPointer { o in
                                scores.withUnsafeMutableBufferPointer { s in
                                    Attention.causal(
                                        query: q.baseAddress!, queryStride: queryStride, keys: k.baseAddress!, values: v.baseAddress!,
                                        positionStride: positionStride, headStride: headStride, output: o.baseAddress!, tokens: tokens, start: start,
                                        heads: heads, headSize: headSize, scores: s.baseAddress!)
                                }
                            }
                        }
                    }
                }
                let worst = zip(output, expected).map { abs(Double($0) - $1) }.max() ?? .nan
                #expect(worst < 1e-5, "head size \(headSize), tokens \(tokens) after \(start), position stride \(positionStride): off by \(worst)")
            }
        }
    }

    /// Softmax against its definition in double precision, for counts on and off its eight-wide
    /// rounds and values far apart (their exponentials span the whole float range).
    @Test func softmaxMatchesTheDefinition() {
        var random = SystemRandomNumberGenerator()
        for count in [1, 2, 7, 8, 9, 15, 16, 17, 100, 1000] {
            let values = (0..<count).map { _ in Float.random(in: -60...60, using: &random) }
            var output = values
            output.withUnsafeMutableBufferPointer { Kernels.softmax($0.baseAddress!, count: count) }
            let maximum = Double(values.max() ?? 0)
            let exponentials = values.map { exp(Double($0) - maximum) }
            let sum = exponentials.reduce(0, +)
            var largest = 0.0
            for (value, exponential) in zip(output, exponentials) {
                let probability = exponential / sum
                // Probabilities under 1e-30 are past float's normal range (or 0 in float).
                if probability > 1e-30 { largest = max(largest, abs(Double(value) - probability) / probability) }
            }
            #expect(largest < 1e-5, "count \(count): relative error \(largest)")
            #expect(abs(output.reduce(0, +) - 1) < 1e-5, "count \(count): sums to \(output.reduce(0, +))")
        }
    }
}
