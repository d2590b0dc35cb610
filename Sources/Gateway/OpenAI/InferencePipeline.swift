import Foundation
import HTTPTypes
import Hummingbird
import Inference
import Metering
import NIOCore
import Synchronization
import Tenancy

/// A decoded inference request, as a route hands it to the pipeline: the model it names, the
/// OpenAI parameters whose support depends on the engine, and how to prepare its work once the
/// engine is known. Routes only decode into this and encode what the work produces.
struct InferenceCall: Sendable {
    var model: String
    var task: ModelTask
    /// OpenAI's optional parameters the request set (`tools`, `logit_bias`, ...): refused with
    /// 400 by an engine that does not support them, or dropped with `server.dropUnsupportedParams`.
    var optionalParameters: [String: JSONValue] = [:]
    /// Whether the answer streams (server-sent events): no `Idempotency-Key` then.
    var streams = false
    /// The fewest tokens the request can cost (its completion budget), for the tokens-per-minute
    /// check before its prompt is tokenized.
    var minimumTokens = 0
    /// Validates the request against the model and prepares its work without running it:
    /// tokenizing, reading image headers. Client errors thrown here cost nothing.
    var prepare: @Sendable (Engine, ModelInfo) async throws -> PreparedWork
}

/// Work ready to be admitted: its worst case (Metering's rule), and the work itself.
struct PreparedWork: Sendable {
    var worstCase: WorstCase
    /// Runs after admission, under the request deadline. Updates `tally` as it produces, so
    /// that whatever happens next (an error, a disconnect) bills what was produced.
    var run: @Sendable (WorkContext) async throws -> WorkOutput
}

/// What a running work knows of its request.
struct WorkContext: Sendable {
    var requestID: String
    var fairnessKey: String
    var created: Int
    var tally: UsageTally
    /// Headers an engine that forwards the request passes on: the W3C trace context and the
    /// request id.
    var forwardedHeaders: [(String, String)] = []
    /// The credential of an upstream model (by its own name), nil when it needs none.
    var upstreamCredential: @Sendable (String) async throws -> String? = { _ in nil }
}

/// A work's answer: a whole JSON body, or server-sent events written as they come.
enum WorkOutput: Sendable {
    case body([UInt8])
    case events(AsyncThrowingStream<EventChunk, any Error>)
}

/// One piece of a streamed answer and the completion tokens it carries (billed once written).
struct EventChunk: Sendable {
    var bytes: ByteBuffer
    var completionTokens = 0
    /// The status the request is recorded with when the stream ends on this chunk (an error
    /// event of a stream that broke); nil: as it was.
    var status: Int? = nil
}

/// Thrown by a work that found the client's input unusable before doing any work on it (an
/// image that does not decode): the request is answered with `error` and its admission is
/// cancelled — no usage event, the reservation returned — as if it had been refused before.
struct RefusedInput: Error {
    var error: OpenAIError
}

/// The usage a request has produced so far.
final class UsageTally: Sendable {
    private let prompt = Atomic<Int>(0)
    private let completion = Atomic<Int>(0)
    private let images = Atomic<Int>(0)
    private let source = Mutex<UsageSource?>(nil)

    func setPrompt(_ tokens: Int) { prompt.store(tokens, ordering: .relaxed) }
    /// Who counted the tokens, for an engine that is not ModelGate's own.
    func setSource(_ value: UsageSource) { source.withLock { $0 = value } }
    var usageSource: UsageSource? { source.withLock { $0 } }
    func addCompletion(_ tokens: Int) { completion.add(tokens, ordering: .relaxed) }
    func setImages(_ count: Int) { images.store(count, ordering: .relaxed) }

    var promptTokens: Int { prompt.load(ordering: .relaxed) }
    var completionTokens: Int { completion.load(ordering: .relaxed) }
    var imageCount: Int { images.load(ordering: .relaxed) }
}

