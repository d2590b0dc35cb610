import Foundation
import Synchronization

public enum FinishReason: String, Sendable, Equatable {
    case stop, length
}

/// One alternative token with its log-probability.
public struct TopLogprob: Sendable, Equatable {
    public var token: Int
    public var bytes: [UInt8]
    public var logprob: Float
}

/// A generated (or, with echo, a prompt) token.
public struct GeneratedToken: Sendable, Equatable {
    public var token: Int
    public var bytes: [UInt8]
    /// Log-probability under the model (nil for the first prompt token, or when not requested).
    public var logprob: Float?
    public var top: [TopLogprob]
}

public enum GenerationEvent: Sendable, Equatable {
    /// With `echo` and `logprobs`: the prompt's tokens and their log-probabilities.
    case promptTokens([GeneratedToken])
    /// New text for one choice (never half a character, never part of a stop sequence), and
    /// the tokens generated since the last delta.
    case delta(choice: Int, text: String, tokens: [GeneratedToken])
    case finished(choice: Int, reason: FinishReason, completionTokens: Int)
}

public struct GenerationRequest: Sendable {
    public var prompt: [Int]
    public var parameters: SamplingParameters
    /// Requests are served round-robin across keys (tenants).
    public var fairnessKey: String

    public init(prompt: [Int], parameters: SamplingParameters, fairnessKey: String = "") {
        self.prompt = prompt
        self.parameters = parameters
        self.fairnessKey = fairnessKey
    }
}

/// Runs generation for one decoder-only model (GPT-2, the Llama family) with continuous batching: a dedicated thread steps all
/// running sequences together (one batched forward pass per step, weights read once for the
/// whole batch); new requests join at any step and finished or cancelled ones leave.
public final class TextGenerator: Sendable {
    package let model: any CausalLM
    public let tokenizer: BPETokenizer
    package let defaultMaxTokens: Int
    /// The manifest's sampling defaults, for requests that leave a parameter out.
    public let defaults: SamplingParameters
    /// How chat messages become this model's prompt.
    public let chatFormat: ChatFormat
    /// Tokens that end generation (end of text, end of turn).
    package let stopTokens: Set<Int>
    let maxBatch: Int
    let queueCapacity: Int
    /// The key/value cache the running sequences may hold at once, in bytes (nil: no bound).
    package let cacheBudget: Int?
    /// The requests in flight per tenant while several use this model.
    public let shares: TenantShares
    private let state: SchedulerState

    public struct Statistics: Sendable {
        public var waiting: Int
        public var running: Int
        package var steps: Int
        package var generatedTokens: Int
        /// The most key/value cache the running sequences held at once, in bytes.
        package var peakCacheBytes: Int
    }

    package init(
        model: any CausalLM, tokenizer: BPETokenizer, defaultMaxTokens: Int = 16, defaults: SamplingParameters = SamplingParameters(),
        maxBatch: Int = 32, queueCapacity: Int = 256, floodRest: Double = 2, chatFormat: ChatFormat = .plain, stopTokens: Set<Int>? = nil,
        cacheBudget: Int? = nil
    ) {
        self.cacheBudget = cacheBudget
        self.model = model
        self.tokenizer = tokenizer
        self.chatFormat = chatFormat
        let stopTokens = stopTokens ?? Set([tokenizer.endOfText].compactMap { $0 })
        self.stopTokens = stopTokens
        self.defaultMaxTokens = defaultMaxTokens
        self.defaults = defaults
        self.maxBatch = maxBatch
        self.queueCapacity = queueCapacity
        self.shares = TenantShares(slots: maxBatch, capacity: queueCapacity, rest: floodRest)
        self.state = SchedulerState()
        let thread = Thread { [state, model, tokenizer, maxBatch] in
            Scheduler(state: state, model: model, tokenizer: tokenizer, stopTokens: stopTokens, maxBatch: maxBatch, cacheBudget: cacheBudget).run()
        }
        thread.name = "textgen"
        thread.stackSize = 8 << 20
        thread.start()
    }

    deinit { state.stop() }

    public var statistics: Statistics { state.statistics }

    /// Stops the scheduler thread; waiting and running requests end with `.cancelled`.
    public func shutdown() { state.stop() }

