import Foundation
import HTTPTypes
import Hummingbird
import Inference
import Metering
import Synchronization
import Tenancy
import Upstream

/// `POST /v1/completions` and `POST /v1/chat/completions`, OpenAI-compatible, streaming as
/// server-sent events. The routes decode requests into text-generation work and encode its
/// events; every phase around it (authorisation, admission, settlement...) is the pipeline's.
struct CompletionsRoutes {
    let pipeline: InferencePipeline

    /// OpenAI parameters of the completions API that a model's engine may not support.
    static let completionOptionals = ["logit_bias", "suffix"]
    /// OpenAI parameters of the chat API that a model's engine may not support.
    static let chatOptionals = [
        "tools", "tool_choice", "parallel_tool_calls", "functions", "function_call", "response_format", "logit_bias", "modalities",
        "audio", "prediction", "reasoning_effort", "verbosity", "web_search_options", "store", "metadata", "service_tier",
    ]

    struct StreamOptions: Decodable, Sendable {
        var include_usage: Bool?
        var include_obfuscation: Bool?
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
        /// End-user identifiers OpenAI takes for abuse monitoring and caching: accepted, unused.
        var user: String?
        var safety_identifier: String?
        var prompt_cache_key: String?

        /// The request's parameters; those it leaves out come from the model's manifest.
        func parameters(defaults: SamplingParameters) -> SamplingParameters {
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

        /// The completion budget the request asks for, before the model is known (its lower bound).
        var requestedTokens: Int { max(0, max_completion_tokens ?? max_tokens ?? 0) * max(1, n ?? 1) }
    }

    struct CompletionRequest: Decodable, Sendable {
        var model: String
        var prompt: PromptInput?
        var echo: Bool?
        var logprobs: Int?
        var best_of: Int?
        var sampling: Sampling
        var optional: OptionalParameters

        enum CodingKeys: String, CodingKey { case model, prompt, echo, logprobs, best_of }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            model = try container.decode(String.self, forKey: .model)
            prompt = try container.decodeIfPresent(PromptInput.self, forKey: .prompt)
            echo = try container.decodeIfPresent(Bool.self, forKey: .echo)
            logprobs = try container.decodeIfPresent(Int.self, forKey: .logprobs)
            best_of = try container.decodeIfPresent(Int.self, forKey: .best_of)
            sampling = try Sampling(from: decoder)
            optional = try OptionalParameters(from: decoder, names: CompletionsRoutes.completionOptionals)
            // best_of equal to n is what every engine does; anything else is an optional feature.
            if let best_of, best_of != (sampling.n ?? 1) { optional.values["best_of"] = .number(Double(best_of)) }
        }
    }

    struct ChatMessage: Decodable, Sendable {
        struct Part: Decodable, Sendable {
            var type: String
            var text: String?
            var image_url: JSONValue?
            var input_audio: JSONValue?
            var file: JSONValue?
            var refusal: String?
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
        /// A participant's name: accepted, unused by the plain template.
        var name: String?
        var refusal: String?
        var tool_calls: JSONValue?
        var tool_call_id: String?
        var function_call: JSONValue?
        var audio: JSONValue?

        var text: String {
            switch content {
            case .text(let text): text
            case .parts(let parts): parts.filter { $0.type == "text" }.compactMap(\.text).joined(separator: "\n")
            case nil: ""
            }
        }

        /// What this message asks for beyond text (tool calls, images, audio...), as optional
        /// parameters named by their place (`messages[2].tool_calls`).
        func optionalParameters(index: Int) -> [String: JSONValue] {
            var found: [String: JSONValue] = [:]
            let prefix = "messages[\(index)]."
            if let tool_calls { found[prefix + "tool_calls"] = tool_calls }
            if let tool_call_id { found[prefix + "tool_call_id"] = .string(tool_call_id) }
            if let function_call { found[prefix + "function_call"] = function_call }
            if let audio { found[prefix + "audio"] = audio }
            if case .parts(let parts) = content {
                for (number, part) in parts.enumerated() where part.type != "text" {
                    found[prefix + "content[\(number)]"] = .string(part.type)
                }
            }
            return found
        }
    }

    struct ChatRequest: Decodable, Sendable {
        var model: String
        var messages: [ChatMessage]
        var logprobs: Bool?
        var top_logprobs: Int?
        var sampling: Sampling
        var optional: OptionalParameters

