import AsyncHTTPClient
import Foundation
import Inference
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// `"engine": "upstream"`: a model served by one or more remote OpenAI-compatible servers
/// (llama.cpp's `llama-server`, vLLM, TGI, Ollama, another ModelGate...). It is queued fairly,
/// admitted and settled like a native engine; it forwards each request to the endpoint with
/// the fewest outstanding requests, retries on another endpoint while nothing has reached the
/// client, and ejects endpoints that keep failing (`EndpointPool`).
///
/// It knows nothing of tenants: the caller rewrites the request (the upstream's model name,
/// a `max_tokens` equal to what it reserved) and passes the credential.
public final class UpstreamEngine: ExternalEngine {
    public let name = UpstreamFactory.name
    public let task: ModelTask
    public let shares: TenantShares
    /// The name the upstream knows the model by; nil: the model's own name.
    public let upstreamModel: String?
    public let routes: Set<UpstreamRoute>
    /// The completion budget of a request that sets none (`defaults.max_tokens`).
    public let defaultMaxTokens: Int
    public let messageOverheadTokens: Int
    let settings: UpstreamSettings
    let pool: EndpointPool
    let client: HTTPClient
    let tokenizer: BPETokenizer?
    let logger: Logger
    private let excess = Atomic<Int>(0)
    private let healthChecks = Mutex<Task<Void, Never>?>(nil)

