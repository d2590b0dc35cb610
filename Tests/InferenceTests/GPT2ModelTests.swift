import Foundation
import Testing
@testable import Inference

struct GPT2Reference: Decodable {
    struct Case: Decodable {
        var prompt: [Int]
        var logits: [[Float]]
        var greedy: [Int]
    }
    var cases: [Case]

    static func load() throws -> GPT2Reference {
        let data = try Data(contentsOf: URL(fileURLWithPath: SharedData.fixtures + "/tiny-gpt2/reference.json"))
        return try JSONDecoder().decode(GPT2Reference.self, from: data)
    }
}

@Suite struct GPT2ModelTests {
    let model: GPT2Model
    let reference: GPT2Reference

    init() throws {
        model = try GPT2Model(directory: SharedData.fixtures + "/tiny-gpt2")
        reference = try GPT2Reference.load()
    }

    @Test func logitsMatchTransformersWithin1e4() throws {
        #expect(model.config == .init(layers: 2, heads: 4, width: 64, contextLength: 64, vocabularySize: 512))
        for testCase in reference.cases {
            let cache = model.makeCache(capacity: 64)
            let logits = model.forward([.init(tokens: testCase.prompt, cache: cache, allLogits: true)])[0]
            let expected = testCase.logits.flatMap { $0 }
            #expect(logits.count == expected.count)
            let worst = zip(logits, expected).map { abs($0 - $1) }.max() ?? .infinity
            #expect(worst < 1e-4, "max |Δ| = \(worst) for prompt \(testCase.prompt)")
        }
    }

    @Test func greedyDecodingWithTheKVCacheMatchesTokenForToken() throws {
        for testCase in reference.cases {
            let cache = model.makeCache(capacity: 64)
            var logits = model.forward([.init(tokens: testCase.prompt, cache: cache)])[0]
            var generated: [Int] = []
            for _ in 0..<testCase.greedy.count {
                let next = logits.indices.max { logits[$0] < logits[$1] } ?? 0
                generated.append(next)
                logits = model.forward([.init(tokens: [next], cache: cache)])[0]
            }
            #expect(generated == testCase.greedy)
        }
    }

    @Test func aBatchedStepEqualsSeparateSteps() throws {
        let prompts = reference.cases.map(\.prompt)
        let caches = prompts.map { _ in model.makeCache(capacity: 64) }
        let batched = model.forward(zip(prompts, caches).map { .init(tokens: $0, cache: $1) })
        for (index, prompt) in prompts.enumerated() {
            let alone = model.forward([.init(tokens: prompt, cache: model.makeCache(capacity: 64))])[0]
            #expect(zip(batched[index], alone).allSatisfy { abs($0 - $1) < 1e-5 })
        }
        // One decode step for all of them together, with caches of different lengths.
        let next = model.forward(caches.map { .init(tokens: [3], cache: $0) })
        for (index, prompt) in prompts.enumerated() {
            let cache = model.makeCache(capacity: 64)
            _ = model.forward([.init(tokens: prompt, cache: cache)])
            let alone = model.forward([.init(tokens: [3], cache: cache)])[0]
            #expect(zip(next[index], alone).allSatisfy { abs($0 - $1) < 1e-5 })
        }
    }

    /// The same on a model wide enough that attention and the products are shared among the
    /// compute threads (by sequence, and for a lone long prompt by group of heads).
    @Test func aBatchedStepOnTheComputeThreadsEqualsSeparateSteps() throws {
        let directory = NSTemporaryDirectory() + "mg-wide-gpt2-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try RandomGPT2.write(GPT2Model.Config(layers: 2, heads: 8, width: 256, contextLength: 128, vocabularySize: 300), seed: 9, to: directory)
        let wide = try GPT2Model(directory: directory)
        let prompts = (0..<12).map { index in (0..<(40 + 3 * index)).map { ($0 * 7 + index) % 300 } }
        let caches = prompts.map { _ in wide.makeCache(capacity: 128) }
        let batched = wide.forward(zip(prompts, caches).map { .init(tokens: $0, cache: $1) })
        let next = wide.forward(caches.map { .init(tokens: [5], cache: $0) })
        for (index, prompt) in prompts.enumerated() {
            let cache = wide.makeCache(capacity: 128)
            let alone = wide.forward([.init(tokens: prompt, cache: cache)])[0]
            let step = wide.forward([.init(tokens: [5], cache: cache)])[0]
            let worst = max(zip(batched[index], alone).map { abs($0 - $1) }.max() ?? 1, zip(next[index], step).map { abs($0 - $1) }.max() ?? 1)
            #expect(worst < 1e-4, "sequence \(index): largest difference \(worst)")
        }
    }

    /// Rows handed out one at a time (echo with logprobs) are the rows `allLogits` returns, in
    /// order, across blocks of the output head (two prompts of 300 tokens: 600 rows, blocks of
    /// 256), and `forward` then returns only each prompt's last row.
    @Test func promptRowsHandedOutOneAtATimeAreTheReturnedRows() throws {
        let directory = NSTemporaryDirectory() + "mg-rows-gpt2-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try RandomGPT2.write(GPT2Model.Config(layers: 1, heads: 2, width: 32, contextLength: 320, vocabularySize: 97), seed: 4, to: directory)
        let small = try GPT2Model(directory: directory)
        let prompts = [(0..<300).map { ($0 * 5) % 97 }, (0..<300).map { ($0 * 11 + 3) % 97 }]
        let whole = prompts.map { small.forward([.init(tokens: $0, cache: small.makeCache(capacity: 320), allLogits: true)])[0] }
        var handed: [[Float]] = [[], []]
        var offsets: [[Int]] = [[], []]
        let steps = prompts.indices.map { index in
            GPT2Model.Step(tokens: prompts[index], cache: small.makeCache(capacity: 320), allLogits: true) { offset, row in
                offsets[index].append(offset)
                handed[index] += row
            }
        }
        let returned = small.forward(steps)
        for index in prompts.indices {
            #expect(offsets[index] == Array(0..<300))
            #expect(zip(handed[index], whole[index]).allSatisfy { abs($0 - $1) < 1e-4 } && handed[index].count == whole[index].count)
            #expect(returned[index].count == 97)
            #expect(zip(returned[index], whole[index].suffix(97)).allSatisfy { abs($0 - $1) < 1e-4 })
        }
    }
}
