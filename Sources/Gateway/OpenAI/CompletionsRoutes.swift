import Foundation
import HTTPTypes
import Hummingbird
import Inference
import Metering
import Synchronization
import Tenancy

/// `POST /v1/completions` and `POST /v1/chat/completions`, OpenAI-compatible, streaming as
/// server-sent events.
struct CompletionsRoutes {
    let pipeline: InferencePipeline

    struct StreamOptions: Decodable, Sendable {
        var include_usage: Bool?
    }

    /// The sampling fields both endpoints share.
    struct Sampling: Decodable, Sendable {
        var max_tokens: Int?
        var max_completion_tokens: Int?
        var temperature: Double?
        var top_p: Double?
        var top_k: Int?
        var n: Int?
        var stream: Bool?
        var stream_options: StreamOptions?
        var stop: OneOrMany<String>?
        var presence_penalty: Double?
        var frequency_penalty: Double?
        var seed: Int64?
        var logit_bias: [String: Double]?
        var user: String?

        /// The request's parameters; those it leaves out come from the model's manifest.
        func parameters(defaults: SamplingParameters) throws -> SamplingParameters {
            if let bias = logit_bias, !bias.isEmpty {
                throw OpenAIError.invalidRequest("logit_bias is not supported by this server", param: "logit_bias", code: "unsupported_parameter")
            }
            var parameters = SamplingParameters()
            parameters.maxTokens = max_completion_tokens ?? max_tokens
            parameters.temperature = temperature ?? defaults.temperature
            parameters.topP = top_p ?? defaults.topP
            parameters.topK = top_k ?? defaults.topK
            parameters.n = n ?? 1
            parameters.stop = stop?.list ?? []
            parameters.presencePenalty = presence_penalty ?? 0
            parameters.frequencyPenalty = frequency_penalty ?? 0
            parameters.seed = seed.map { UInt64(bitPattern: $0) }
            return parameters
        }
    }

    struct CompletionRequest: Decodable, Sendable {
        var model: String
        var prompt: PromptInput?
        var echo: Bool?
        var logprobs: Int?
        var suffix: String?
        var best_of: Int?
        var sampling: Sampling

