import Testing
@testable import Inference

@Suite struct StepPlannerTests {
    @Test func shortPromptsGoFirstAndTheBudgetIsNeverExceeded() {
        #expect(StepPlanner.promptTokens(remaining: [900, 8, 300], budget: 256) == [0, 8, 248])
        #expect(StepPlanner.promptTokens(remaining: [10, 20], budget: 256) == [10, 20])
        #expect(StepPlanner.promptTokens(remaining: [300, 300], budget: 256) == [256, 0])  // the earlier on ties
        #expect(StepPlanner.promptTokens(remaining: [], budget: 256) == [])
        #expect(StepPlanner.promptTokens(remaining: [5], budget: 0) == [0])
    }

    @Test func everyPromptFinishesAndEachStepStaysWithinBudget() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            var remaining = (0..<Int.random(in: 1...12, using: &generator)).map { _ in Int.random(in: 1...1000, using: &generator) }
            let budget = Int.random(in: 1...300, using: &generator)
            var steps = 0
            while remaining.contains(where: { $0 > 0 }) {
                let shares = StepPlanner.promptTokens(remaining: remaining, budget: budget)
                #expect(shares.reduce(0, +) <= budget)
                #expect(shares.reduce(0, +) == min(budget, remaining.reduce(0, +)))  // no budget left idle
                #expect(zip(shares, remaining).allSatisfy { $0 <= $1 && $0 >= 0 })
                remaining = zip(remaining, shares).map { $0 - $1 }
                steps += 1
            }
            #expect(steps >= 1)
        }
    }
}