/// The phases of every inference request, in order, for every route and engine:
///
/// 1. the caller: `inference` scope, a tenant key, and not already over its request rate
///    (decided from memory, before the body is read);
/// 2. the body, within the size limit, decoded strictly by the route;
/// 3. the model, if this key may use it, and the optional parameters its engine supports;
///    the tokens-per-minute check with the request's lower bound;
/// 4. preparation (tokenizing, image headers): client errors still cost nothing;
/// 5. an `Idempotency-Key` replay;
/// 6. the tenant's fair share of the model, then admission (rate limits, concurrency, quota
///    reservation for the worst case);
/// 7. the work, under the deadline;
/// 8. settlement — exactly once for every admitted request, whatever ends it (success, an
///    engine error, the deadline, a client that went away);
/// 9. the payload log (tenants that opted in), the idempotent response, the rate-limit headers.
struct InferencePipeline: Sendable {
    let registry: ModelRegistry
    let meter: any InferenceMetering
    let idempotency: any IdempotentResponses
    let payloadLog: any PayloadRecording
    let maxBodyBytes: Int
    let deadlines: Deadlines
    let dropUnsupportedParams: Bool
    let upstreamCredential: @Sendable (String) async throws -> String?

    init(
        registry: ModelRegistry, meter: any InferenceMetering, idempotency: any IdempotentResponses, payloadLog: any PayloadRecording,
        maxBodyBytes: Int, requestTimeout: Duration, dropUnsupportedParams: Bool,
        upstreamCredential: @escaping @Sendable (String) async throws -> String? = { _ in nil }
    ) {
        self.upstreamCredential = upstreamCredential
        self.registry = registry
        self.meter = meter
        self.idempotency = idempotency
        self.payloadLog = payloadLog
        self.maxBodyBytes = maxBodyBytes
        self.deadlines = Deadlines(timeout: requestTimeout)
        self.dropUnsupportedParams = dropUnsupportedParams
    }

    static let idempotencyHeader = HTTPField.Name("Idempotency-Key")!  // safe: constant, valid token
    static let traceparent = HTTPField.Name("traceparent")!  // safe: constant, valid token
    static let tracestate = HTTPField.Name("tracestate")!  // safe: constant, valid token

