import Foundation
import HTTPTypes
import Inference
import Metering
import NIOCore
import Upstream

extension Engine {
    /// The upstream engine, when this model is served by remote servers.
    var upstream: UpstreamEngine? {
        if case .external(let engine) = self { return engine as? UpstreamEngine }
        return nil
    }
}

/// A request for an upstream model: the client's body, rewritten for the upstream (its model
/// name, a completion budget equal to what is reserved, usage asked for when streaming), sent,
/// and its answer passed back with the name the client used. Quotas stay exact with an engine
/// ModelGate does not control: the reservation bounds what is billed, whatever the upstream
/// reports (the excess is logged and counted).
struct UpstreamWork: Sendable {
    let engine: UpstreamEngine
    /// The model's own name (its credential's key).
    let model: String
    let route: UpstreamRoute
    /// The model as the client named it (an alias, maybe): what responses say.
    let clientModel: String
    let body: [UInt8]
    let stream: Bool
    /// Whether the client asked for the usage chunk of a stream (ModelGate always asks).
    let clientWantsUsage: Bool
    /// What was reserved: the most that is billed.
    let worstCase: WorstCase

    var reservedPrompt: Int { worstCase.promptTokens }
    /// Completion tokens reserved for the whole request (every prompt and choice).
    var reservedCompletion: Int { worstCase.maxCompletionTokens }