    init(settings: UpstreamSettings, task: ModelTask, defaultMaxTokens: Int, tokenizer: BPETokenizer?, floodRest: Double, model: String) {
        self.settings = settings
        self.task = task
        self.upstreamModel = settings.upstreamModel
        self.routes = settings.routes
        self.defaultMaxTokens = defaultMaxTokens
        self.messageOverheadTokens = settings.messageOverheadTokens
        self.tokenizer = tokenizer
        pool = EndpointPool(settings: settings)
        shares = TenantShares(slots: settings.maxConcurrent * settings.endpoints.count, capacity: settings.queueCapacity, rest: floodRest)
        var configuration = HTTPClient.Configuration(
            timeout: .init(connect: .nanoseconds(settings.connectTimeout.nanoseconds), read: .nanoseconds(settings.firstByteTimeout.nanoseconds)))
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: settings.maxConcurrent)
        configuration.decompression = .enabled(limit: .ratio(100))
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        var logger = Logger(label: "modelgate.upstream")
        logger[metadataKey: "model"] = "\(model)"
        self.logger = logger
        let interval = settings.healthInterval
        healthChecks.withLock {
            $0 = Task.detached { [weak self] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: interval)
                    guard let self, !Task.isCancelled else { return }
                    await self.checkHealth()
                }
            }
        }
    }

    public func accepts(fairnessKey: String) -> Bool { true }

    /// An upstream server takes whatever OpenAI parameters it takes: ModelGate forwards them.
    public func supports(parameter: String) -> Bool { true }

    public func shutdown() {
        healthChecks.withLock { $0?.cancel() }
        let client = self.client
        Task.detached { try? await client.shutdown() }
    }

    // MARK: Counting

    /// The prompt's tokens: counted with the manifest's tokenizer, or bounded by its UTF-8
    /// bytes (a byte-level tokenizer never makes more tokens than bytes).
    public func promptTokens(_ text: String) -> Int { tokenizer?.encode(text).count ?? text.utf8.count }

    /// Whether the manifest names a tokenizer to count with.
    public var countsLocally: Bool { tokenizer != nil }

    /// Completion tokens counted locally (a stream without usage); nil without a tokenizer.
    public func completionTokens(_ text: String) -> Int? { tokenizer?.encode(text).count }

    /// Usage the upstream reported beyond what was reserved: not billed, counted here.
    public func recordExcess(_ tokens: Int) {
        excess.add(tokens, ordering: .relaxed)
        logger.warning("upstream reported more usage than was reserved; billed the reservation", metadata: ["excess_tokens": "\(tokens)"])
    }

    public var excessTokens: Int { excess.load(ordering: .relaxed) }
    public var endpointStatus: [UpstreamEndpointStatus] { pool.status }

    // MARK: Forwarding

    /// Sends `request` to an endpoint: on a refused connection, a 5xx, a 429 or a timeout
    /// before the answer began, to another (after a short jittered pause), up to `retries`
    /// more times. A 4xx is the client's: thrown as `UpstreamError.rejected` with the
    /// upstream's message.
    public func send(_ request: UpstreamRequest) async throws -> UpstreamReply {
        var tried: Set<Int> = []
        var lastError = UpstreamError.unavailable
        let deadline = NIODeadline.now() + .nanoseconds(settings.requestTimeout.nanoseconds)
        let end = ContinuousClock.now + settings.requestTimeout
        for attempt in 0...settings.retries {
            try Task.checkCancellation()
            // Another endpoint if there is one; else the same again (a pooled connection the
            // server had just closed is no reason to fail the request).
            guard let endpoint = pool.pick(excluding: tried) ?? pool.pick(excluding: []) else { break }
            tried.insert(endpoint.index)
            if attempt > 0 {
                try await Task.sleep(for: .milliseconds(Int.random(in: 10...40) * attempt))
            }
            let started = ContinuousClock.now
            do {
                let reply = try await exchange(request, on: endpoint, deadline: deadline, end: end, started: started)
                return reply
            } catch let error as UpstreamError {
                switch error {
                case .cancelled:
                    pool.finish(endpoint, failed: false, seconds: Self.seconds(since: started))
                    throw CancellationError()
                case .rejected:
                    pool.finish(endpoint, failed: false, seconds: Self.seconds(since: started))
                    throw error
                default:
                    pool.finish(endpoint, failed: true, seconds: Self.seconds(since: started))
                    logger.warning("upstream endpoint failed", metadata: ["endpoint": "\(endpoint.label)", "reason": "\(error)"])
                    lastError = error
                }
            } catch is CancellationError {
                pool.finish(endpoint, failed: false, seconds: Self.seconds(since: started))
                throw CancellationError()
            } catch {
                // A connection that closed before the answer began (a kept-alive connection the
                // server closed, or a server that died mid-request) says nothing certain of
                // the endpoint: the health check and the next connection attempt will.
                let lost = Self.connectionLost(error)
                pool.finish(endpoint, failed: !lost, seconds: Self.seconds(since: started))
                let mapped = Self.map(error)
                logger.warning(
                    "upstream endpoint failed",
                    metadata: ["endpoint": "\(endpoint.label)", "reason": "\(lost ? "connection closed before the answer" : mapped.description)"])
                lastError = mapped
                if case .cancelled = mapped { throw CancellationError() }
            }
        }
        throw lastError
    }

    /// One attempt on one endpoint. A streaming reply keeps the endpoint's outstanding count
    /// until the stream ends; anything else ends it before returning (the caller does on a
    /// throw).
    private func exchange(
        _ request: UpstreamRequest, on endpoint: EndpointPool.Endpoint, deadline: NIODeadline, end: ContinuousClock.Instant,
        started: ContinuousClock.Instant
    ) async throws -> UpstreamReply {
        var outgoing = HTTPClientRequest(url: endpoint.base + request.route.path)
        outgoing.method = .POST
        outgoing.headers.add(name: "Content-Type", value: "application/json")
        outgoing.headers.add(name: "Accept", value: request.stream ? "text/event-stream" : "application/json")
        if let credential = request.credential { outgoing.headers.add(name: "Authorization", value: "Bearer " + credential) }
        for (name, value) in request.headers { outgoing.headers.add(name: name, value: value) }
        outgoing.body = .bytes(ByteBuffer(bytes: request.body))
        let response = try await client.execute(outgoing, deadline: deadline, logger: nil)
        let status = Int(response.status.code)
        guard (200..<300).contains(status) else {
            let body = (try? await response.body.collect(upTo: 64 << 10)).map { Array(buffer: $0) } ?? []
            if (400..<500).contains(status), status != 429, status != 408 {
                throw Self.rejection(status: status, body: body)
            }
            throw UpstreamError.failed("the upstream answered HTTP \(status)")
        }
        guard request.stream else {
            let body: ByteBuffer
            do {
                body = try await response.body.collect(upTo: settings.maxResponseBytes)
            } catch is NIOTooManyBytesError {
                throw UpstreamError.failed("the upstream's answer exceeds \(settings.maxResponseBytes) bytes")
            }
            pool.finish(endpoint, failed: false, seconds: Self.seconds(since: started))
            return .body(Array(buffer: body))
        }
        let contentType = response.headers.first(name: "content-type") ?? ""
        guard contentType.lowercased().hasPrefix("text/event-stream") else {
            throw UpstreamError.failed("the upstream answered a streaming request with \(contentType.isEmpty ? "no content type" : contentType)")
        }
        return .events(events(response.body, endpoint: endpoint, end: end, started: started))
    }

    /// The data of each server-sent event as it arrives, until the request's deadline (`end`):
    /// a stream still running then ends with `UpstreamError.timedOut`. Ending the iteration
    /// (the client went away) cancels the upstream request, which closes its connection.
    private func events(
        _ body: HTTPClientResponse.Body, endpoint: EndpointPool.Endpoint, end: ContinuousClock.Instant, started: ContinuousClock.Instant
    ) -> AsyncThrowingStream<[UInt8], any Error> {
        let (stream, output) = AsyncThrowingStream.makeStream(of: [UInt8].self)
        let (pool, limit) = (self.pool, settings.maxResponseBytes)
        let expired = Flag()
        let reader = Task {
            var parser = ServerSentEvents(maxEventBytes: limit)
            do {
                for try await chunk in body {
                    for event in try parser.feed(chunk) { output.yield(event) }
                }
                for event in try parser.finish() { output.yield(event) }
                pool.finish(endpoint, failed: false, seconds: Self.seconds(since: started))
                output.finish()
            } catch {
                if expired.isSet {
                    pool.finish(endpoint, failed: true, seconds: Self.seconds(since: started))
                    output.finish(throwing: UpstreamError.timedOut)
                    return
                }
                let cancelled = Task.isCancelled || error is CancellationError
                pool.finish(endpoint, failed: !cancelled, seconds: Self.seconds(since: started))
                output.finish(throwing: cancelled ? CancellationError() : Self.map(error))
            }
        }
        let timer = Task {
            guard (try? await Task.sleep(until: end, clock: .continuous)) != nil else { return }
            expired.set()
            output.finish(throwing: UpstreamError.timedOut)
            reader.cancel()
        }
        output.onTermination = { _ in
            timer.cancel()
            reader.cancel()
        }
        return stream
    }

    /// Probes every endpoint once (`health_path` under its base URL): any answer below 500 is
    /// a live server.
    func checkHealth() async {
        await withTaskGroup(of: Void.self) { group in
            for endpoint in pool.endpoints {
                group.addTask {
                    var request = HTTPClientRequest(url: endpoint.base + self.settings.healthPath)
                    request.method = .GET
                    let healthy: Bool
                    do {
                        let response = try await self.client.execute(request, deadline: .now() + .nanoseconds(self.settings.firstByteTimeout.nanoseconds))
                        _ = try? await response.body.collect(upTo: 1 << 20)
                        healthy = response.status.code < 500
                    } catch {
                        healthy = false
                    }
                    self.pool.probed(endpoint.index, healthy: healthy)
                }
            }
        }
    }

    // MARK: Errors

    static func rejection(status: Int, body: [UInt8]) -> UpstreamError {
        let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any]
        let error = object?["error"] as? [String: Any]
        let message = (error?["message"] as? String) ?? (object?["error"] as? String) ?? (object?["message"] as? String)
        return .rejected(
            status: status, message: message.map { String($0.prefix(2000)) } ?? "The upstream server refused the request (HTTP \(status)).",
            type: error?["type"] as? String, code: (error?["code"] as? String) ?? (error?["code"] as? Int).map(String.init),
            param: error?["param"] as? String)
    }

    static func map(_ error: any Error) -> UpstreamError {
        if let error = error as? UpstreamError { return error }
        if error is CancellationError { return .cancelled }
        if let error = error as? HTTPClientError {
            switch error {
            case .deadlineExceeded, .readTimeout, .connectTimeout: return .timedOut
            case .cancelled: return .cancelled
            default: return .failed("the connection to the upstream failed")
            }
        }
        if error is ServerSentEvents.TooLarge { return .failed("the upstream sent an event larger than the limit") }
        return .failed("the connection to the upstream failed")
    }

    /// Whether `error` is a connection closed under a request (rather than one refused, a
    /// timeout or a bad answer).
    static func connectionLost(_ error: any Error) -> Bool {
        if let error = error as? HTTPClientError {
            return error == .remoteConnectionClosed
        }
        if let error = error as? ChannelError {
            return error == .ioOnClosedChannel || error == .alreadyClosed || error == .eof
        }
        if let error = error as? IOError {
            return [ECONNRESET, EPIPE].contains(error.errnoCode)
        }
        return false
    }

    static func seconds(since start: ContinuousClock.Instant) -> Double {
        let elapsed = ContinuousClock.now - start
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }
}