        enum CodingKeys: String, CodingKey { case model, prompt, echo, logprobs, suffix, best_of }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            model = try container.decode(String.self, forKey: .model)
            prompt = try container.decodeIfPresent(PromptInput.self, forKey: .prompt)
            echo = try container.decodeIfPresent(Bool.self, forKey: .echo)
            logprobs = try container.decodeIfPresent(Int.self, forKey: .logprobs)
            suffix = try container.decodeIfPresent(String.self, forKey: .suffix)
            best_of = try container.decodeIfPresent(Int.self, forKey: .best_of)
            sampling = try Sampling(from: decoder)
        }
    }

    struct ChatMessage: Decodable, Sendable {
        struct Part: Decodable, Sendable {
            var type: String
            var text: String?
        }
        enum Content: Decodable, Sendable {
            case text(String)
            case parts([Part])
            init(from decoder: any Decoder) throws {
                let container = try decoder.singleValueContainer()
                if let text = try? container.decode(String.self) { self = .text(text) } else { self = .parts(try container.decode([Part].self)) }
            }
        }
        var role: String
        var content: Content?

        var text: String {
            switch content {
            case .text(let text): text
            case .parts(let parts): parts.compactMap(\.text).joined(separator: "\n")
            case nil: ""
            }
        }
    }

    struct ChatRequest: Decodable, Sendable {
        var model: String
        var messages: [ChatMessage]
        var logprobs: Bool?
        var top_logprobs: Int?
        var sampling: Sampling

        enum CodingKeys: String, CodingKey { case model, messages, logprobs, top_logprobs }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            model = try container.decode(String.self, forKey: .model)
            messages = try container.decode([ChatMessage].self, forKey: .messages)
            logprobs = try container.decodeIfPresent(Bool.self, forKey: .logprobs)
            top_logprobs = try container.decodeIfPresent(Int.self, forKey: .top_logprobs)
            sampling = try Sampling(from: decoder)
        }
    }

    /// The default chat template: `System: ...`, `User: ...`, `Assistant: ...` turns separated by
    /// blank lines, ending with `Assistant:`; generation stops at the next `\n\nUser:`.
    static func render(_ messages: [ChatMessage]) throws -> String {
        guard !messages.isEmpty else { throw OpenAIError.invalidRequest("messages must not be empty", param: "messages") }
        var text = ""
        for (index, message) in messages.enumerated() {
            let name: String
            switch message.role {
            case "system", "developer": name = "System"
            case "user": name = "User"
            case "assistant": name = "Assistant"
            case "tool", "function": name = "Tool"
            default: throw OpenAIError.invalidRequest("messages[\(index)].role: unknown role '\(message.role)'", param: "messages[\(index)].role")
            }
            text += "\(name): \(message.text)\n\n"
        }
        return text + "Assistant:"
    }

    func register(on group: RouterGroup<GatewayRequestContext>) {
        group.post("completions") { request, context in try await completions(request, context) }
        group.post("chat/completions") { request, context in try await chat(request, context) }
    }

    // MARK: Completions

    /// One prompt's generation, as the route sees it.
    struct PromptJob: Sendable {
        var index: Int
        var tokens: [Int]
        var text: String
    }

    func completions(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let body = try await pipeline.body(request)
        let decoded = try InferencePipeline.decode(CompletionRequest.self, body)
        let (info, engine) = try pipeline.authorize(decoded.model, task: .textGeneration, principal: principal)
        guard case .text(let generator) = engine else { throw InferencePipeline.modelNotFound(decoded.model) }
        if let suffix = decoded.suffix, !suffix.isEmpty {
            throw OpenAIError.invalidRequest("suffix is not supported by this server", param: "suffix", code: "unsupported_parameter")
        }
        if let bestOf = decoded.best_of, bestOf != (decoded.sampling.n ?? 1) {
            throw OpenAIError.invalidRequest("best_of is not supported (it must equal n)", param: "best_of", code: "unsupported_parameter")
        }
        var parameters = try decoded.sampling.parameters(defaults: generator.defaults)
        parameters.logprobs = decoded.logprobs
        parameters.echo = decoded.echo ?? false
        let prompts: [PromptJob]
        switch decoded.prompt ?? .texts([""]) {
        case .texts(let texts):
            prompts = texts.enumerated().map { PromptJob(index: $0.offset, tokens: generator.tokenizer.encode($0.element), text: $0.element) }
        case .tokens(let lists):
            prompts = lists.enumerated().map { PromptJob(index: $0.offset, tokens: $0.element, text: generator.tokenizer.decode($0.element)) }
        }
        guard !prompts.isEmpty, prompts.count <= 64 else {
            throw OpenAIError.invalidRequest("prompt must hold 1 to 64 prompts", param: "prompt")
        }
        return try await run(
            request, context, principal: principal, body: body, model: info.name, generator: generator, prompts: prompts,
            parameters: parameters, stream: decoded.sampling.stream ?? false,
            includeUsage: decoded.sampling.stream_options?.include_usage ?? false, chat: false, route: "/v1/completions")
    }

    func chat(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let body = try await pipeline.body(request)
        let decoded = try InferencePipeline.decode(ChatRequest.self, body)
        let (info, engine) = try pipeline.authorize(decoded.model, task: .textGeneration, principal: principal)
        guard case .text(let generator) = engine else { throw InferencePipeline.modelNotFound(decoded.model) }
        var parameters = try decoded.sampling.parameters(defaults: generator.defaults)
        if decoded.logprobs == true { parameters.logprobs = decoded.top_logprobs ?? 0 }
        if parameters.stop.count < 4 { parameters.stop.append("\n\nUser:") }
        let text = try Self.render(decoded.messages)
        return try await run(
            request, context, principal: principal, body: body, model: info.name, generator: generator,
            prompts: [PromptJob(index: 0, tokens: generator.tokenizer.encode(text), text: text)], parameters: parameters,
            stream: decoded.sampling.stream ?? false, includeUsage: decoded.sampling.stream_options?.include_usage ?? false, chat: true,
            route: "/v1/chat/completions")
    }

    // MARK: Running

    // swiftlint:disable:next function_parameter_count
    func run(
        _ request: Request, _ context: GatewayRequestContext, principal: Principal, body: [UInt8], model: String, generator: TextGenerator,
        prompts: [PromptJob], parameters: SamplingParameters, stream: Bool, includeUsage: Bool, chat: Bool, route: String
    ) async throws -> Response {
        // Everything that can be refused is refused before admission.
        var maxTokens = 0
        do {
            for prompt in prompts {
                maxTokens = max(maxTokens, try generator.validate(GenerationRequest(prompt: prompt.tokens, parameters: parameters)))
            }
        } catch let error as GenerationError {
            throw InferencePipeline.map(error)
        }
        if stream, request.headers[HTTPField.Name("Idempotency-Key")!] != nil {  // safe: valid token
            throw OpenAIError.invalidRequest("Idempotency-Key cannot be combined with stream=true", param: "stream")
        }
        if let replay = try await pipeline.idempotentReplay(request, body: body, principal: principal) { return replay }
        let permit = try await pipeline.enter(.text(generator), request, principal: principal)
        // Held until settlement: by the response body when streaming, otherwise until return.
        var streaming = false
        defer { if !streaming { permit.release() } }
        let started = ContinuousClock.now
        let promptTokens = prompts.reduce(0) { $0 + $1.tokens.count }
        let estimate = UsageEstimate(
            requestID: context.requestID, model: model, promptTokens: promptTokens,
            maxCompletionTokens: maxTokens * parameters.n * prompts.count)
        let admission: Admission
        do {
            admission = try await pipeline.admit(estimate, principal: principal)
        } catch {
            await pipeline.abandonIdempotent(request, principal: principal)
            throw error
        }
        let tenantKey = admission.tenantID.uuidString
        let requests = prompts.map { GenerationRequest(prompt: $0.tokens, parameters: parameters, fairnessKey: tenantKey) }
        var headers = InferencePipeline.rateLimitHeaders(admission)
        let id = (chat ? "chatcmpl-" : "cmpl-") + context.requestID
        let created = Int(Date().timeIntervalSince1970)

        if stream {
            headers[.contentType] = "text/event-stream"
            headers[.cacheControl] = "no-cache"
            let pipeline = self.pipeline
            let streams: [GenerationStream]
            do {
                streams = try requests.map { try generator.generate($0) }
            } catch let error as GenerationError {
                await pipeline.meter.settle(pipeline.record(admission, context, principal: principal, model: model, route: route, promptTokens: promptTokens, completionTokens: 0, images: 0, status: 503, started: started))
                throw InferencePipeline.map(error)
            }
            let chunker = StreamChunker(id: id, created: created, model: model, chat: chat, n: parameters.n, tokenizer: generator.tokenizer)
            streaming = true
            return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                defer { permit.release() }
                let produced = Counter()
                var status = 200
                do {
                    if chat {
                        for choice in 0..<(parameters.n * prompts.count) { try await writer.write(chunker.roleChunk(choice)) }
                    }
                    if parameters.echo && !chat {
                        for prompt in prompts {
                            for choice in 0..<parameters.n {
                                try await writer.write(chunker.textChunk(prompt.text, index: prompt.index * parameters.n + choice))
                            }
                        }
                    }
                    // Every prompt's events, merged in arrival order.
                    let (merged, continuation) = AsyncThrowingStream.makeStream(of: (Int, GenerationEvent).self)
                    let producer = Task {
                        do {
                            try await withThrowingTaskGroup(of: Void.self) { group in
                                for (promptIndex, generation) in streams.enumerated() {
                                    group.addTask { for try await event in generation { continuation.yield((promptIndex, event)) } }
                                }
                                try await group.waitForAll()
                            }
                            continuation.finish()
                        } catch {
                            continuation.finish(throwing: error)
                        }
                    }
                    do {
                        for try await (promptIndex, event) in merged {
                            if case .delta(_, _, let tokens) = event { produced.add(tokens.count) }
                            if let chunk = try chunker.chunk(for: event, prompt: promptIndex) { try await writer.write(chunk) }
                        }
                    } catch {
                        producer.cancel()
                        throw error
                    }
                    if includeUsage {
                        try await writer.write(chunker.usageChunk(prompt: promptTokens, completion: produced.value))
                    }
                    try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
                    try await writer.finish(nil)
                } catch {
                    // The client went away (or generation failed): generation stops, the tokens
                    // produced so far are billed.
                    for generation in streams { generation.cancel() }
                    status = 499
                }
                await pipeline.meter.settle(pipeline.record(
                    admission, context, principal: principal, model: model, route: route, promptTokens: promptTokens,
                    completionTokens: produced.value, images: 0, status: status, started: started))
            })
        }

        // Not streaming: collect every choice of every prompt.
        let outcome: [CompletionChoice]
        do {
            outcome = try await pipeline.withDeadline {
                try await withThrowingTaskGroup(of: [CompletionChoice].self) { group in
                    for (index, generationRequest) in requests.enumerated() {
                        group.addTask {
                            try await Self.collect(
                                try generator.generate(generationRequest), prompt: prompts[index], n: parameters.n, echo: parameters.echo,
                                tokenizer: generator.tokenizer)
                        }
                    }
                    var all: [CompletionChoice] = []
                    for try await choices in group { all += choices }
                    return all.sorted { $0.index < $1.index }
                }
            }
        } catch {
            let mapped: any Error = (error as? GenerationError).map(InferencePipeline.map) ?? error
            let status = (mapped as? OpenAIError).map { Int($0.status.code) } ?? 500
            await pipeline.meter.settle(pipeline.record(admission, context, principal: principal, model: model, route: route, promptTokens: promptTokens, completionTokens: 0, images: 0, status: status, started: started))
            await pipeline.abandonIdempotent(request, principal: principal)
            throw mapped
        }
        let completionTokens = outcome.reduce(0) { $0 + $1.completionTokens }
        await pipeline.meter.settle(pipeline.record(
            admission, context, principal: principal, model: model, route: route, promptTokens: promptTokens, completionTokens: completionTokens,
            images: 0, status: 200, started: started))
        let usage = Usage(prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens)
        let bytes: [UInt8]
        if chat {
            bytes = try ResponseJSON.encode(ChatCompletion(
                id: id, created: created, model: model,
                choices: outcome.map {
                    .init(index: $0.index, message: .init(role: "assistant", content: $0.text), logprobs: $0.chatLogprobs, finish_reason: $0.finishReason)
                }, usage: usage))
        } else {
            bytes = try ResponseJSON.encode(TextCompletion(
                id: id, created: created, model: model,
                choices: outcome.map { .init(text: $0.text, index: $0.index, logprobs: $0.logprobs, finish_reason: $0.finishReason) },
                usage: usage))
        }
        await pipeline.finishIdempotent(request, principal: principal, status: 200, body: bytes, requestID: context.requestID)
        let elapsed = ContinuousClock.now - started
        headers[HTTPField.Name("openai-processing-ms")!] = String(elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000)  // safe: valid token
        return ResponseJSON.response(bytes, headers: headers)
    }

    /// One finished choice.
    struct CompletionChoice: Sendable {
        var index: Int
        var text: String
        var finishReason: String
        var completionTokens: Int
        var logprobs: CompletionLogprobs?
        var chatLogprobs: ChatLogprobs?
    }

    static func collect(_ stream: GenerationStream, prompt: PromptJob, n: Int, echo: Bool, tokenizer: GPT2Tokenizer) async throws -> [CompletionChoice] {
        var texts = [String](repeating: "", count: n)
        var tokens = [[GeneratedToken]](repeating: [], count: n)
        var reasons = [String](repeating: "length", count: n)
        var counts = [Int](repeating: 0, count: n)
        var promptTokens: [GeneratedToken] = []
        for try await event in stream {
            switch event {
            case .promptTokens(let list): promptTokens = list
            case .delta(let choice, let text, let generated):
                texts[choice] += text
                tokens[choice] += generated
            case .finished(let choice, let reason, let count):
                reasons[choice] = reason.rawValue
                counts[choice] = count
            }
        }
        return (0..<n).map { choice in
            let wantsLogprobs = tokens[choice].contains { $0.logprob != nil }
            let all = (echo ? promptTokens : []) + tokens[choice]
            return CompletionChoice(
                index: prompt.index * n + choice, text: (echo ? prompt.text : "") + texts[choice], finishReason: reasons[choice],
                completionTokens: counts[choice],
                logprobs: wantsLogprobs ? CompletionLogprobs(all, tokenizer: tokenizer, offset: 0) : nil,
                chatLogprobs: wantsLogprobs ? ChatLogprobs(tokens[choice]) : nil)
        }
    }
}

