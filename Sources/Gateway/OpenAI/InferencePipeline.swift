import Foundation
import HTTPTypes
import Hummingbird
import Inference
import Metering
import Tenancy

/// The steps every inference request takes: authorise (scope, model visibility, the key's
/// allow-list, task) -> admit (rate limits, concurrency, quota reservation) -> run -> settle
/// (exactly one usage event, also on failure or disconnect) -> respond with usage headers.
struct InferencePipeline: Sendable {
    let registry: ModelRegistry
    let meter: Meter
    let idempotency: IdempotencyStore
    let maxBodyBytes: Int
    let requestTimeout: Duration

    /// The model, if this key may use it; otherwise 404 `model_not_found` (no existence leak).
    func authorize(_ name: String, task: ModelTask, principal: Principal) throws -> (ModelInfo, Engine) {
        guard principal.has(.inference) else {
            throw OpenAIError(
                status: .forbidden, message: "This API key lacks the 'inference' scope.", type: "permission_error", code: "insufficient_scope")
        }
        guard principal.tenantID != nil else {
            throw OpenAIError(status: .forbidden, message: "Operator keys cannot run models; use a tenant key.", type: "permission_error", code: "tenant_key_required")
        }
        guard let info = registry.info(name), info.visible(to: principal.tenantSlug), principal.mayUse(model: name) else {
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

    /// Waits for the tenant's share of a model that several tenants are using (`TenantShares`),
    /// then answers 503 before admission when the model's queue would refuse this tenant
    /// anyway: a flood of refused requests then costs no database work and no usage event.
    /// The permit is held until the request is settled.
    func enter(_ engine: Engine, _ request: Request, principal: Principal) async throws -> TenantShares.Permit {
        let key = principal.tenantID?.uuidString ?? ""
        let permit: TenantShares.Permit
        do {
            permit = try await engine.shares.acquire(key: key)
        } catch let error as GenerationError {
            GatewayMetrics.rejected("tenant_share")
            await abandonIdempotent(request, principal: principal)
            throw Self.map(error)
        } catch {
            await abandonIdempotent(request, principal: principal)
            throw error
        }
        guard engine.accepts(fairnessKey: key) else {
            permit.release()
            GatewayMetrics.rejected("queue_full")
            await abandonIdempotent(request, principal: principal)
            throw Self.map(GenerationError.overloaded("the model's queue is full; retry shortly"))
        }
        return permit
    }

    func admit(_ estimate: UsageEstimate, principal: Principal) async throws -> Admission {
        do {
            return try await meter.admit(estimate, principal: principal)
        } catch let error as MeteringError {
            switch error {
            case .rateLimited: GatewayMetrics.rejected("rate_limit")
            case .quotaExceeded: GatewayMetrics.rejected("quota")
            case .unavailable: GatewayMetrics.rejected("unavailable")
            case .invalid, .notFound: break
            }
            throw Self.map(error)
        }
    }

    static func map(_ error: MeteringError) -> OpenAIError {
        switch error {
        case .rateLimited(let message, let retryAfter):
            OpenAIError(status: .tooManyRequests, message: message, type: "requests", code: "rate_limit_exceeded",
                        headers: [.retryAfter: String(retryAfter)])
        case .quotaExceeded(let message):
            OpenAIError(status: .tooManyRequests, message: message, type: "insufficient_quota", code: "insufficient_quota")
        case .unavailable(let message):
            .unavailable(message, retryAfterSeconds: 1)
        case .invalid(let field, let message):
            .invalidRequest("\(field): \(message)", param: field)
        case .notFound(let message):
            .notFound(message)
        }
    }

    /// OpenAI's `x-ratelimit-*` headers and the IETF draft `RateLimit-Policy`/`RateLimit`.
    static func rateLimitHeaders(_ admission: Admission?) -> HTTPFields {
        var fields = HTTPFields()
        guard let admission else { return fields }
        func duration(_ seconds: Double) -> String {
            let whole = Int(seconds.rounded(.up))
            return whole >= 60 ? "\(whole / 60)m\(whole % 60)s" : "\(whole)s"
        }
        var policies: [String] = []
        var states: [String] = []
        for (name, status) in [("requests", admission.requests), ("tokens", admission.tokens)] {
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

    func record(
        _ admission: Admission, _ context: GatewayRequestContext, principal: Principal, model: String, route: String, promptTokens: Int,
        completionTokens: Int, images: Int, status: Int, started: ContinuousClock.Instant
    ) -> SettlementRecord {
        context.access.usage(model: model, promptTokens: promptTokens, completionTokens: completionTokens, images: images)
        let elapsed = ContinuousClock.now - started
        return SettlementRecord(
            requestID: admission.requestID, tenantID: admission.tenantID, keyID: principal.keyID, model: model, route: route,
            promptTokens: promptTokens, completionTokens: completionTokens, images: images, status: status,
            latencyMs: Int(elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000))
    }

    /// Runs `body` under the request deadline: 504 when it passes (the work is cancelled).
    func withDeadline<Result: Sendable>(_ body: @escaping @Sendable () async throws -> Result) async throws -> Result {
        let timeout = requestTimeout
        return try await withThrowingTaskGroup(of: Result?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            guard let first = try await group.next() else { throw CancellationError() }
            group.cancelAll()
            guard let result = first else {
                throw OpenAIError(
                    status: .gatewayTimeout, message: "The request did not finish within \(timeout); it was cancelled.",
                    type: "server_error", code: "timeout")
            }
            return result
        }
    }

    /// Idempotency: nil to run the request, or a stored response to replay.
    func idempotentReplay(_ request: Request, body: [UInt8], principal: Principal) async throws -> Response? {
        guard let key = request.headers[HTTPField.Name("Idempotency-Key")!], let tenant = principal.tenantID else { return nil }  // safe: valid token
        switch try await idempotency.begin(tenant: tenant, key: key, body: Self.fingerprint(request, body)) {
        case .proceed: return nil
        case .conflict:
            throw OpenAIError(
                status: .conflict, message: "This Idempotency-Key was used with a different request body.", type: "invalid_request_error",
                code: "idempotency_key_reused")
        case .replay(let status, let stored):
            return Response(
                status: HTTPResponse.Status(code: status),
                headers: [.contentType: "application/json", HTTPField.Name("Idempotent-Replayed")!: "true"],  // safe: valid token
                body: .init(byteBuffer: ByteBuffer(bytes: stored)))
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

    func finishIdempotent(_ request: Request, principal: Principal, status: Int, body: [UInt8], requestID: String) async {
        guard let key = request.headers[HTTPField.Name("Idempotency-Key")!], let tenant = principal.tenantID else { return }  // safe: valid token
        if status >= 500 {
            await idempotency.abandon(tenant: tenant, key: key)
        } else {
            try? await idempotency.complete(tenant: tenant, key: key, status: status, body: body, requestID: requestID)
        }
    }

    func abandonIdempotent(_ request: Request, principal: Principal) async {
        guard let key = request.headers[HTTPField.Name("Idempotency-Key")!], let tenant = principal.tenantID else { return }  // safe: valid token
        await idempotency.abandon(tenant: tenant, key: key)
    }

    /// The raw request body, within the size limit (413 beyond).
    func body(_ request: Request) async throws -> [UInt8] {
        Array(buffer: try await JSONBody.collect(request, limit: maxBodyBytes))
    }

    static func decode<Value: Decodable>(_ type: Value.Type, _ bytes: [UInt8]) throws -> Value {
        guard !bytes.isEmpty else { throw OpenAIError.invalidRequest("request body must be a JSON object") }
        do {
            return try JSONDecoder().decode(Value.self, from: Data(bytes))
        } catch let error as DecodingError {
            throw JSONBody.describe(error)
        } catch let error as OpenAIError {
            throw error
        } catch {
            throw OpenAIError.invalidRequest("request body is not valid JSON")
        }
    }

    static func map(_ error: GenerationError) -> OpenAIError {
        switch error {
        case .invalidParameter(let name, let message): .invalidRequest("\(name): \(message)", param: name)
        case .contextExceeded(let prompt, let requested, let context):
            // The prompt alone is too long, or it fits and max_tokens asks too much.
            .invalidRequest(error.description, param: prompt < context && requested > 0 ? "max_tokens" : "messages", code: "context_length_exceeded")
        case .emptyPrompt: .invalidRequest(error.description, param: "prompt")
        // Spread over 1-3 s: clients refused together by a full queue do not all come back together.
        case .overloaded(let message): .unavailable("The model is overloaded: \(message)", retryAfterSeconds: Int.random(in: 1...3))
        case .cancelled: OpenAIError(status: .serviceUnavailable, message: "The request was cancelled.", type: "server_error", code: "cancelled")
        }
    }

    static func map(_ error: ImageError, param: String) -> OpenAIError {
        switch error {
        case .unsupportedType: OpenAIError(status: .unsupportedMediaType, message: error.description, type: "invalid_request_error", param: param, code: "unsupported_image_type")
        case .tooLarge: OpenAIError(status: .contentTooLarge, message: error.description, type: "invalid_request_error", param: param, code: "image_too_large")
        case .corrupt: .invalidRequest(error.description, param: param, code: "invalid_image")
        }
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