/// A one-way switch shared by a stream's reader and its deadline.
final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .releasing) }
    var isSet: Bool { value.load(ordering: .acquiring) }
}

/// One request for an upstream, its body already rewritten for it.
public struct UpstreamRequest: Sendable {
    public var route: UpstreamRoute
    public var body: [UInt8]
    public var stream: Bool
    /// The upstream's API key (sent as `Authorization: Bearer`), if it needs one.
    public var credential: String?
    /// Headers passed on (`traceparent`, `X-Request-ID`).
    public var headers: [(String, String)]

    public init(route: UpstreamRoute, body: [UInt8], stream: Bool, credential: String? = nil, headers: [(String, String)] = []) {
        self.route = route
        self.body = body
        self.stream = stream
        self.credential = credential
        self.headers = headers
    }
}

/// An upstream's answer: a whole JSON body, or the data of its server-sent events.
public enum UpstreamReply: Sendable {
    case body([UInt8])
    case events(AsyncThrowingStream<[UInt8], any Error>)
}

public enum UpstreamError: Error, Sendable, CustomStringConvertible {
    /// The upstream refused the request (a 4xx other than 408 and 429): the client's mistake,
    /// told in the upstream's words.
    case rejected(status: Int, message: String, type: String?, code: String?, param: String?)
    /// No usable answer: a refused or broken connection, a 5xx, a 429, something not JSON.
    case failed(String)
    case timedOut
    /// Every endpoint is ejected.
    case unavailable
    case cancelled