// MARK: - Wire types

struct Usage: Encodable, Sendable {
    var prompt_tokens: Int
    var completion_tokens: Int
    var total_tokens: Int
}

struct TextCompletion: Encodable, Sendable {
    struct Choice: Encodable, Sendable {
        var text: String
        var index: Int
        var logprobs: CompletionLogprobs?
        var finish_reason: String?

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(text, forKey: .text)
            try container.encode(index, forKey: .index)
            try container.encode(logprobs, forKey: .logprobs)
            try container.encode(finish_reason, forKey: .finish_reason)
        }
        enum CodingKeys: String, CodingKey { case text, index, logprobs, finish_reason }
    }
    var id: String
    var object = "text_completion"
    var created: Int
    var model: String
    var choices: [Choice]
    var usage: Usage?
}

struct ChatCompletion: Encodable, Sendable {
    struct Message: Encodable, Sendable {
        var role: String
        var content: String
    }
    struct Choice: Encodable, Sendable {
        var index: Int
        var message: Message
        var logprobs: ChatLogprobs?
        var finish_reason: String

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(index, forKey: .index)
            try container.encode(message, forKey: .message)
            try container.encode(logprobs, forKey: .logprobs)
            try container.encode(finish_reason, forKey: .finish_reason)
        }
        enum CodingKeys: String, CodingKey { case index, message, logprobs, finish_reason }
    }
    var id: String
    var object = "chat.completion"
    var created: Int
    var model: String
    var choices: [Choice]
    var usage: Usage
}