    /// Checks a request without running it; returns the `max_tokens` it will use.
    public func validate(_ request: GenerationRequest) throws -> Int {
        try request.parameters.validate()
        guard !request.prompt.isEmpty else { throw GenerationError.emptyPrompt }
        for token in request.prompt where token < 0 || token >= model.vocabularySize {
            throw GenerationError.invalidParameter("prompt", "token id \(token) is outside the vocabulary (0..<\(model.vocabularySize))")
        }
        let context = model.contextLength
        if request.prompt.count >= context {
            throw GenerationError.contextExceeded(promptTokens: request.prompt.count, requested: 0, contextLength: context)
        }
        let maxTokens: Int
        if let requested = request.parameters.maxTokens {
            // Compared without adding: a max_tokens near Int.max must not overflow.
            if requested > context - request.prompt.count {
                throw GenerationError.contextExceeded(promptTokens: request.prompt.count, requested: requested, contextLength: context)
            }
            maxTokens = requested
        } else {
            maxTokens = min(defaultMaxTokens, context - request.prompt.count)
        }
        if let cacheBudget {
            let needed = Scheduler.cacheBytes(model: model, promptTokens: request.prompt.count, maxTokens: maxTokens, choices: request.parameters.n)
            if needed > cacheBudget {
                throw GenerationError.invalidParameter(
                    "max_tokens",
                    "this request needs \(Self.megabytes(needed)) MB of the model's key/value cache (its prompt and max_tokens for each of its \(request.parameters.n) choices); the model has \(Self.megabytes(cacheBudget)) MB")
            }
        }
        return maxTokens
    }

    static func megabytes(_ bytes: Int) -> String { String(format: "%.2f", Double(bytes) / Double(1 << 20)) }

    /// Whether a request of this fairness key would be queued now (a cheap check before the
    /// request is admitted and metered; `generate` decides for good).
    public func accepts(fairnessKey: String) -> Bool { state.accepts(key: fairnessKey, capacity: queueCapacity) }

    /// Validates and enqueues a request. Events arrive as they are produced; ending the
    /// iteration (or cancelling the consuming task) stops generation within one token.
    public func generate(_ request: GenerationRequest) throws -> GenerationStream {
        let maxTokens = try validate(request)
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: GenerationEvent.self)
        let job = GenerationJob(request: request, maxTokens: maxTokens, continuation: continuation)
        let handle = CancellationHandle(job: job, state: state)
        continuation.onTermination = { _ in handle.cancel() }
        guard state.enqueue(job, capacity: queueCapacity) else {
            throw GenerationError.overloaded("the model's queue is full; retry shortly")
        }
        return GenerationStream(stream: stream, handle: handle)
    }
}

/// The events of one generation. Generation is cancelled when the consuming task is cancelled,
/// when the consumer drops the stream, or on `cancel()`.
public struct GenerationStream: AsyncSequence, Sendable {
    public typealias Element = GenerationEvent
    let stream: AsyncThrowingStream<GenerationEvent, any Error>
    let handle: CancellationHandle

    public func cancel() { handle.cancel() }

    public func makeAsyncIterator() -> Iterator {
        Iterator(base: stream.makeAsyncIterator(), handle: handle)
    }

    public struct Iterator: AsyncIteratorProtocol {
        var base: AsyncThrowingStream<GenerationEvent, any Error>.AsyncIterator
        let handle: CancellationHandle

        public mutating func next() async throws -> GenerationEvent? {
            let handle = self.handle
            return try await withTaskCancellationHandler {
                try await base.next()
            } onCancel: {
                handle.cancel()
            }
        }
    }
}

/// Cancels its job when asked or when the last reference (stream or iterator) goes away.
final class CancellationHandle: Sendable {
    let job: GenerationJob
    let state: SchedulerState

    init(job: GenerationJob, state: SchedulerState) {
        self.job = job
        self.state = state
    }

    func cancel() {
        job.cancel()
        state.wake()
    }

    deinit { cancel() }
}

/// A request in flight: shared by its choices' sequences.
final class GenerationJob: @unchecked Sendable {
    let request: GenerationRequest
    let maxTokens: Int
    let continuation: AsyncThrowingStream<GenerationEvent, any Error>.Continuation
    private let cancelled = Atomic<Bool>(false)
    var unfinishedChoices: Int

