import Foundation
import Testing
@testable import Inference

@Suite struct SamplingTests {
    /// Probabilities 0.5, 0.3, 0.15, 0.05 on tokens 0...3; the rest impossible.
    let logits: [Float] = [logf(0.5), logf(0.3), logf(0.15), logf(0.05)] + [Float](repeating: -1e9, count: 60)

    func draws(_ parameters: SamplingParameters, count: Int = 3000, seed: UInt64 = 7) -> [Int: Int] {
        var random = SeededGenerator(seed: seed)
        var histogram: [Int: Int] = [:]
        for _ in 0..<count { histogram[Sampler.sample(logits, parameters: parameters, using: &random), default: 0] += 1 }
        return histogram
    }

    @Test func topPNeverLeavesTheNucleus() {
        var parameters = SamplingParameters()
        parameters.topP = 0.8
        let histogram = draws(parameters)
        #expect(Set(histogram.keys) == [0, 1])
        // Proportions follow the renormalised nucleus (0.5 : 0.3).
        let share = Double(histogram[0] ?? 0) / 3000
        #expect(abs(share - 0.625) < 0.04)
        parameters.topP = 0.81
        #expect(Set(draws(parameters).keys) == [0, 1, 2])
    }

    @Test func topKNeverLeavesTheTopK() {
        var parameters = SamplingParameters()
        parameters.topK = 2
        #expect(Set(draws(parameters).keys) == [0, 1])
        parameters.topK = 3
        #expect(Set(draws(parameters).keys) == [0, 1, 2])
        #expect(Sampler.topIndices([3, 9, 1, 7, 7.5], count: 3) == [1, 4, 3])
    }

    @Test func temperatureZeroIsGreedyAndLowTemperatureSharpens() {
        var parameters = SamplingParameters()
        parameters.temperature = 0
        #expect(draws(parameters, count: 100) == [0: 100])
        parameters.temperature = 0.2
        // p^5 renormalised: 0.5 -> 0.926.
        #expect((draws(parameters)[0] ?? 0) > 2650)
    }

    @Test func theSameSeedRepeatsTheSameDraws() {
        let parameters = SamplingParameters()
        #expect(draws(parameters, seed: 42) == draws(parameters, seed: 42))
        #expect(draws(parameters, seed: 42) != draws(parameters, seed: 43))
    }

    /// The vectorised weights of whole-vocabulary sampling against `expf`, on and off the
    /// eight-wide rounds, with impossible tokens exactly 0.
    @Test func samplingWeightsMatchExpf() {
        var random = SystemRandomNumberGenerator()
        for count in [3, 8, 61, 50_257] {
            var values = (0..<count).map { _ in Float.random(in: -30...12, using: &random) }
            values[count / 2] = -1e9
            let weights = Sampler.exponentials(values, scale: 1.25)
            let maximum = values.max() ?? 0
            for (value, weight) in zip(values, weights) {
                let expected = Double(expf((value - maximum) * 1.25))
                #expect(abs(weight - expected) <= 2e-7 * expected + 1e-37, "\(value): \(weight) against \(expected)")
            }
            #expect(weights[count / 2] == 0)
        }
    }

    /// The binned nucleus is the definition's: sort by weight, keep the smallest prefix whose
    /// mass reaches top_p; on wide (near-uniform) and narrow (steep) distributions alike.
    @Test func theNucleusIsTheSmallestPrefixReachingTopP() {
        var random = SystemRandomNumberGenerator()
        for (count, spread) in [(64, 1.0), (5_000, 4.0), (50_257, 20.0), (50_257, 0.5)] {
            let weights = (0..<count).map { _ in exp(Double.random(in: -spread...0, using: &random)) }
            let total = weights.reduce(0, +)
            for topP in [0.05, 0.5, 0.9, 0.999] {
                let order = weights.indices.sorted { weights[$0] > weights[$1] }
                var expected: Set<Int> = []
                var cumulative = 0.0
                for index in order where cumulative < topP * total {
                    expected.insert(index)
                    cumulative += weights[index]
                }
                let nucleus = Sampler.nucleus(weights, total: total, topP: topP)
                #expect(Set(nucleus) == expected && nucleus.count == expected.count, "\(count) tokens, spread \(spread), top_p \(topP)")
            }
        }
    }

    @Test func penaltiesFollowOpenAIsFormula() {
        var values: [Float] = [1, 1, 1, 1, 1, 1, 1, 1]
        Sampler.applyPenalties(&values, counts: [5: 2, 7: 1], frequency: 0.5, presence: 0.25)
        #expect(values == [1, 1, 1, 1, 1, 1 - 1.25, 1, 1 - 0.75])
        var negative: [Float] = [0, 0, 0]
        Sampler.applyPenalties(&negative, counts: [1: 3], frequency: -1, presence: -0.5)
        #expect(negative == [0, 3.5, 0])
    }

    @Test func parametersAreValidatedNamingTheField() {
        var parameters = SamplingParameters()
        parameters.temperature = 2.5
        #expect(throws: GenerationError.invalidParameter("temperature", "must be between 0 and 2")) { try parameters.validate() }
        parameters = SamplingParameters()
        parameters.topP = 0
        #expect(throws: GenerationError.self) { try parameters.validate() }
        parameters = SamplingParameters()
        parameters.stop = ["a", "b", "c", "d", "e"]
        #expect(throws: GenerationError.self) { try parameters.validate() }
        parameters = SamplingParameters()
        parameters.logprobs = 21
        #expect(throws: GenerationError.self) { try parameters.validate() }
    }
}

@Suite struct TextAssemblerTests {
    @Test func neverSplitsACharacter() {
        var assembler = TextAssembler(stops: [])
        let emoji = Array("🦙".utf8)
        #expect(assembler.append(Array(emoji[0..<2])).text == "")
        #expect(assembler.append(Array(emoji[2..<3])).text == "")
        #expect(assembler.append(Array(emoji[3...]) + Array("x".utf8)).text == "🦙x")
        #expect(assembler.append(Array("é".utf8).prefix(1) + []).text == "")
        #expect(assembler.flush() == "\u{FFFD}")
    }

    @Test func holdsBackPossibleStopsAndStopsAcrossTokens() {
        var assembler = TextAssembler(stops: ["\n\nEND"])
        #expect(assembler.append(Array("Hello\n".utf8)) == ("Hello", false))
        #expect(assembler.append(Array("\nE".utf8)) == ("", false))
        #expect(assembler.append(Array("X".utf8)) == ("\n\nEX", false))
        #expect(assembler.append(Array(" done\n\nE".utf8)) == (" done", false))
        #expect(assembler.append(Array("ND tail".utf8)) == ("", true))
    }
}