/// The legacy completions `logprobs` object.
struct CompletionLogprobs: Encodable, Sendable {
    var tokens: [String]
    var token_logprobs: [Float?]
    var top_logprobs: [[String: Float]?]
    var text_offset: [Int]

    init(_ generated: [GeneratedToken], tokenizer: GPT2Tokenizer, offset: Int) {
        tokens = generated.map { String(decoding: $0.bytes, as: UTF8.self) }
        token_logprobs = generated.map(\.logprob)
        top_logprobs = generated.map { token in
            token.logprob == nil ? nil : Dictionary(token.top.map { (String(decoding: $0.bytes, as: UTF8.self), $0.logprob) }, uniquingKeysWith: max)
        }
        var position = offset
        text_offset = generated.map { token in
            defer { position += String(decoding: token.bytes, as: UTF8.self).count }
            return position
        }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(tokens, forKey: .tokens)
        try container.encode(token_logprobs, forKey: .token_logprobs)
        try container.encode(top_logprobs, forKey: .top_logprobs)
        try container.encode(text_offset, forKey: .text_offset)
    }
    enum CodingKeys: String, CodingKey { case tokens, token_logprobs, top_logprobs, text_offset }
}

/// The chat `logprobs` object.
struct ChatLogprobs: Encodable, Sendable {
    struct Top: Encodable, Sendable {
        var token: String
        var logprob: Float
        var bytes: [UInt8]
    }
    struct Entry: Encodable, Sendable {
        var token: String
        var logprob: Float
        var bytes: [UInt8]
        var top_logprobs: [Top]
    }
    var content: [Entry]

