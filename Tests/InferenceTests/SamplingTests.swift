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