        enum CodingKeys: String, CodingKey { case model, messages, logprobs, top_logprobs }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            model = try container.decode(String.self, forKey: .model)
            messages = try container.decode([ChatMessage].self, forKey: .messages)
            logprobs = try container.decodeIfPresent(Bool.self, forKey: .logprobs)
            top_logprobs = try container.decodeIfPresent(Int.self, forKey: .top_logprobs)
            sampling = try Sampling(from: decoder)
            optional = try OptionalParameters(from: decoder, names: CompletionsRoutes.chatOptionals)
            for (index, message) in messages.enumerated() {
                optional.values.merge(message.optionalParameters(index: index)) { $1 }
            }
        }

        /// The prompt's tokens for an upstream model, counted or bounded (`promptTokens`): each
        /// message's text and what it carries beyond text (tool calls, parts), the tools the
        /// request defines, and the template's overhead per message and for the answer's start.
        func promptBound(_ upstream: UpstreamEngine) -> Int {
            var tokens = upstream.messageOverheadTokens
            for (index, message) in messages.enumerated() {
                tokens += upstream.messageOverheadTokens + upstream.promptTokens(message.text)
                for (_, value) in message.optionalParameters(index: index) { tokens += upstream.promptTokens(value.jsonText) }
            }
            for name in ["tools", "functions", "response_format"] {
                if let value = optional.values[name] { tokens += upstream.promptTokens(value.jsonText) }
            }
            return tokens
        }
    }

    func register(on group: RouterGroup<GatewayRequestContext>) {
        group.post("completions") { request, context in
            try await pipeline.serve(request, context, route: "/v1/completions") { body, _ in try Self.completionCall(body) }
        }
        group.post("chat/completions") { request, context in
            try await pipeline.serve(request, context, route: "/v1/chat/completions") { body, _ in try Self.chatCall(body) }
        }
    }

    // MARK: Decoding into work

    /// One prompt's generation, as the route sees it.
    struct PromptJob: Sendable {
        var index: Int
        var tokens: [Int]
        var text: String
    }

    static func completionCall(_ body: [UInt8]) throws -> InferenceCall {
        let decoded = try JSONBody.decode(CompletionRequest.self, body)
        let sampling = decoded.sampling
        return InferenceCall(
            model: decoded.model, task: .textGeneration, optionalParameters: decoded.optional.values, streams: sampling.stream ?? false,
            minimumTokens: sampling.requestedTokens * max(1, decoded.prompt?.count ?? 1)
        ) { engine, info in
            if let upstream = engine.upstream {
                let prompts: [Int]
                switch decoded.prompt ?? .texts([""]) {
                case .texts(let texts):
                    guard (1...64).contains(texts.count) else { throw OpenAIError.invalidRequest("prompt must hold 1 to 64 prompts", param: "prompt") }
                    prompts = texts.map(upstream.promptTokens)
                case .tokens(let lists):
                    guard (1...64).contains(lists.count) else { throw OpenAIError.invalidRequest("prompt must hold 1 to 64 prompts", param: "prompt") }
                    prompts = lists.map(\.count)
                }
                return try UpstreamWork.generation(
                    upstream, info: info, clientModel: decoded.model, route: .completions, body: body,
                    requestedMaxTokens: sampling.max_completion_tokens ?? sampling.max_tokens, choices: max(sampling.n ?? 1, decoded.best_of ?? 1),
                    promptTokens: prompts, stream: sampling.stream ?? false, clientWantsUsage: sampling.stream_options?.include_usage ?? false
                ).prepared()
            }
            guard case .text(let generator) = engine else { throw InferencePipeline.modelNotFound(decoded.model) }
            var parameters = sampling.parameters(defaults: generator.defaults)
            parameters.logprobs = decoded.logprobs
            parameters.echo = decoded.echo ?? false
            let prompts: [PromptJob]
            switch decoded.prompt ?? .texts([""]) {
            case .texts(let texts):
                guard (1...64).contains(texts.count) else { throw OpenAIError.invalidRequest("prompt must hold 1 to 64 prompts", param: "prompt") }
                prompts = texts.enumerated().map { PromptJob(index: $0.offset, tokens: generator.tokenizer.encode($0.element), text: $0.element) }
            case .tokens(let lists):
                guard (1...64).contains(lists.count) else { throw OpenAIError.invalidRequest("prompt must hold 1 to 64 prompts", param: "prompt") }
                prompts = lists.enumerated().map { PromptJob(index: $0.offset, tokens: $0.element, text: generator.tokenizer.decode($0.element)) }
            }
            return try TextWork(
                generator: generator, model: decoded.model, prompts: prompts, parameters: parameters, chat: false,
                includeUsage: sampling.stream_options?.include_usage ?? false, stream: sampling.stream ?? false
            ).prepared()
        }
    }