    func serve(
        _ request: Request, _ context: GatewayRequestContext, route: String,
        decode: @Sendable ([UInt8], Request) throws -> InferenceCall
    ) async throws -> Response {
        // 1. The caller, before a byte of the body is read.
        let principal = try Self.caller(context)
        try precheck(principal, tokens: 0)
        // 2. The body.
        let body = Array(buffer: try await JSONBody.collect(request, limit: maxBodyBytes))
        let call = try decode(body, request)
        // 3. The model.
        let (info, engine) = try authorize(call.model, task: call.task, principal: principal)
        try checkOptionalParameters(call, engine: engine, model: info.name)
        try precheck(principal, tokens: call.minimumTokens)
        let idempotencyKey = request.headers[Self.idempotencyHeader]
        if call.streams, idempotencyKey != nil {
            throw OpenAIError.invalidRequest("Idempotency-Key cannot be combined with stream=true", param: "stream")
        }
        // 4. Preparation.
        let work: PreparedWork
        do {
            work = try await call.prepare(engine, info)
        } catch {
            throw Self.mapEngineError(error)
        }
        // 5. Replay.
        let idempotent = idempotencyKey.flatMap { key in principal.tenantID.map { (tenant: $0, key: key) } }
        if let idempotent {
            switch try await idempotency.begin(tenant: idempotent.tenant, key: idempotent.key, body: Self.fingerprint(request, body), waitSeconds: 120) {
            case .proceed: break
            case .conflict:
                throw OpenAIError(
                    status: .conflict, message: "This Idempotency-Key was used with a different request body.",
                    type: "invalid_request_error", code: "idempotency_key_reused")
            case .replay(let status, let stored):
                return Response(
                    status: HTTPResponse.Status(code: status),
                    headers: [.contentType: "application/json", HTTPField.Name("Idempotent-Replayed")!: "true"],  // safe: valid token
                    body: .init(byteBuffer: ByteBuffer(bytes: stored)))
            }
        }
        // From here on the idempotency entry is completed or abandoned.
        let abandon: @Sendable () async -> Void = {
            if let idempotent { await idempotency.abandon(tenant: idempotent.tenant, key: idempotent.key) }
        }
        // 6. Fair share, then admission.
        let permit: TenantShares.Permit
        let admission: Admission
        do {
            permit = try await enter(engine, principal: principal)
            do {
                admission = try await admit(
                    UsageEstimate(requestID: context.requestID, model: info.name, worstCase: work.worstCase), principal: principal)
            } catch {
                permit.release()
                throw error
            }
        } catch {
            await abandon()
            throw error
        }
        // 7-9. The work, settled exactly once.
        let started = ContinuousClock.now
        let tally = UsageTally()
        let settlement = Settlement(
            pipeline: self, admission: admission, principal: principal, model: info.name, route: route, access: context.access,
            started: started, tally: tally, permit: permit)
        var forwarded = [("X-Request-ID", context.requestID)]
        for name in [Self.traceparent, Self.tracestate] {
            if let value = request.headers[name] { forwarded.append((name.rawName, value)) }
        }
        let workContext = WorkContext(
            requestID: context.requestID, fairnessKey: admission.tenantID.uuidString, created: Int(Date().timeIntervalSince1970), tally: tally,
            forwardedHeaders: forwarded, upstreamCredential: upstreamCredential)
        var headers = Self.rateLimitHeaders(admission.rateLimits)
        if let trace = request.headers[Self.traceparent] { headers[Self.traceparent] = trace }
        let output: WorkOutput
        do {
            output = try await withDeadline { try await work.run(workContext) }
        } catch let refused as RefusedInput {
            await settlement.cancel()
            await abandon()
            throw refused.error
        } catch {
            let mapped = Self.mapEngineError(error)
            let status = (mapped as? OpenAIError).map { Int($0.status.code) } ?? 500
            await settlement.settle(status: status)
            await abandon()
            // The request that failed, for a tenant that keeps its payloads (no response was sent).
            await logPayload(principal, context: context, model: info.name, route: route, status: status, request: body, response: nil)
            throw mapped
        }
        switch output {
        case .body(let bytes):
            await settlement.settle(status: 200)
            if let idempotent {
                try? await idempotency.complete(tenant: idempotent.tenant, key: idempotent.key, status: 200, body: bytes, requestID: context.requestID)
            }
            await logPayload(principal, context: context, model: info.name, route: route, status: 200, request: body, response: bytes)
            headers[HTTPField.Name("openai-processing-ms")!] = String(Self.milliseconds(since: started))  // safe: valid token
            return ResponseJSON.response(bytes, headers: headers)
        case .events(let chunks):
            headers[.contentType] = "text/event-stream"
            headers[.cacheControl] = "no-cache"
            let pipeline = self
            return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                var sent = ByteBuffer()
                var status = 200
                do {
                    for try await chunk in chunks {
                        try await writer.write(chunk.bytes)
                        tally.addCompletion(chunk.completionTokens)
                        if let ended = chunk.status { status = ended }
                        if principal.payloadLogging { sent.writeImmutableBuffer(chunk.bytes) }
                    }
                    try await writer.finish(nil)
                } catch {
                    // The client went away (ending the iteration cancels the work) or the
                    // work failed: what was written is billed.
                    status = 499
                }
                await settlement.settle(status: status)
                await pipeline.logPayload(
                    principal, context: context, model: info.name, route: route, status: status, request: body, response: Array(buffer: sent))
            })
        }
    }

    // MARK: Phases

    /// The principal, if it may run models at all.
    static func caller(_ context: GatewayRequestContext) throws -> Principal {
        let principal = try context.requirePrincipal()
        guard principal.has(.inference) else {
            throw OpenAIError(
                status: .forbidden, message: "This API key lacks the 'inference' scope.", type: "permission_error", code: "insufficient_scope")
        }
        guard principal.tenantID != nil else {
            throw OpenAIError(status: .forbidden, message: "Operator keys cannot run models; use a tenant key.", type: "permission_error", code: "tenant_key_required")
        }
        return principal
    }

    func precheck(_ principal: Principal, tokens: Int) throws {
        guard let caller = principal.metered else { return }
        do {
            try meter.precheck(caller, tokens: tokens)
        } catch let error as MeteringError {
            GatewayMetrics.rejected("rate_limit")
            throw ErrorMapping.map(error)
        }
    }

    /// The model, if this key may use it; otherwise 404 `model_not_found` (no existence leak).
    func authorize(_ name: String, task: ModelTask, principal: Principal) throws -> (ModelInfo, Engine) {
        guard let info = registry.info(name), ModelAccess.visible(info, to: principal) else {
            throw Self.modelNotFound(name)
        }
        guard let (current, engine) = registry.engine(name) else {
            throw OpenAIError.unavailable("The model '\(name)' is \(info.status.name) and cannot serve requests right now.", retryAfterSeconds: 5)
        }
        guard engine.task == task else {
            throw OpenAIError(
                status: .unprocessableContent,
                message: "The model '\(name)' does \(engine.task.rawValue), not \(task.rawValue); use the matching endpoint.",
                type: "invalid_request_error", param: "model", code: "wrong_model_task")
        }
        return (current, engine)
    }

    static func modelNotFound(_ name: String) -> OpenAIError {
        OpenAIError(
            status: .notFound, message: "The model '\(name)' does not exist or you do not have access to it.", type: "invalid_request_error",
            param: "model", code: "model_not_found")
    }

    /// OpenAI parameters the engine does not support: 400 naming the first, unless the
    /// operator chose to drop them.
    func checkOptionalParameters(_ call: InferenceCall, engine: Engine, model: String) throws {
        guard !dropUnsupportedParams else { return }
        for (name, value) in call.optionalParameters.sorted(by: { $0.key < $1.key }) where value.isSet && !engine.supports(parameter: name) {
            throw OpenAIError.invalidRequest(
                "'\(name)' is not supported by the model '\(model)' (engine \(engine.name)). Leave it out, or ask the operator to set server.dropUnsupportedParams to ignore such parameters.",
                param: name, code: "unsupported_parameter")
        }
    }

    /// Waits for the tenant's share of a model that several tenants are using (`TenantShares`),
    /// then answers 503 before admission when the model's queue would refuse this tenant
    /// anyway: a flood of refused requests then costs no database work and no usage event.
    /// The permit is held until the request is settled.
    func enter(_ engine: Engine, principal: Principal) async throws -> TenantShares.Permit {
        let key = principal.tenantID?.uuidString ?? ""
        let permit: TenantShares.Permit
        do {
            permit = try await engine.shares.acquire(key: key)
        } catch let error as GenerationError {
            GatewayMetrics.rejected("tenant_share")
            throw ErrorMapping.map(error)
        }
        guard engine.accepts(fairnessKey: key) else {
            permit.release()
            GatewayMetrics.rejected("queue_full")
            throw ErrorMapping.map(GenerationError.overloaded("the model's queue is full; retry shortly"))
        }
        return permit
    }

    func admit(_ estimate: UsageEstimate, principal: Principal) async throws -> Admission {
        guard let caller = principal.metered else {
            throw OpenAIError(status: .forbidden, message: "Operator keys cannot run models; use a tenant key.", type: "permission_error", code: "tenant_key_required")
        }
        do {
            return try await meter.admit(estimate, caller: caller)
        } catch let error as MeteringError {
            switch error {
            case .rateLimited: GatewayMetrics.rejected("rate_limit")
            case .quotaExceeded: GatewayMetrics.rejected("quota")
            case .unavailable: GatewayMetrics.rejected("unavailable")
            case .invalid, .notFound: break
            }
            throw ErrorMapping.map(error)
        }
    }

    /// Runs `body` under the request deadline: 504 when it passes (the work is cancelled, and
    /// its end awaited). A caller that goes away cancels the work too.
    func withDeadline<Result: Sendable>(_ body: @escaping @Sendable () async throws -> Result) async throws -> Result {
        let work = Task { try await body() }
        let ticket = deadlines.start { work.cancel() }
        let outcome = await withTaskCancellationHandler { await work.result } onCancel: { work.cancel() }
        guard deadlines.finish(ticket) else {
            throw OpenAIError(
                status: .gatewayTimeout, message: "The request did not finish within \(deadlines.timeout); it was cancelled.",
                type: "server_error", code: "timeout")
        }
        return try outcome.get()
    }

    /// Keeps the request and its response, sealed, for a tenant that opted in. A failure to
    /// log is logged, never the request's failure.
    func logPayload(
        _ principal: Principal, context: GatewayRequestContext, model: String, route: String, status: Int, request: [UInt8], response: [UInt8]?
    ) async {
        guard principal.payloadLogging, let tenant = principal.tenantID else { return }
        do {
            try await payloadLog.record(
                tenant: tenant, requestID: context.requestID, model: model, route: route, status: status, request: request, response: response)
        } catch {
            context.logger.warning("payload log write failed", metadata: ["error": "\(String(reflecting: type(of: error)))"])
        }
    }

    /// What identifies a request body for `Idempotency-Key`: JSON with its keys sorted (a retry
    /// need not serialise an object the same way), multipart parts without the random
    /// boundary, anything else byte for byte.
    static func fingerprint(_ request: Request, _ body: [UInt8]) -> [UInt8] {
        let contentType = request.headers[.contentType] ?? ""
        if contentType.lowercased().hasPrefix("multipart/form-data"), let parts = try? Multipart.parse(body, contentType: contentType) {
            var fingerprint: [UInt8] = Array("multipart".utf8)
            for part in parts {
                for field in [Array((part.name ?? "").utf8), Array((part.filename ?? "").utf8), part.body] {
                    fingerprint += Array(String(field.count).utf8) + [0x3A] + field
                }
            }
            return fingerprint
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(body), options: [.fragmentsAllowed]),
            let canonical = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .fragmentsAllowed])
        else { return body }
        return Array(canonical)
    }

    static func milliseconds(since start: ContinuousClock.Instant) -> Int {
        let elapsed = ContinuousClock.now - start
        return Int(elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000)
    }

    // MARK: Errors

    /// Engine and image errors as OpenAI errors; anything else as it is.
    static func mapEngineError(_ error: any Error) -> any Error {
        switch error {
        case let error as GenerationError: ErrorMapping.map(error)
        case let error as ImageError: ErrorMapping.map(error, param: "image")
        default: error
        }
    }


    /// OpenAI's `x-ratelimit-*` headers and the IETF draft `RateLimit-Policy`/`RateLimit`.
    static func rateLimitHeaders(_ report: RateLimitReport) -> HTTPFields {
        var fields = HTTPFields()
        func duration(_ seconds: Double) -> String {
            let whole = Int(seconds.rounded(.up))
            return whole >= 60 ? "\(whole / 60)m\(whole % 60)s" : "\(whole)s"
        }
        var policies: [String] = []
        var states: [String] = []
        for (name, status) in [("requests", report.requests), ("tokens", report.tokens)] {
            guard let status else { continue }
            fields[HTTPField.Name("x-ratelimit-limit-\(name)")!] = String(status.limit)  // safe: valid token
            fields[HTTPField.Name("x-ratelimit-remaining-\(name)")!] = String(status.remaining)  // safe: valid token
            fields[HTTPField.Name("x-ratelimit-reset-\(name)")!] = duration(status.resetSeconds)  // safe: valid token
            policies.append("\"\(name)\";q=\(status.limit);w=60")
            states.append("\"\(name)\";r=\(status.remaining);t=\(Int(status.resetSeconds.rounded(.up)))")
        }
        if !policies.isEmpty {
            fields[HTTPField.Name("RateLimit-Policy")!] = policies.joined(separator: ", ")  // safe: valid token
            fields[HTTPField.Name("RateLimit")!] = states.joined(separator: ", ")  // safe: valid token
        }
        return fields
    }


}