    public var description: String {
        switch self {
        case .rejected(let status, let message, _, _, _): "HTTP \(status): \(message)"
        case .failed(let reason): reason
        case .timedOut: "timed out"
        case .unavailable: "no endpoint is available"
        case .cancelled: "cancelled"
        }
    }
}

extension Duration {
    var nanoseconds: Int64 {
        components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000
    }
}

/// `"engine": "upstream"` in `model.json`.
public enum UpstreamFactory: EngineFactory {
    public static let name = "upstream"
    public static let optionKeys = UpstreamSettings.optionKeys

    public static func load(directory: String, manifest: ModelManifest) throws -> Engine {
        let file = directory + "/model.json"
        guard let task = ModelTask(rawValue: manifest.task), task != .imageClassification else {
            throw ModelLoadError(file: file, reason: "an upstream model does text-generation or embeddings, not \(manifest.task)")
        }
        let settings = try UpstreamSettings(options: manifest.options ?? [:], task: task, file: file)
        let tokenizer = try settings.tokenizerFolder.map { try BPETokenizer(directory: directory + "/" + $0) }
        let defaults = try manifest.samplingDefaults(in: directory)
        let name = URL(fileURLWithPath: directory).lastPathComponent
        return .external(UpstreamEngine(
            settings: settings, task: task, defaultMaxTokens: defaults.maxTokens ?? 256, tokenizer: tokenizer,
            floodRest: try manifest.floodRest(in: directory), model: name))
    }
}
