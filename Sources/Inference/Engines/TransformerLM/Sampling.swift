import Foundation

/// Generation options with OpenAI's meaning.
public struct SamplingParameters: Sendable, Equatable {
    /// Tokens to generate at most (nil: the model's default, capped by the context).
    public var maxTokens: Int?
    /// 0 picks the most likely token (greedy); higher flattens the distribution. 0...2.
    public var temperature: Double = 1
    /// Nucleus: sample among the most likely tokens whose probabilities sum to `topP`. (0, 1].
    public var topP: Double = 1
    /// Sample among the `topK` most likely tokens; 0 = no limit.
    public var topK: Int = 0
    /// Subtracted per earlier occurrence of a token in the completion. -2...2.
    public var frequencyPenalty: Double = 0
    /// Subtracted once if a token already occurred in the completion. -2...2.
    public var presencePenalty: Double = 0
    /// Up to 4 strings; generation stops before any of them (matched across token boundaries).
    public var stop: [String] = []
    /// Same seed and same input give the same output.
    public var seed: UInt64?
    /// Number of completions for the prompt.
    public var n: Int = 1
    /// Return this many most likely alternatives per token (0...20), with log-probabilities.
    public var logprobs: Int?
    /// Also return the prompt (and, with `logprobs`, its tokens' log-probabilities).
    public var echo = false

    public init() {}

    /// Checks ranges, naming the first bad parameter as OpenAI's API does.
    public func validate() throws {
        func check(_ condition: Bool, _ parameter: String, _ message: String) throws {
            if !condition { throw GenerationError.invalidParameter(parameter, message) }
        }
        // 0 scores a prompt without generating (with echo, as OpenAI's completions API allows).
        if let maxTokens { try check(maxTokens >= 1 || (echo && maxTokens == 0), "max_tokens", echo ? "must not be negative" : "must be at least 1") }
        try check(temperature.isFinite && (0...2).contains(temperature), "temperature", "must be between 0 and 2")
        try check(topP.isFinite && topP > 0 && topP <= 1, "top_p", "must be greater than 0 and at most 1")
        try check(topK >= 0, "top_k", "must not be negative")
        try check(frequencyPenalty.isFinite && (-2...2).contains(frequencyPenalty), "frequency_penalty", "must be between -2 and 2")
        try check(presencePenalty.isFinite && (-2...2).contains(presencePenalty), "presence_penalty", "must be between -2 and 2")
        try check(stop.count <= 4, "stop", "at most 4 stop sequences")
        try check(stop.allSatisfy { !$0.isEmpty }, "stop", "stop sequences must not be empty")
        try check((1...128).contains(n), "n", "must be between 1 and 128")
        if let logprobs { try check((0...20).contains(logprobs), "logprobs", "must be between 0 and 20") }
    }
}

public enum GenerationError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidParameter(String, String)
    case contextExceeded(promptTokens: Int, requested: Int, contextLength: Int)
    case emptyPrompt
    case overloaded(String)
    case cancelled

    public var description: String {
        switch self {
        case .invalidParameter(let name, let message): "\(name): \(message)"
        case .contextExceeded(let prompt, let requested, let context):
            requested > 0
                ? "This model's maximum context length is \(context) tokens, however you requested \(UInt(prompt) + UInt(requested)) tokens (\(prompt) in your prompt; \(requested) for the completion). Please reduce your prompt or completion length."
                : "This model's maximum context length is \(context) tokens, however your prompt has \(prompt) tokens. Please reduce the length of the prompt."
        case .emptyPrompt: "prompt: must contain at least one token"
        case .overloaded(let message): message
        case .cancelled: "generation was cancelled"
        }
    }
}

/// A small, fast, seedable generator (xoshiro256**), seeded through SplitMix64.
package struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: (UInt64, UInt64, UInt64, UInt64)

    package init(seed: UInt64) {
        var mix = seed
        func next() -> UInt64 {
            mix &+= 0x9E37_79B9_7F4A_7C15
            var z = mix
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        state = (next(), next(), next(), next())
    }

    package mutating func next() -> UInt64 {
        let result = ((state.1 &* 5) << 7 | (state.1 &* 5) >> 57) &* 9
        let t = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= t
        state.3 = state.3 << 45 | state.3 >> 19
        return result
    }

    /// Uniform in [0, 1).
    package mutating func unit() -> Double { Double(next() >> 11) * 0x1.0p-53 }
}