    init(request: GenerationRequest, maxTokens: Int, continuation: AsyncThrowingStream<GenerationEvent, any Error>.Continuation) {
        self.request = request
        self.maxTokens = maxTokens
        self.continuation = continuation
        self.unfinishedChoices = request.parameters.n
    }

    func cancel() { cancelled.store(true, ordering: .relaxed) }
    var isCancelled: Bool { cancelled.load(ordering: .relaxed) }
}

/// Queue and counters shared between callers and the scheduler thread.
final class SchedulerState: @unchecked Sendable {
    private let condition = NSCondition()
    private var queue = FairQueue<GenerationJob>()
    private var stopped = false
    private var running = 0
    private var steps = 0
    private var generated = 0

    func enqueue(_ job: GenerationJob, capacity: Int) -> Bool {
        var evicted: GenerationJob?
        condition.lock()
        defer {
            condition.unlock()
            // Outside the lock: finishing a stream runs its termination handler, which wakes us.
            evicted?.continuation.finish(throwing: GenerationError.overloaded("the model's queue is full; retry shortly"))
        }
        guard !stopped else { return false }
        if queue.count >= capacity {
            evicted = queue.evictForFairness(incoming: job.request.fairnessKey)
            guard evicted != nil else { return false }
        }
        queue.append(job, key: job.request.fairnessKey)
        condition.signal()
        return true
    }

    func accepts(key: String, capacity: Int) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        return !stopped && queue.accepts(key: key, capacity: capacity)
    }

    func wake() {
        condition.lock()
        condition.signal()
        condition.unlock()
    }

    func stop() {
        condition.lock()
        stopped = true
        condition.broadcast()
        condition.unlock()
    }

    /// Waits for work; returns newly admitted jobs (at most `room` choices), or nil when stopped.
    /// Streams are finished after the lock is released (their termination handlers wake us).
    ///
    /// A full batch still takes the request of a key (tenant) with nothing running, up to
    /// `overflow` choices beyond `room`: a tenant's first request never waits for another
    /// tenant's sequences to finish.
    /// With `memory`, a job is admitted only while its key/value cache (`cost`) fits what is
    /// `free` of the model's budget; the rest wait for running sequences to finish.
    func next(
        room: Int, idle: Bool, runningKeys: Set<String> = [], overflow: Int = 0, memory: (free: Int, cost: (GenerationJob) -> Int)? = nil
    ) -> [GenerationJob]? {
        var dropped: [GenerationJob] = []
        var stoppedJobs: [GenerationJob] = []
        condition.lock()
        defer {
            condition.unlock()
            for job in dropped { job.continuation.finish() }
            for job in stoppedJobs { job.continuation.finish(throwing: GenerationError.cancelled) }
        }
        func dropCancelled() {
            queue.removeAll { job in
                if job.isCancelled { dropped.append(job) }
                return job.isCancelled
            }
        }
        dropCancelled()
        while idle && queue.isEmpty && !stopped {
            condition.wait()
            dropCancelled()
        }
        if stopped {
            while let job = queue.popFirst() { stoppedJobs.append(job) }
            return nil
        }
        var admitted: [GenerationJob] = []
        var space = room
        var free = memory?.free ?? .max
        func fits(_ job: GenerationJob) -> Bool { (memory?.cost(job) ?? 0) <= free }
        while let job = queue.peek(), job.request.parameters.n <= space || (admitted.isEmpty && idle), fits(job) {
            _ = queue.popFirst()
            admitted.append(job)
            space -= job.request.parameters.n
            free -= memory?.cost(job) ?? 0
        }
        var keys = runningKeys.union(admitted.map(\.request.fairnessKey))
        space = min(space, 0) + overflow
        while let (key, job) = queue.peek(whereKey: { !keys.contains($0) }), job.request.parameters.n <= space, fits(job) {
            queue.removeFirst(ofKey: key)
            admitted.append(job)
            keys.insert(key)
            space -= job.request.parameters.n
            free -= memory?.cost(job) ?? 0
        }
        return admitted
    }

    /// The most key/value cache bytes the running sequences held at once.
    private(set) var peakCacheBytes = 0

    func record(running: Int, generated: Int, stepped: Bool = true, cacheBytes: Int = 0) {
        condition.lock()
        peakCacheBytes = max(peakCacheBytes, cacheBytes)
        self.running = running
        if stepped { steps += 1 }
        self.generated += generated
        condition.unlock()
    }

    var isStopped: Bool {
        condition.lock()
        defer { condition.unlock() }
        return stopped
    }

    var statistics: TextGenerator.Statistics {
        condition.lock()
        defer { condition.unlock() }
        return .init(waiting: queue.count, running: running, steps: steps, generatedTokens: generated, peakCacheBytes: peakCacheBytes)
    }
}

