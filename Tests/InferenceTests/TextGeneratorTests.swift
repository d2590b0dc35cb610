import Synchronization
import Foundation
import Testing
import TestSupport
@testable import Inference

/// The tiny fixture model with a byte-level vocabulary of its 512 ids: 0...255 are bytes,
/// 256...510 are merges of printable pairs, 511 is `<|endoftext|>`.
func tinyGenerator(maxBatch: Int = 8, queueCapacity: Int = 64) throws -> TextGenerator {
    let model = try GPT2Model(directory: SharedData.fixtures + "/tiny-gpt2")
    let table = BPETokenizer.byteTable()
    var vocabulary: [String: Int] = [:]
    for byte in 0..<256 { vocabulary[String(table[byte])] = byte }
    var merges: [(String, String)] = []
    let letters = Array("etaoinshrdlucmfw")
    var id = 256
    outer: for a in letters {
        for b in letters {
            if id == 511 { break outer }
            let pair = (String(a), String(b))
            guard vocabulary[pair.0 + pair.1] == nil else { continue }
            merges.append(pair)
            vocabulary[pair.0 + pair.1] = id
            id += 1
        }
    }
    vocabulary["<|endoftext|>"] = 511
    let tokenizer = BPETokenizer(vocabulary: vocabulary, merges: merges)
    return TextGenerator(model: model, tokenizer: tokenizer, defaultMaxTokens: 8, maxBatch: maxBatch, queueCapacity: queueCapacity)
}

struct Completion: Equatable {
    var text: [Int: String] = [:]
    var tokens: [Int: [Int]] = [:]
    var finish: [Int: FinishReason] = [:]
    var prompt: [GeneratedToken] = []
}

func collect(_ stream: GenerationStream) async throws -> Completion {
    var completion = Completion()
    for try await event in stream {
        switch event {
        case .promptTokens(let tokens): completion.prompt = tokens
        case .delta(let choice, let text, let tokens):
            completion.text[choice, default: ""] += text
            completion.tokens[choice, default: []] += tokens.map(\.token)
        case .finished(let choice, let reason, let count):
            completion.finish[choice] = reason
            #expect(count == completion.tokens[choice]?.count)
        }
    }
    return completion
}

@Suite struct TextGeneratorTests {
    let reference: GPT2Reference

    init() throws { reference = try GPT2Reference.load() }

    func greedy(_ prompt: [Int], maxTokens: Int) -> GenerationRequest {
        var parameters = SamplingParameters()
        parameters.temperature = 0
        parameters.maxTokens = maxTokens
        return GenerationRequest(prompt: prompt, parameters: parameters)
    }

    @Test func greedyGenerationThroughTheSchedulerMatchesTheReference() async throws {
        let generator = try tinyGenerator()
        for testCase in reference.cases {
            let completion = try await collect(try generator.generate(greedy(testCase.prompt, maxTokens: 20)))
            let expected = Array(testCase.greedy.prefix { $0 != 511 })
            #expect(completion.tokens[0] == expected)
            #expect(completion.finish[0] == (expected.count < 20 ? .stop : .length))
        }
        generator.shutdown()
    }

    @Test func concurrentRequestsAreBatchedAndGiveTheSameResults() async throws {
        let generator = try tinyGenerator(maxBatch: 16)
        let results = try await withThrowingTaskGroup(of: (Int, [Int]?).self) { group in
            for (index, testCase) in reference.cases.enumerated() {
                for copy in 0..<3 {
                    group.addTask { (index, try await collect(try generator.generate(greedy(testCase.prompt, maxTokens: 20))).tokens[0]) }
                    _ = copy
                }
            }
            return try await group.reduce(into: [(Int, [Int]?)]()) { $0.append($1) }
        }
        for (index, tokens) in results {
            #expect(tokens == Array(reference.cases[index].greedy.prefix { $0 != 511 }))
        }
        #expect(generator.statistics.steps < 12 * 20, "requests were not batched together")
        generator.shutdown()
    }