    init(_ generated: [GeneratedToken]) {
        content = generated.map { token in
            Entry(
                token: String(decoding: token.bytes, as: UTF8.self), logprob: token.logprob ?? 0, bytes: token.bytes,
                top_logprobs: token.top.map { Top(token: String(decoding: $0.bytes, as: UTF8.self), logprob: $0.logprob, bytes: $0.bytes) })
        }
    }
}

/// Server-sent event chunks for both endpoints.
struct StreamChunker: Sendable {
    let id: String
    let created: Int
    let model: String
    let chat: Bool
    let n: Int
    let tokenizer: GPT2Tokenizer

    func event<Value: Encodable>(_ value: Value) throws -> ByteBuffer {
        var buffer = ByteBuffer(string: "data: ")
        buffer.writeBytes(try ResponseJSON.encode(value))
        buffer.writeString("\n\n")
        return buffer
    }

    struct Delta: Encodable, Sendable {
        var role: String?
        var content: String?
    }

    struct ChatChunk: Encodable, Sendable {
        struct Choice: Encodable, Sendable {
            var index: Int
            var delta: Delta
            var logprobs: ChatLogprobs?
            var finish_reason: String?
            func encode(to encoder: any Encoder) throws {
                var container = encoder.container(keyedBy: CodingKeys.self)
                try container.encode(index, forKey: .index)
                try container.encode(delta, forKey: .delta)
                try container.encode(logprobs, forKey: .logprobs)
                try container.encode(finish_reason, forKey: .finish_reason)
            }
            enum CodingKeys: String, CodingKey { case index, delta, logprobs, finish_reason }
        }
        var id: String
        var object = "chat.completion.chunk"
        var created: Int
        var model: String
        var choices: [Choice]
        var usage: Usage?
    }