/// The scheduling decisions of a step, as pure functions (the scheduler applies them).
package enum StepPlanner {
    /// How many prompt tokens each waiting prompt puts in this step, given what each has left
    /// and the step's budget. Prompts go in at most `budget` tokens a step in all, so a long one
    /// does not stall every other sequence's next token behind its whole prefill; the budget
    /// goes to the prompts with the least left first (the earlier on ties), so a short prompt
    /// joins at once instead of waiting behind every long one's turn. 0: waits for a later step.
    package static func promptTokens(remaining: [Int], budget: Int) -> [Int] {
        var left = max(0, budget)
        var shares = [Int](repeating: 0, count: remaining.count)
        let order = remaining.indices.sorted { (remaining[$0], $0) < (remaining[$1], $1) }
        for index in order {
            let count = min(max(0, remaining[index]), left)
            shares[index] = count
            left -= count
        }
        return shares
    }
}

/// The scheduler loop, on its own thread.
struct Scheduler {
    let state: SchedulerState
    let model: any CausalLM
    let tokenizer: BPETokenizer
    let stopTokens: Set<Int>
    let maxBatch: Int
    let cacheBudget: Int?

    /// The key/value cache a job takes: each choice's prompt and completion.
    static func cacheBytes(model: any CausalLM, promptTokens: Int, maxTokens: Int, choices: Int) -> Int {
        min(promptTokens + maxTokens, model.contextLength) * max(1, choices) * model.cacheBytesPerPosition
    }

    func cacheBytes(_ job: GenerationJob) -> Int {
        Self.cacheBytes(model: model, promptTokens: job.request.prompt.count, maxTokens: job.maxTokens, choices: job.request.parameters.n)
    }

    /// One choice being generated.
    final class Sequence {
        let job: GenerationJob
        let choice: Int
        var cache: AttentionCache
        /// The next tokens to run: the next part of the prompt, then each sampled token.
        var input: [Int]
        var prefilled = false
        var generated = 0
        var counts: [Int: Int] = [:]
        var random: SeededGenerator
        var assembler: TextAssembler
        /// With echo and logprobs: the prompt's tokens with their log-probabilities, filled in
        /// as the prefill computes each row.
        var promptTokens: [GeneratedToken] = []
        /// Prompt tokens already in the cache (a long prompt goes in over several steps).
        var promptDone = 0

        init(job: GenerationJob, choice: Int, cache: AttentionCache) {
            self.job = job
            self.choice = choice
            self.cache = cache
            self.input = job.request.prompt
            let seed = job.request.parameters.seed.map { $0 &+ UInt64(choice) &* 0x9E37_79B9_7F4A_7C15 }
                ?? UInt64.random(in: 0...UInt64.max)
            self.random = SeededGenerator(seed: seed)
            self.assembler = TextAssembler(stops: job.request.parameters.stop)
        }
    }

    /// Prompt tokens a step takes at most, across its sequences. One request of 8 prompts of 900
    /// tokens on GPT-2 124M was one step of 16-19 s here, during which no other sequence got a
    /// token; with 256 a step, an 8-token request meanwhile takes about 5 s (bench/long_prompts.sh)
    /// and the long request itself no longer (256-row products run at full speed).
    static let promptTokensPerStep = 256