    static func chatCall(_ body: [UInt8]) throws -> InferenceCall {
        let decoded = try JSONBody.decode(ChatRequest.self, body)
        let sampling = decoded.sampling
        return InferenceCall(
            model: decoded.model, task: .textGeneration, optionalParameters: decoded.optional.values, streams: sampling.stream ?? false,
            minimumTokens: sampling.requestedTokens
        ) { engine, info in
            if let upstream = engine.upstream {
                return try UpstreamWork.generation(
                    upstream, info: info, clientModel: decoded.model, route: .chat, body: body,
                    requestedMaxTokens: sampling.max_completion_tokens ?? sampling.max_tokens, choices: sampling.n ?? 1,
                    promptTokens: [decoded.promptBound(upstream)], stream: sampling.stream ?? false,
                    clientWantsUsage: sampling.stream_options?.include_usage ?? false
                ).prepared()
            }
            guard case .text(let generator) = engine else { throw InferencePipeline.modelNotFound(decoded.model) }
            var parameters = sampling.parameters(defaults: generator.defaults)
            if decoded.logprobs == true { parameters.logprobs = decoded.top_logprobs ?? 0 }
            for stop in generator.chatFormat.stopSequences where parameters.stop.count < 4 { parameters.stop.append(stop) }
            let prompt = try generator.chatFormat.render(decoded.messages.map { ChatTurn(role: $0.role, content: $0.text) })
            return try TextWork(
                generator: generator, model: decoded.model, prompts: [PromptJob(index: 0, tokens: generator.tokenizer.encode(prompt), text: prompt.text)],
                parameters: parameters, chat: true, includeUsage: sampling.stream_options?.include_usage ?? false, stream: sampling.stream ?? false
            ).prepared()
        }
    }
}

/// Text generation for one request: its prompts, run together, answered as one body or as
/// server-sent events.
struct TextWork: Sendable {
    let generator: TextGenerator
    /// The model as the client named it (an alias, maybe): what responses say, as OpenAI's do.
    let model: String
    let prompts: [CompletionsRoutes.PromptJob]
    let parameters: SamplingParameters
    let chat: Bool
    let includeUsage: Bool
    let stream: Bool

    /// Validated, with the worst case: every choice of every prompt at its `max_tokens`.
    func prepared() throws -> PreparedWork {
        var maxTokens = 0
        for prompt in prompts {
            do {
                maxTokens = max(maxTokens, try generator.validate(GenerationRequest(prompt: prompt.tokens, parameters: parameters)))
            } catch let error as GenerationError {
                // The prompt is `prompt` in the completions API and `messages` in chat.
                var mapped = ErrorMapping.map(error)
                if mapped.param == "prompt", chat { mapped.param = "messages" }
                throw mapped
            }
        }
        let promptTokens = prompts.reduce(0) { $0 + $1.tokens.count }
        return PreparedWork(
            worstCase: .generation(promptTokens: promptTokens, maxTokens: maxTokens, choices: parameters.n, prompts: prompts.count),
            run: { context in try await self.run(context, promptTokens: promptTokens) })
    }

    func run(_ context: WorkContext, promptTokens: Int) async throws -> WorkOutput {
        context.tally.setPrompt(promptTokens)
        let generations = try prompts.map { try generator.generate(GenerationRequest(prompt: $0.tokens, parameters: parameters, fairnessKey: context.fairnessKey)) }
        let id = (chat ? "chatcmpl-" : "cmpl-") + context.requestID
        let chunker = StreamChunker(id: id, created: context.created, model: model, chat: chat, n: parameters.n, tokenizer: generator.tokenizer)
        if stream { return .events(events(generations, chunker: chunker, promptTokens: promptTokens)) }
        return .body(try await body(generations, id: id, created: context.created, promptTokens: promptTokens, tally: context.tally))
    }