/// The one settlement of an admitted request: the first `settle` records the usage event
/// (through the meter's spool) and releases the fair-share permit; any later one does nothing.
final class Settlement: Sendable {
    let pipeline: InferencePipeline
    let admission: Admission
    let principal: Principal
    let model: String
    let route: String
    let access: AccessRecord
    let started: ContinuousClock.Instant
    let tally: UsageTally
    let permit: TenantShares.Permit
    private let done = Atomic<Bool>(false)

    init(
        pipeline: InferencePipeline, admission: Admission, principal: Principal, model: String, route: String, access: AccessRecord,
        started: ContinuousClock.Instant, tally: UsageTally, permit: TenantShares.Permit
    ) {
        self.pipeline = pipeline
        self.admission = admission
        self.principal = principal
        self.model = model
        self.route = route
        self.access = access
        self.started = started
        self.tally = tally
        self.permit = permit
    }

    /// Ends the request without a usage event (`RefusedInput`).
    func cancel() async {
        guard !done.exchange(true, ordering: .acquiringAndReleasing) else { return }
        defer { permit.release() }
        await pipeline.meter.cancel(admission)
    }

    func settle(status: Int) async {
        guard !done.exchange(true, ordering: .acquiringAndReleasing) else { return }
        defer { permit.release() }
        let (prompt, completion, images) = (tally.promptTokens, tally.completionTokens, tally.imageCount)
        access.usage(model: model, promptTokens: prompt, completionTokens: completion, images: images)
        await pipeline.meter.settle(SettlementRecord(
            requestID: admission.requestID, tenantID: admission.tenantID, keyID: principal.keyID, model: model, route: route,
            promptTokens: prompt, completionTokens: completion, images: images, status: status,
            latencyMs: InferencePipeline.milliseconds(since: started), usageSource: tally.usageSource))
    }
}