    func roleChunk(_ choice: Int) throws -> ByteBuffer {
        try event(ChatChunk(id: id, created: created, model: model, choices: [.init(index: choice, delta: Delta(role: "assistant", content: ""), finish_reason: nil)]))
    }

    func textChunk(_ text: String, index: Int) throws -> ByteBuffer {
        try event(TextCompletion(id: id, created: created, model: model, choices: [.init(text: text, index: index, logprobs: nil, finish_reason: nil)]))
    }

    func chunk(for event: GenerationEvent, prompt: Int) throws -> ByteBuffer? {
        switch event {
        case .promptTokens:
            return nil
        case .delta(let choice, let text, let tokens):
            let index = prompt * n + choice
            if chat {
                guard !text.isEmpty || tokens.contains(where: { $0.logprob != nil }) else { return nil }
                let logprobs = tokens.contains { $0.logprob != nil } ? ChatLogprobs(tokens) : nil
                return try self.event(ChatChunk(id: id, created: created, model: model, choices: [.init(index: index, delta: Delta(content: text), logprobs: logprobs, finish_reason: nil)]))
            }
            guard !text.isEmpty || tokens.contains(where: { $0.logprob != nil }) else { return nil }
            let logprobs = tokens.contains { $0.logprob != nil } ? CompletionLogprobs(tokens, tokenizer: tokenizer, offset: 0) : nil
            return try self.event(TextCompletion(id: id, created: created, model: model, choices: [.init(text: text, index: index, logprobs: logprobs, finish_reason: nil)]))
        case .finished(let choice, let reason, _):
            let index = prompt * n + choice
            if chat {
                return try self.event(ChatChunk(id: id, created: created, model: model, choices: [.init(index: index, delta: Delta(), finish_reason: reason.rawValue)]))
            }
            return try self.event(TextCompletion(id: id, created: created, model: model, choices: [.init(text: "", index: index, logprobs: nil, finish_reason: reason.rawValue)]))
        }
    }

    func usageChunk(prompt: Int, completion: Int) throws -> ByteBuffer {
        let usage = Usage(prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion)
        if chat { return try event(ChatChunk(id: id, created: created, model: model, choices: [], usage: usage)) }
        return try event(TextCompletion(id: id, created: created, model: model, choices: [], usage: usage))
    }
}

/// Tokens produced so far by a streaming request.
final class Counter: Sendable {
    private let tokens = Atomic<Int>(0)

    func add(_ count: Int) { tokens.add(count, ordering: .relaxed) }
    var value: Int { tokens.load(ordering: .relaxed) }
}