    /// Every prompt's events merged in arrival order, as chunks; the iteration's end (the
    /// client went away) cancels generation.
    func events(_ generations: [GenerationStream], chunker: StreamChunker, promptTokens: Int) -> AsyncThrowingStream<EventChunk, any Error> {
        let (chunks, output) = AsyncThrowingStream.makeStream(of: EventChunk.self)
        let (prompts, parameters, chat, includeUsage) = (self.prompts, self.parameters, self.chat, self.includeUsage)
        let producer = Task {
            do {
                if chat {
                    for choice in 0..<(parameters.n * prompts.count) { output.yield(EventChunk(bytes: try chunker.roleChunk(choice))) }
                }
                if parameters.echo && !chat {
                    for prompt in prompts {
                        for choice in 0..<parameters.n {
                            output.yield(EventChunk(bytes: try chunker.textChunk(prompt.text, index: prompt.index * parameters.n + choice)))
                        }
                    }
                }
                let (merged, input) = AsyncThrowingStream.makeStream(of: (Int, GenerationEvent).self)
                let feeder = Task {
                    do {
                        try await withThrowingTaskGroup(of: Void.self) { group in
                            for (promptIndex, generation) in generations.enumerated() {
                                group.addTask { for try await event in generation { input.yield((promptIndex, event)) } }
                            }
                            try await group.waitForAll()
                        }
                        input.finish()
                    } catch {
                        input.finish(throwing: error)
                    }
                }
                var produced = 0
                do {
                    for try await (promptIndex, event) in merged {
                        var tokens = 0
                        if case .delta(_, _, let generated) = event { tokens = generated.count }
                        produced += tokens
                        if let chunk = try chunker.chunk(for: event, prompt: promptIndex) {
                            output.yield(EventChunk(bytes: chunk, completionTokens: tokens))
                        } else if tokens > 0 {
                            output.yield(EventChunk(bytes: ByteBuffer(), completionTokens: tokens))
                        }
                    }
                } catch {
                    feeder.cancel()
                    throw error
                }
                if includeUsage { output.yield(EventChunk(bytes: try chunker.usageChunk(prompt: promptTokens, completion: produced))) }
                output.yield(EventChunk(bytes: ByteBuffer(string: "data: [DONE]\n\n")))
                output.finish()
            } catch {
                for generation in generations { generation.cancel() }
                output.finish(throwing: error)
            }
        }
        output.onTermination = { _ in
            producer.cancel()
            for generation in generations { generation.cancel() }
        }
        return chunks
    }

    /// Every choice of every prompt, collected into one response. Completion tokens count into
    /// `tally` as they arrive, so a request cut short (the deadline) bills what it produced.
    func body(_ generations: [GenerationStream], id: String, created: Int, promptTokens: Int, tally: UsageTally) async throws -> [UInt8] {
        let (prompts, parameters, tokenizer) = (self.prompts, self.parameters, generator.tokenizer)
        let outcome = try await withThrowingTaskGroup(of: [CompletionChoice].self) { group in
            for (index, generation) in generations.enumerated() {
                group.addTask {
                    try await Self.collect(
                        generation, prompt: prompts[index], n: parameters.n, echo: parameters.echo, logprobs: parameters.logprobs != nil,
                        tokenizer: tokenizer, tally: tally)
                }
            }
            var all: [CompletionChoice] = []
            for try await choices in group { all += choices }
            return all.sorted { $0.index < $1.index }
        }
        let completionTokens = outcome.reduce(0) { $0 + $1.completionTokens }
        let usage = Usage(prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens)
        if chat {
            return try ResponseJSON.encode(ChatCompletion(
                id: id, created: created, model: model,
                choices: outcome.map {
                    .init(index: $0.index, message: .init(role: "assistant", content: $0.text), logprobs: $0.chatLogprobs, finish_reason: $0.finishReason)
                }, usage: usage))
        }
        return try ResponseJSON.encode(TextCompletion(
            id: id, created: created, model: model,
            choices: outcome.map { .init(text: $0.text, index: $0.index, logprobs: $0.logprobs, finish_reason: $0.finishReason) },
            usage: usage))
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

    static func collect(
        _ stream: GenerationStream, prompt: CompletionsRoutes.PromptJob, n: Int, echo: Bool, logprobs wantsLogprobs: Bool,
        tokenizer: BPETokenizer, tally: UsageTally
    ) async throws -> [CompletionChoice] {
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
                tally.addCompletion(generated.count)
            case .finished(let choice, let reason, let count):
                reasons[choice] = reason.rawValue
                counts[choice] = count
                // The count includes an end-of-text token, which no delta carries.
                tally.addCompletion(count - tokens[choice].count)
            }
        }
        return (0..<n).map { choice in
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

        /// `refusal` is required by OpenAI's schema: `null`, as this server never refuses.
        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(role, forKey: .role)
            try container.encode(content, forKey: .content)
            try container.encodeNil(forKey: .refusal)
        }
        enum CodingKeys: String, CodingKey { case role, content, refusal }
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

    init(_ generated: [GeneratedToken], tokenizer: BPETokenizer, offset: Int) {
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

    /// `refusal` (the refusal's tokens) is required by OpenAI's schema: `null` here.
    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(content, forKey: .content)
        try container.encodeNil(forKey: .refusal)
    }
    enum CodingKeys: String, CodingKey { case content, refusal }

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
    let tokenizer: BPETokenizer

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