extension JSONValue {
    /// Whether an optional parameter asks for something: null, `false`, and empty lists or
    /// objects ask for nothing (clients send `logit_bias: {}` or `store: false` by default).
    var isSet: Bool {
        switch self {
        case .null: false
        case .bool(let value): value
        case .array(let values): !values.isEmpty
        case .object(let members): !members.isEmpty
        case .string(let text): !text.isEmpty
        case .number: true
        }
    }
}

extension HTTPFields {
    func merging(_ other: HTTPFields) -> HTTPFields {
        var merged = self
        for field in other { merged[field.name] = field.value }
        return merged
    }
}

/// JSON for responses: sorted keys, no escaped slashes.
enum ResponseJSON {
    static func encode<Value: Encodable>(_ value: Value) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(value))
    }

    static func response(_ bytes: [UInt8], status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        var fields = headers
        fields[.contentType] = "application/json"
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}

/// A value that is either one thing or a list of it (OpenAI's `prompt`, `input`, `stop`).
enum OneOrMany<Element: Decodable & Sendable>: Decodable, Sendable {
    case one(Element)
    case many([Element])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let list = try? container.decode([Element].self) {
            self = .many(list)
        } else {
            self = .one(try container.decode(Element.self))
        }
    }

    var list: [Element] {
        switch self {
        case .one(let element): [element]
        case .many(let elements): elements
        }
    }
}