/// Turns logits into the next token, OpenAI style: penalties, then temperature, top-k, top-p.
package enum Sampler {
    /// Applies frequency and presence penalties for tokens already generated (OpenAI's formula:
    /// `logit[j] -= count[j] * frequency + (count[j] > 0) * presence`).
    package static func applyPenalties(_ logits: inout [Float], counts: [Int: Int], frequency: Double, presence: Double) {
        for (token, penalty) in penalties(counts: counts, frequency: frequency, presence: presence) where token < logits.count {
            logits[token] -= penalty
        }
    }

    /// What `applyPenalties` subtracts, per token (empty without penalties).
    package static func penalties(counts: [Int: Int], frequency: Double, presence: Double) -> [Int: Float] {
        guard frequency != 0 || presence != 0 else { return [:] }
        var result: [Int: Float] = [:]
        for (token, count) in counts where token >= 0 && count > 0 { result[token] = Float(Double(count) * frequency + presence) }
        return result
    }

    /// A draw from the softmax of `logits` at `temperature`, as `sample` draws without top_k
    /// or top_p: one uniform number against the running total of the weights.
    static func draw(_ logits: [Float], temperature: Double, uniform: () -> Double) -> Int {
        let weights = exponentials(logits, scale: Float(1 / temperature))
        return pick(weights, total: weights.reduce(0, +), uniform: uniform())
    }

    /// Whether `sample` picks the most likely token (no randomness).
    package static func isGreedy(_ parameters: SamplingParameters) -> Bool { parameters.temperature == 0 || parameters.topK == 1 }

    /// Picks the next token from (penalised) logits.
    package static func sample(_ logits: [Float], parameters: SamplingParameters, using random: inout SeededGenerator) -> Int {
        if isGreedy(parameters) {
            return argmax(logits)
        }
        let inverseTemperature = Float(1 / parameters.temperature)
        // Candidates: the top k, or (nil) every token.
        let candidates = parameters.topK > 0 && parameters.topK < logits.count ? topIndices(logits, count: parameters.topK) : nil
        var weights = candidates.map { list in
            let maximum = list.reduce(-Float.infinity) { max($0, logits[$1]) }
            return list.map { Double(expf((logits[$0] - maximum) * inverseTemperature)) }
        } ?? exponentials(logits, scale: inverseTemperature)
        var total = weights.reduce(0, +)
        var kept: [Int]?  // positions in `weights` that top_p keeps
        if parameters.topP < 1 {
            let nucleus = nucleus(weights, total: total, topP: parameters.topP)
            kept = nucleus
            weights = nucleus.map { weights[$0] }
            total = weights.reduce(0, +)
        }
        func token(_ position: Int) -> Int {
            let index = kept?[position] ?? position
            return candidates?[index] ?? index
        }
        return token(pick(weights, total: total, uniform: random.unit()))
    }

    /// The position whose weight a uniform number in [0, 1) lands on, against the running total.
    static func pick(_ weights: [Double], total: Double, uniform: Double) -> Int {
        var target = uniform * total
        for (position, weight) in weights.enumerated() {
            target -= weight
            if target < 0 { return position }
        }
        return max(0, weights.count - 1)
    }

    /// Positions of the smallest set of the largest weights whose sum reaches `topP` of
    /// `total` (OpenAI's nucleus). The weights are binned by their float exponent: every weight
    /// in a bin above the one where the mass reaches top_p is in the set, and only that bin is
    /// sorted (sorting a whole 50,257-token vocabulary took 1.3 ms a token when the nucleus is
    /// wide). Those above the bin come first, in position order, then the bin's, largest first.
    static func nucleus(_ weights: [Double], total: Double, topP: Double) -> [Int] {
        let goal = topP * total
        func bin(_ weight: Double) -> Int { Int(Float(weight).bitPattern >> 23) }  // monotonic in weight
        var mass = [Double](repeating: 0, count: 256)
        for weight in weights { mass[bin(weight)] += weight }
        var boundary = 0
        var cumulative = 0.0
        for exponent in stride(from: 255, through: 0, by: -1) {
            if cumulative + mass[exponent] >= goal {
                boundary = exponent
                break
            }
            cumulative += mass[exponent]
        }
        var chosen: [Int] = []
        var edge: [Int] = []
        for (index, weight) in weights.enumerated() {
            let exponent = bin(weight)
            if exponent > boundary { chosen.append(index) } else if exponent == boundary { edge.append(index) }
        }
        edge.sort { weights[$0] > weights[$1] }
        for index in edge where cumulative < goal {
            chosen.append(index)
            cumulative += weights[index]
        }
        return chosen
    }

    /// `exp((logit - max) * scale)` for every logit, eight at a time through `Vector.exp`
    /// (exactly 0 below float's range, as `expf` gives): a whole vocabulary's worth per token
    /// of every sequence that samples, where scalar `expf` cost 50,257 calls.
    static func exponentials(_ logits: [Float], scale: Float) -> [Double] {
        let count = logits.count
        var result = [Double](repeating: 0, count: count)
        logits.withUnsafeBufferPointer { source in
            result.withUnsafeMutableBufferPointer { output in
                guard let base = source.baseAddress, let out = output.baseAddress else { return }
                let raw = UnsafeRawPointer(base)
                let maximum = Kernels.maximum(base, count: count)
                let (shift, scales) = (SIMD8<Float>(repeating: maximum), SIMD8<Float>(repeating: scale))
                var i = 0
                while i + 8 <= count {
                    let x = (raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) - shift) * scales
                    let e = Vector.exp(x).replacing(with: 0, where: x .< -87.3)
                    for lane in 0..<8 { out[i + lane] = Double(e[lane]) }
                    i += 8
                }
                for j in i..<count { out[j] = Double(expf((base[j] - maximum) * scale)) }
            }
        }
        return result
    }

    package static func argmax(_ values: [Float]) -> Int {
        var best = 0
        var bestValue = -Float.infinity
        for (index, value) in values.enumerated() where value > bestValue {
            best = index
            bestValue = value
        }
        return best
    }

    /// Indices of the `count` largest values, largest first.
    package static func topIndices(_ values: [Float], count: Int) -> [Int] {
        guard count < values.count else { return values.indices.sorted { values[$0] > values[$1] } }
        // A bounded min-heap would be asymptotically better; partial selection by threshold is
        // simple and fast for the small k used here.
        var selected: [Int] = []
        selected.reserveCapacity(count + 1)
        var floor = -Float.infinity
        for (index, value) in values.enumerated() where selected.count < count || value > floor {
            let position = selected.firstIndex { values[$0] < value } ?? selected.count
            selected.insert(index, at: position)
            if selected.count > count { selected.removeLast() }
            floor = values[selected[selected.count - 1]]
        }
        return selected
    }
}