    @Test func seededSamplingRepeatsAndNChoicesDiffer() async throws {
        let generator = try tinyGenerator()
        var parameters = SamplingParameters()
        parameters.maxTokens = 12
        parameters.seed = 99
        parameters.n = 3
        let request = GenerationRequest(prompt: [1, 2, 3], parameters: parameters)
        let first = try await collect(try generator.generate(request))
        let second = try await collect(try generator.generate(request))
        #expect(first.tokens == second.tokens)
        #expect(first.tokens.count == 3)
        #expect(Set(first.tokens.values.map { $0 }).count > 1)
        parameters.seed = 100
        let other = try await collect(try generator.generate(GenerationRequest(prompt: [1, 2, 3], parameters: parameters)))
        #expect(other.tokens != first.tokens)
        generator.shutdown()
    }

    @Test func stopSequencesEndGenerationAcrossTokenBoundaries() async throws {
        let generator = try tinyGenerator()
        let full = try await collect(try generator.generate(greedy([1, 2, 3, 4, 5], maxTokens: 20)))
        let text = try #require(full.text[0])
        let bytes = Array(text.utf8)
        #expect(bytes.count > 6)
        // A stop string made of the 3rd to 5th generated bytes: it spans several tokens.
        let stop = String(decoding: bytes[2..<5], as: UTF8.self)
        var parameters = SamplingParameters()
        parameters.temperature = 0
        parameters.maxTokens = 20
        parameters.stop = [stop]
        let stopped = try await collect(try generator.generate(GenerationRequest(prompt: [1, 2, 3, 4, 5], parameters: parameters)))
        #expect(stopped.finish[0] == .stop)
        let shown = try #require(stopped.text[0])
        #expect(!shown.contains(stop))
        #expect(text.hasPrefix(shown))
        #expect(Array(text.utf8).count >= Array(shown.utf8).count + 3)
        generator.shutdown()
    }

    @Test func echoWithLogprobsReturnsThePromptsLogprobs() async throws {
        let generator = try tinyGenerator()
        var parameters = SamplingParameters()
        parameters.temperature = 0
        parameters.maxTokens = 2
        parameters.echo = true
        parameters.logprobs = 3
        let prompt = reference.cases[0].prompt
        let result = try await collect(try generator.generate(GenerationRequest(prompt: prompt, parameters: parameters)))
        #expect(result.prompt.map(\.token) == prompt)
        #expect(result.prompt[0].logprob == nil)
        // Log-probability of prompt[1] under the reference logits of position 0.
        let row = reference.cases[0].logits[0]
        let maximum = row.max() ?? 0
        let logSum = log(row.map { exp(Double($0 - maximum)) }.reduce(0, +)) + Double(maximum)
        let expected = Double(row[prompt[1]]) - logSum
        #expect(abs(Double(result.prompt[1].logprob ?? 0) - expected) < 1e-3)
        #expect(result.prompt[1].top.count == 3)
        generator.shutdown()
    }

    /// A prompt longer than a step's prompt budget goes in over several steps (1,100 tokens:
    /// five of 256 at most), and its completion and echoed log-probabilities are those of the
    /// whole prompt run at once.
    @Test func aLongPromptGoesInOverSeveralStepsWithTheSameResult() async throws {
        let directory = NSTemporaryDirectory() + "mg-long-gpt2-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try RandomGPT2.write(GPT2Model.Config(layers: 1, heads: 2, width: 32, contextLength: 1200, vocabularySize: 512), seed: 8, to: directory)
        let model = try GPT2Model(directory: directory)
        let generator = TextGenerator(model: model, tokenizer: try tinyGenerator().tokenizer, defaultMaxTokens: 8)
        defer { generator.shutdown() }
        let prompt = (0..<1100).map { ($0 * 37 + 11) % 500 }
        var parameters = SamplingParameters()
        parameters.temperature = 0
        parameters.maxTokens = 3
        parameters.echo = true
        parameters.logprobs = 0
        let before = generator.statistics.steps
        let result = try await collect(try generator.generate(GenerationRequest(prompt: prompt, parameters: parameters)))
        let promptSteps = (prompt.count + Scheduler.promptTokensPerStep - 1) / Scheduler.promptTokensPerStep
        #expect(promptSteps > 1)
        #expect(generator.statistics.steps - before == promptSteps + 2, "\(promptSteps) prompt steps, then two more tokens")
        // The same prompt in one pass, straight through the model.
        let cache = model.makeCache(capacity: 1103)
        let rows = model.forward([.init(tokens: prompt, cache: cache, allLogits: true)])[0]
        var logits = Array(rows.suffix(512))
        var expected: [Int] = []
        for _ in 0..<3 {
            let token = Sampler.argmax(logits)
            expected.append(token)
            logits = model.forward([.init(tokens: [token], cache: cache)])[0]
        }
        #expect(result.tokens[0] == expected)
        #expect(result.prompt.map(\.token) == prompt)
        for position in [1, 511, 512, 513, 1023, 1024, 1099] {
            let row = rows[((position - 1) * 512)..<(position * 512)]
            let maximum = Double(row.max() ?? 0)
            let logSum = log(row.map { exp(Double($0) - maximum) }.reduce(0, +)) + maximum
            let expected = Double(row[row.startIndex + prompt[position]]) - logSum
            #expect(abs(Double(result.prompt[position].logprob ?? 0) - expected) < 1e-3, "position \(position)")
        }
    }