/// OpenAI's prompt/input forms: text, texts, token ids, lists of token ids.
enum PromptInput: Decodable, Sendable {
    case texts([String])
    case tokens([[Int]])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let text = try? container.decode(String.self) {
            self = .texts([text])
        } else if let texts = try? container.decode([String].self) {
            self = .texts(texts)
        } else if let tokens = try? container.decode([Int].self) {
            self = .tokens([tokens])
        } else if let lists = try? container.decode([[Int]].self) {
            self = .tokens(lists)
        } else {
            throw DecodingError.typeMismatch(
                String.self, .init(codingPath: decoder.codingPath, debugDescription: "expected a string, a list of strings, or token ids"))
        }
    }

    var count: Int {
        switch self {
        case .texts(let texts): texts.count
        case .tokens(let lists): lists.count
        }
    }
}

/// OpenAI's optional parameters of one request, read (so the strict decoder knows them) and
/// kept as sent, for the engine to accept or refuse.
struct OptionalParameters: Sendable {
    var values: [String: JSONValue]

    init(from decoder: any Decoder, names: [String]) throws {
        let container = try decoder.container(keyedBy: StrictJSON.AnyKey.self)
        var values: [String: JSONValue] = [:]
        for name in names {
            let key = StrictJSON.AnyKey(stringValue: name)
            if container.contains(key) { values[name] = try container.decode(JSONValue.self, forKey: key) }
        }
        self.values = values
    }
}