    /// Reads the request again as a JSON object (the route has already decoded it strictly).
    static func object(_ body: [UInt8]) throws -> [String: Any] {
        guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
            throw OpenAIError.invalidRequest("The request body must be a JSON object.")
        }
        return object
    }

    /// `POST /v1/completions` and `/v1/chat/completions` for an upstream model: the budget is
    /// the client's `max_tokens` (or `max_completion_tokens`), else the manifest's default.
    static func generation(
        _ engine: UpstreamEngine, info: ModelInfo, clientModel: String, route: UpstreamRoute, body: [UInt8], requestedMaxTokens: Int?,
        choices: Int, promptTokens: [Int], stream: Bool, clientWantsUsage: Bool
    ) throws -> UpstreamWork {
        guard engine.routes.contains(route) else {
            throw OpenAIError.invalidRequest("The model '\(clientModel)' is not served on this route.", param: "model", code: "unsupported_route")
        }
        let maxTokens = requestedMaxTokens ?? engine.defaultMaxTokens
        guard maxTokens >= 0 else { throw OpenAIError.invalidRequest("max_tokens must be at least 0", param: "max_tokens") }
        guard (1...128).contains(choices) else { throw OpenAIError.invalidRequest("n must be 1 to 128", param: "n") }
        let object = try object(body)
        var members: [(key: String, json: [UInt8])] = [
            ("model", JSONSplice.string(engine.upstreamModel ?? info.name)),
            (object["max_completion_tokens"] != nil ? "max_completion_tokens" : "max_tokens", Array(String(maxTokens).utf8)),
        ]
        if stream {
            var options = object["stream_options"] as? [String: Any] ?? [:]
            options["include_usage"] = true
            members.append(("stream_options", try Self.encode(options)))
        }
        return UpstreamWork(
            engine: engine, model: info.name, route: route, clientModel: clientModel, body: try Self.rewritten(body, object, members), stream: stream,
            clientWantsUsage: clientWantsUsage,
            worstCase: .generation(promptTokens: promptTokens.reduce(0, +), maxTokens: maxTokens, choices: choices, prompts: max(1, promptTokens.count)))
    }

    /// `POST /v1/embeddings` for an upstream model.
    static func embedding(_ engine: UpstreamEngine, info: ModelInfo, clientModel: String, body: [UInt8], promptTokens: Int) throws -> UpstreamWork {
        let members = [(key: "model", json: JSONSplice.string(engine.upstreamModel ?? info.name))]
        return UpstreamWork(
            engine: engine, model: info.name, route: .embeddings, clientModel: clientModel,
            body: try Self.rewritten(body, try object(body), members), stream: false, clientWantsUsage: false,
            worstCase: .embedding(tokens: promptTokens))
    }

    func prepared() -> PreparedWork {
        PreparedWork(worstCase: worstCase) { context in try await self.run(context) }
    }

    func run(_ context: WorkContext) async throws -> WorkOutput {
        let request = UpstreamRequest(
            route: route, body: body, stream: stream, credential: try await context.upstreamCredential(model), headers: context.forwardedHeaders)
        let reply: UpstreamReply
        do {
            reply = try await engine.send(request)
        } catch {
            throw mapped(error)
        }
        switch reply {
        case .body(let bytes):
            guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
                throw mapped(UpstreamError.failed("the upstream's answer is not a JSON object"))
            }
            let usage = object["usage"] as? [String: Any]
            let completion: Int
            if let reported = usage?["completion_tokens"] as? Int {
                completion = reported
                context.tally.setSource(.upstream)
            } else if route == .embeddings {
                completion = 0
                context.tally.setSource(usage?["prompt_tokens"] is Int ? .upstream : engine.countsLocally ? .counted : .bound)
            } else if engine.countsLocally {
                completion = Self.texts(object).reduce(0) { $0 + (engine.completionTokens($1) ?? 0) }
                context.tally.setSource(.counted)
            } else {
                completion = reservedCompletion
                context.tally.setSource(.bound)
            }
            let billed = billed(prompt: usage?["prompt_tokens"] as? Int ?? reservedPrompt, completion: completion)
            context.tally.setPrompt(billed.prompt)
            context.tally.addCompletion(billed.completion)
            return .body(try Self.rewritten(bytes, object, [("model", JSONSplice.string(clientModel))]))
        case .events(let events):
            return .events(relay(events, tally: context.tally))
        }
    }

    /// What is billed of what the upstream reported: at most what was reserved. The excess is
    /// logged and counted, not billed.
    func billed(prompt: Int, completion: Int) -> (prompt: Int, completion: Int) {
        let billed = (prompt: min(max(0, prompt), reservedPrompt), completion: min(max(0, completion), reservedCompletion))
        let excess = (max(0, prompt) - billed.prompt) + (max(0, completion) - billed.completion)
        if excess > 0 { engine.recordExcess(excess) }
        return billed
    }

    /// The upstream's events, passed on as they arrive with the client's model name: completion
    /// tokens counted as they are written (with the manifest's tokenizer, or one per chunk that
    /// carries text), then set to the upstream's usage when it reports it. Without a report, the
    /// local count stands where a tokenizer made it, else the reservation is billed. A stream
    /// that breaks ends with an error event.
    func relay(_ events: AsyncThrowingStream<[UInt8], any Error>, tally: UsageTally) -> AsyncThrowingStream<EventChunk, any Error> {
        let (chunks, output) = AsyncThrowingStream.makeStream(of: EventChunk.self)
        let work = self
        let producer = Task {
            var counted = 0
            var reported = false
            var started = false
            do {
                for try await data in events {
                    if data.elementsEqual("[DONE]".utf8) {
                        output.yield(EventChunk(bytes: ByteBuffer(string: "data: [DONE]\n\n")))
                        continue
                    }
                    guard let object = try? JSONSerialization.jsonObject(with: Data(data)) as? [String: Any] else {
                        throw UpstreamError.failed("the upstream sent an event that is not a JSON object")
                    }
                    if !started {
                        started = true
                        tally.setPrompt(work.reservedPrompt)
                        tally.setSource(.counted)
                    }
                    if object["error"] != nil {
                        output.yield(EventChunk(bytes: Self.event(object), status: 502))
                        output.finish()
                        return
                    }
                    var removeUsage = false
                    var tokens = 0
                    for text in Self.texts(object) where !text.isEmpty && !reported {
                        tokens += work.engine.completionTokens(text) ?? 1
                    }
                    tokens = max(0, min(tokens, work.reservedCompletion - counted))
                    counted += tokens
                    if let usage = object["usage"] as? [String: Any], let completion = usage["completion_tokens"] as? Int {
                        // The upstream's count replaces the local one (written chunks carry
                        // the difference into the tally).
                        reported = true
                        tally.setSource(.upstream)
                        let billed = work.billed(prompt: usage["prompt_tokens"] as? Int ?? work.reservedPrompt, completion: completion)
                        tally.setPrompt(billed.prompt)
                        tokens += billed.completion - counted
                        counted = billed.completion
                        if !work.clientWantsUsage {
                            removeUsage = true
                            guard let choices = object["choices"] as? [Any], !choices.isEmpty else {
                                output.yield(EventChunk(bytes: ByteBuffer(), completionTokens: tokens))
                                continue
                            }
                        }
                    }
                    let rewritten = try Self.rewritten(data, object, [("model", work.clientModelJSON)], remove: removeUsage ? ["usage"] : [])
                    var event = ByteBuffer(string: "data: ")
                    event.writeBytes(rewritten)
                    event.writeString("\n\n")
                    output.yield(EventChunk(bytes: event, completionTokens: tokens))
                }
                if started, !reported, !work.engine.countsLocally {
                    // Neither usage nor a tokenizer: the reservation's upper bound.
                    tally.setSource(.bound)
                    output.yield(EventChunk(bytes: ByteBuffer(), completionTokens: work.reservedCompletion - counted))
                }
                output.finish()
            } catch {
                if error is CancellationError || Task.isCancelled {
                    output.finish(throwing: CancellationError())
                    return
                }
                let failure = work.mapped(error)
                let body = ["error": ["message": failure.message, "type": failure.type, "code": failure.code ?? "upstream_error"]]
                output.yield(EventChunk(bytes: Self.event(body), status: Int(failure.status.code)))
                output.finish()
            }
        }
        output.onTermination = { _ in producer.cancel() }
        return chunks
    }

    /// The text of each choice of a response or chunk (`text`, `message.content` or
    /// `delta.content`).
    static func texts(_ object: [String: Any]) -> [String] {
        (object["choices"] as? [[String: Any]] ?? []).compactMap { choice in
            (choice["text"] as? String) ?? ((choice["message"] as? [String: Any])?["content"] as? String)
                ?? ((choice["delta"] as? [String: Any])?["content"] as? String)
        }
    }

    /// `bytes` (the JSON object `object` was read from) with `set`'s top-level members replaced
    /// or added and `remove`'s taken out, every other byte as it was; re-encoded only when the
    /// scanner cannot follow the bytes.
    static func rewritten(
        _ bytes: [UInt8], _ object: [String: Any], _ set: [(key: String, json: [UInt8])], remove: Set<String> = []
    ) throws -> [UInt8] {
        if let splice = JSONSplice(bytes) { return splice.edited(set: set, remove: remove) }
        var object = object
        for (key, json) in set { object[key] = try JSONSerialization.jsonObject(with: Data(json), options: .fragmentsAllowed) }
        for key in remove { object[key] = nil }
        return try encode(object)
    }

    /// The client's name for the model as a JSON string.
    var clientModelJSON: [UInt8] { JSONSplice.string(clientModel) }

    static func encode(_ object: Any) throws -> [UInt8] {
        Array(try JSONSerialization.data(withJSONObject: object, options: [.withoutEscapingSlashes]))
    }

    static func event(_ object: Any) -> ByteBuffer {
        var buffer = ByteBuffer(string: "data: ")
        buffer.writeBytes((try? encode(object)) ?? Array("{}".utf8))
        buffer.writeString("\n\n")
        return buffer
    }

    /// An upstream's failure as the client sees it: its own 4xx with its message; 502 or 504
    /// naming the model, never the upstream's address.
    func mapped(_ error: any Error) -> OpenAIError {
        if let error = error as? OpenAIError { return error }
        guard let error = error as? UpstreamError else {
            return OpenAIError(status: .badGateway, message: "The model '\(clientModel)' failed upstream.", type: "server_error", code: "upstream_error")
        }
        switch error {
        case .rejected(let status, let message, let type, let code, let param):
            return OpenAIError(
                status: HTTPResponse.Status(code: status), message: message, type: type ?? "invalid_request_error", param: param, code: code)
        case .timedOut:
            return OpenAIError(
                status: .gatewayTimeout, message: "The model '\(clientModel)' did not answer in time upstream.", type: "server_error", code: "upstream_timeout")
        case .unavailable:
            return .unavailable("No upstream server of the model '\(clientModel)' is available; retry shortly.", retryAfterSeconds: 5)
        case .failed(let reason):
            return OpenAIError(status: .badGateway, message: "The model '\(clientModel)' failed upstream: \(reason).", type: "server_error", code: "upstream_error")
        case .cancelled:
            return OpenAIError(status: .badGateway, message: "The request to the model '\(clientModel)' was cancelled.", type: "server_error", code: "upstream_error")
        }
    }
}

extension JSONValue {
    /// The value as compact JSON text.
    var jsonText: String {
        (try? JSONEncoder().encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? ""
    }
}