    @Test func badRequestsAreRefusedBeforeQueueing() throws {
        let generator = try tinyGenerator()
        #expect(throws: GenerationError.contextExceeded(promptTokens: 64, requested: 0, contextLength: 64)) {
            try generator.generate(greedy([Int](repeating: 1, count: 64), maxTokens: 1))
        }
        #expect(throws: GenerationError.contextExceeded(promptTokens: 60, requested: 10, contextLength: 64)) {
            try generator.generate(greedy([Int](repeating: 1, count: 60), maxTokens: 10))
        }
        #expect(throws: GenerationError.emptyPrompt) { try generator.generate(greedy([], maxTokens: 1)) }
        #expect(throws: GenerationError.self) { try generator.generate(greedy([600], maxTokens: 1)) }
        let message = GenerationError.contextExceeded(promptTokens: 60, requested: 10, contextLength: 64).description
        #expect(message.contains("64") && message.contains("60") && message.contains("70"))
        // A max_tokens near Int.max is refused, and said, without overflowing (that trapped once).
        let huge = GenerationError.contextExceeded(promptTokens: 2, requested: Int.max, contextLength: 64)
        #expect(throws: huge) { try generator.generate(greedy([1, 2], maxTokens: Int.max)) }
        #expect(huge.description.contains("9223372036854775809 tokens"))
        generator.shutdown()
    }

    @Test(.timeLimit(.minutes(2))) func aTenantWithNothingRunningIsNeitherRefusedNorQueuedBehindAFlood() async throws {
        let directory = NSTemporaryDirectory() + "mg-fair-gpt2-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try RandomGPT2.write(GPT2Model.Config(layers: 6, heads: 6, width: 384, contextLength: 320, vocabularySize: 512), seed: 5, to: directory)
        let tiny = try tinyGenerator()
        let generator = TextGenerator(model: try GPT2Model(directory: directory), tokenizer: tiny.tokenizer, maxBatch: 2, queueCapacity: 4)
        tiny.shutdown()
        defer { generator.shutdown() }
        @Sendable func request(_ tenant: String, tokens: Int) -> GenerationRequest {
            var parameters = SamplingParameters()
            parameters.maxTokens = tokens
            parameters.temperature = 0
            return GenerationRequest(prompt: [7, 8], parameters: parameters, fairnessKey: tenant)
        }
        // Tenant a: 2 running + 4 queued fill the batch and the queue; a's requests are long
        // (300 tokens), so a loaded machine cannot finish them before b arrives. The steps from
        // here to b's peak run on a thread of their own: on the cooperative pool, a full suite
        // could hold this task back for seconds while the scheduler thread finished a's work.
        struct Observed: Sendable {
            var flood: [GenerationStream] = []
            var quiet: GenerationStream?
            var ranTogether = false
            var refusedA = false
            var acceptsB = false
            var acceptsA = true
            var peak = 0
        }
        let observed = try await onOwnThread { () throws -> Observed in
            var observed = Observed()
            observed.flood = try (0..<2).map { _ in try generator.generate(request("a", tokens: 300)) }
            let started = ContinuousClock.now
            while generator.statistics.running < 2, ContinuousClock.now - started < .seconds(30) { usleep(200) }
            observed.ranTogether = generator.statistics.running >= 2
            observed.flood += try (0..<4).map { _ in try generator.generate(request("a", tokens: 300)) }
            do { _ = try generator.generate(request("a", tokens: 300)) } catch is GenerationError { observed.refusedA = true }
            observed.acceptsB = generator.accepts(fairnessKey: "b")
            observed.acceptsA = generator.accepts(fairnessKey: "a")
            // Tenant b is taken (a's newest queued request makes room) and joins the full batch:
            // three sequences run where the batch holds two. (Order of completion would depend
            // on where greedy decoding of a random model happens to emit end-of-text.)
            var quietRequest = request("b", tokens: 300)
            quietRequest.prompt = [9]
            observed.quiet = try generator.generate(quietRequest)
            let deadline = ContinuousClock.now + .seconds(30)
            while observed.peak < 3, ContinuousClock.now < deadline {
                observed.peak = max(observed.peak, generator.statistics.running)
                usleep(200)
            }
            return observed
        }
        #expect(observed.ranTogether, "a's two requests never ran together")
        #expect(observed.refusedA, "a seventh request from a was accepted")
        #expect(observed.acceptsB)
        #expect(!observed.acceptsA)
        let peak = observed.peak
        observed.quiet?.cancel()
        let floodStreams = observed.flood
        let evicted = Shared(0)
        await withTaskGroup(of: Void.self) { group in
            for stream in floodStreams {
                stream.cancel()
                group.addTask {
                    do { _ = try await collect(stream) } catch GenerationError.overloaded { evicted.withLock { $0 += 1 } } catch {}
                }
            }
        }
        #expect(peak == 3, "b never ran beside a's full batch (peak \(peak) sequences)")
        #expect(evicted.withLock { $0 } == 1, "exactly one of a's queued requests is evicted")
    }

    @Test(.timeLimit(.minutes(2))) func cancellingTheConsumerStopsGenerationWithinOneToken() async throws {
        // A model big enough that a step takes a while, so the consumer is never far behind.
        let directory = NSTemporaryDirectory() + "mg-slow-gpt2-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let config = GPT2Model.Config(layers: 6, heads: 8, width: 512, contextLength: 512, vocabularySize: 512)
        try RandomGPT2.write(config, seed: 3, to: directory)
        let tiny = try tinyGenerator()
        let generator = TextGenerator(model: try GPT2Model(directory: directory), tokenizer: tiny.tokenizer)
        tiny.shutdown()
        var parameters = SamplingParameters()
        parameters.maxTokens = 400
        parameters.seed = 1
        // The consumer reads three tokens, then its task is cancelled (a client that went away).
        let request = GenerationRequest(prompt: [9], parameters: parameters)
        // The count is taken when the consumer has left its loop (its stream is gone): how
        // quickly a cancelled task gets to run again depends on the machine's load, not on us.
        let leftAt = Shared(-1)
        let consumer = Task {
            defer { leftAt.withLock { $0 = generator.statistics.generatedTokens } }
            var received = 0
            for try await event in try generator.generate(request) {
                if case .delta = event { received += 1 }
                if received == 3 { try await Task.sleep(for: .seconds(60)) }
            }
        }
        while generator.statistics.generatedTokens < 3 { try await Task.sleep(for: .milliseconds(1)) }
        consumer.cancel()
        _ = await consumer.result
        let cancelledAt = leftAt.withLock { $0 }
        let deadline = ContinuousClock.now + .seconds(5)
        while generator.statistics.running > 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(2)) }
        #expect(generator.statistics.running == 0)
        // At most one more step ran after the cancellation before the scheduler noticed.
        #expect(generator.statistics.generatedTokens <= cancelledAt + 1, "generated \(generator.statistics.generatedTokens) tokens, cancelled at \(cancelledAt)")
        generator.shutdown()
    }
}

final class Shared<Value: Sendable>: Sendable {
    private let value: Mutex<Value>
    init(_ value: Value) { self.value = Mutex(value) }
    func withLock<Result>(_ body: (inout Value) -> Result) -> Result { value.withLock { body(&$0) } }
}