    func run() {
        var active: [Sequence] = []
        while true {
            let admission = state.next(
                room: maxBatch - active.count, idle: active.isEmpty, runningKeys: Set(active.map(\.job.request.fairnessKey)),
                overflow: max(1, maxBatch / 2) - max(0, active.count - maxBatch),
                memory: cacheBudget.map { budget in (budget - cacheInUse(active), { self.cacheBytes($0) }) })
            guard let admitted = admission else {
                for sequence in active { sequence.job.continuation.finish(throwing: GenerationError.cancelled) }
                return
            }
            for job in admitted {
                let capacity = job.request.prompt.count + job.maxTokens
                active.append(Sequence(job: job, choice: 0, cache: model.makeCache(capacity: capacity)))
            }
            // Cancelled requests leave before the step: generation stops within one token.
            active.removeAll { sequence in
                if sequence.job.isCancelled {
                    sequence.job.continuation.finish()
                    return true
                }
                return false
            }
            guard !active.isEmpty else {
                state.record(running: 0, generated: 0, stepped: false)
                continue
            }

            // Which prompts go in this step, and how much of each: `StepPlanner`.
            let prompts = active.filter { !$0.prefilled }
            let shares = StepPlanner.promptTokens(remaining: prompts.map { $0.job.request.prompt.count - $0.promptDone }, budget: Self.promptTokensPerStep)
            var waiting: Set<ObjectIdentifier> = []
            for (sequence, count) in zip(prompts, shares) {
                guard count > 0 else {
                    waiting.insert(ObjectIdentifier(sequence))  // until a later step's budget
                    continue
                }
                sequence.input = Array(sequence.job.request.prompt[sequence.promptDone..<(sequence.promptDone + count)])
            }
            let stepping = active.filter { !waiting.contains(ObjectIdentifier($0)) }
            var next = active.filter { waiting.contains(ObjectIdentifier($0)) }
            let steps = stepping.map { sequence in
                let wantsPrompt = !sequence.prefilled && sequence.job.request.parameters.echo && sequence.job.request.parameters.logprobs != nil
                let base = sequence.promptDone
                let parameters = sequence.job.request.parameters
                // Greedy sequences without log-probabilities need only the top token.
                // So do sequences that sample from the whole distribution (no top_k or top_p),
                // where the model has the head's int8 copy (else the draws would come out of the
                // seeded generator in another order than the sampler's), once their prompt is in:
                // but not the prompt's last step for n > 1 choices, which each draw their first
                // token from its logits.
                let bounded = parameters.logprobs == nil
                let greedy = bounded && Sampler.isGreedy(parameters)
                let lastPromptStep = sequence.promptDone + sequence.input.count == sequence.job.request.prompt.count
                let sampling = bounded && !greedy && model.hasBoundedHead && parameters.topP >= 1
                    && (parameters.topK == 0 || parameters.topK >= model.vocabularySize)
                    && (sequence.prefilled || (lastPromptStep && parameters.n <= 1))
                let penalties = greedy || sampling
                    ? Sampler.penalties(counts: sequence.counts, frequency: parameters.frequencyPenalty, presence: parameters.presencePenalty)
                    : [:]
                return DecodeStep(
                    tokens: sequence.input, cache: sequence.cache, allLogits: wantsPrompt,
                    eachRow: wantsPrompt ? { offset, row in self.recordPromptToken(sequence, after: base + offset, row) } : nil,
                    greedy: greedy ? penalties : nil,
                    sample: sampling
                        ? .init(temperature: parameters.temperature, penalties: penalties, uniform: { sequence.random.unit() }) : nil)
            }
            let logits = model.decode(steps)
            var produced = 0
            for (index, sequence) in stepping.enumerated() {
                let rows = logits[index]
                if !sequence.prefilled {
                    sequence.promptDone += sequence.input.count
                    guard sequence.promptDone == sequence.job.request.prompt.count else {
                        next.append(sequence)  // more of the prompt to go
                        continue
                    }
                    sequence.prefilled = true
                    if steps[index].allLogits { sequence.job.continuation.yield(.promptTokens(sequence.promptTokens)) }
                    // max_tokens 0 (echo: scoring a prompt): every choice ends with the prompt.
                    if sequence.job.maxTokens == 0 {
                        for choice in 0..<max(1, sequence.job.request.parameters.n) {
                            sequence.job.continuation.yield(.finished(choice: choice, reason: .length, completionTokens: 0))
                        }
                        sequence.job.unfinishedChoices = 0
                        sequence.job.continuation.finish()
                        continue
                    }
                    // Further choices of the same prompt share the prefill: copy its cache.
                    var siblings = [sequence]
                    for choice in 1..<max(1, sequence.job.request.parameters.n) {
                        let sibling = Sequence(job: sequence.job, choice: choice, cache: sequence.cache.copy())
                        sibling.prefilled = true
                        siblings.append(sibling)
                    }
                    for member in siblings {
                        if let continuing = advance(member, logits: rows) { next.append(continuing) }
                        produced += 1
                    }
                } else {
                    if let continuing = advance(sequence, logits: rows) { next.append(continuing) }
                    produced += 1
                }
            }
            state.record(running: next.count, generated: produced, cacheBytes: cacheInUse(active))
            active = next
        }
    }

    /// The key/value cache the jobs of `sequences` hold (a job's choices counted once, as admitted).
    private func cacheInUse(_ sequences: [Sequence]) -> Int {
        var seen: Set<ObjectIdentifier> = []
        var total = 0
        for sequence in sequences where seen.insert(ObjectIdentifier(sequence.job)).inserted { total += cacheBytes(sequence.job) }
        return total
    }

    /// Samples one token for `sequence`, emits its text, and returns the sequence if it goes on.
    private func advance(_ sequence: Sequence, logits output: DecodeOutput) -> Sequence? {
        let job = sequence.job
        let parameters = job.request.parameters
        let raw = output.logits
        let token: Int
        if case .token(let chosen) = output {
            token = chosen
        } else {
            var logits = raw
            Sampler.applyPenalties(&logits, counts: sequence.counts, frequency: parameters.frequencyPenalty, presence: parameters.presencePenalty)
            token = Sampler.sample(logits, parameters: parameters, using: &sequence.random)
        }
        sequence.generated += 1
        sequence.counts[token, default: 0] += 1

        var info = GeneratedToken(token: token, bytes: tokenizer.tokenBytes(token), logprob: nil, top: [])
        if let alternatives = parameters.logprobs {
            let (logprob, top) = logprobs(raw, token: token, alternatives: alternatives)
            info.logprob = logprob
            info.top = top
        }

        let isEndOfText = stopTokens.contains(token)
        var finish: FinishReason?
        var text = ""
        if isEndOfText {
            finish = .stop
            info.bytes = []
            text = sequence.assembler.flush()
        } else {
            let (shown, stopped) = sequence.assembler.append(info.bytes)
            text = shown
            if stopped {
                finish = .stop
            } else if sequence.generated >= job.maxTokens || sequence.cache.length + 1 >= model.contextLength {
                finish = .length
                text += sequence.assembler.flush()
            }
        }
        job.continuation.yield(.delta(choice: sequence.choice, text: text, tokens: isEndOfText ? [] : [info]))
        if let finish {
            job.continuation.yield(.finished(choice: sequence.choice, reason: finish, completionTokens: sequence.generated))
            job.unfinishedChoices -= 1
            if job.unfinishedChoices == 0 { job.continuation.finish() }
            return nil
        }
        sequence.input = [token]
        return sequence
    }

    private func logprobs(_ logits: [Float], token: Int, alternatives: Int) -> (Float, [TopLogprob]) {
        var logSoftmax = [Float](repeating: 0, count: logits.count)
        logits.withUnsafeBufferPointer { input in
            logSoftmax.withUnsafeMutableBufferPointer { output in
                if let source = input.baseAddress, let destination = output.baseAddress {
                    Kernels.logSoftmax(source, destination, count: logits.count)
                }
            }
        }
        let top = alternatives > 0 ? Sampler.topIndices(logSoftmax, count: alternatives) : []
        return (logSoftmax[token], top.map { TopLogprob(token: $0, bytes: tokenizer.tokenBytes($0), logprob: logSoftmax[$0]) })
    }

    /// The prompt token after row `offset` (the row is its distribution), with its
    /// log-probability; the first token, which nothing predicts, goes in before it.
    private func recordPromptToken(_ sequence: Sequence, after offset: Int, _ row: UnsafeBufferPointer<Float>) {
        let prompt = sequence.job.request.prompt
        if sequence.promptTokens.isEmpty, let first = prompt.first {
            sequence.promptTokens.append(GeneratedToken(token: first, bytes: tokenizer.tokenBytes(first), logprob: nil, top: []))
        }
        guard offset + 1 < prompt.count else { return }  // the last row predicts the completion
        let token = prompt[offset + 1]
        let (logprob, top) = logprobs(Array(row), token: token, alternatives: sequence.job.request.parameters.logprobs ?? 0)
        sequence.promptTokens.append(GeneratedToken(token: token, bytes: tokenizer.tokenBytes(token), logprob: logprob, top: top))
    }
}
