import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Synchronization
import Tenancy

/// What the access log reports about a request, filled in as it goes (the context is copied
/// down the middleware chain; this record is shared by all the copies).
public final class AccessRecord: Sendable {
    struct Fields {
        var tenantID: String?
        var keyPrefix: String?
        var model: String?
        var promptTokens = 0
        var completionTokens = 0
        var images = 0
    }

    let fields = Mutex(Fields())

    public init() {}

    func caller(tenantID: UUID?, keyPrefix: String) {
        fields.withLock {
            $0.tenantID = tenantID?.uuidString.lowercased()
            $0.keyPrefix = keyPrefix
        }
    }

    func usage(model: String, promptTokens: Int, completionTokens: Int, images: Int) {
        fields.withLock {
            $0.model = model
            $0.promptTokens = promptTokens
            $0.completionTokens = completionTokens
            $0.images = images
        }
    }
}

/// One access log entry per request (logger `modelgate.access`, one JSON line with
/// `--log-format json`): request id, method, path (no query string), status, latency, client,
/// tenant id, key prefix, model and usage. Never bodies, prompts, completions or keys. A
/// streamed response is logged when its last byte is written.
struct AccessLogMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext
    let logger: Logger

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        let started = ContinuousClock.now
        let entry = Entry(
            logger: logger, requestID: context.requestID, method: request.method.rawValue, path: Self.redacted(request.uri.path),
            client: context.clientAddress, record: context.access, endpoint: context.coreContext.endpointPath, started: started)
        let response: Response
        do {
            response = try await next(request, context)
        } catch {
            entry.write(status: (error as? any HTTPResponseError).map { Int($0.status.code) } ?? 500)
            throw error
        }
        let status = Int(response.status.code)
        guard response.body.contentLength == nil else {
            entry.write(status: status)
            return response
        }
        // A streamed body: log once it has been written (or the client went away).
        var streamed = response
        let body = response.body
        streamed.body = ResponseBody { writer in
            do {
                try await body.write(writer)
                entry.write(status: status)
            } catch {
                entry.write(status: 499)
                throw error
            }
        }
        return streamed
    }

    /// The path with anything shaped like an API key (`mgk_` and what follows it in the
    /// segment) cut to its display prefix: a key sent in the path must not reach the log.
    static func redacted(_ path: String) -> String {
        guard path.contains("mgk_") else { return path }
        var output = ""
        var rest = Substring(path)
        while let range = rest.range(of: "mgk_") {
            output += rest[..<range.lowerBound]
            let tail = rest[range.upperBound...]
            let secret = tail.prefix { $0.isLetter || $0.isNumber }
            output += "mgk_" + secret.prefix(APIKeyFormat.displayPrefixLength) + (secret.count > APIKeyFormat.displayPrefixLength ? "…" : "")
            rest = tail.dropFirst(secret.count)
        }
        return output + rest
    }

    struct Entry: Sendable {
        let logger: Logger
        let requestID: String
        let method: String
        let path: String
        let client: String
        let record: AccessRecord
        /// Set by the router once it has matched a route (shared by every copy of the context).
        let endpoint: EndpointPath
        let started: ContinuousClock.Instant

        func write(status: Int) {
            let elapsed = ContinuousClock.now - started
            let milliseconds = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
            let fields = record.fields.withLock { $0 }
            GatewayMetrics.request(
                route: GatewayMetrics.routeLabel(endpointPath: endpoint.value), method: method, status: status, seconds: milliseconds / 1000)
            if let model = fields.model {
                GatewayMetrics.usage(model: model, promptTokens: fields.promptTokens, completionTokens: fields.completionTokens, images: fields.images)
            }
            guard logger.logLevel <= .info else { return }  // the entry is built only when it will be written
            let tenths = Int((milliseconds * 10).rounded())
            var metadata: Logger.Metadata = [
                "request_id": .string(requestID), "method": .string(method), "path": .string(path), "status": .stringConvertible(status),
                "latency_ms": .string("\(tenths / 10).\(tenths % 10)"), "client": .string(client),
            ]
            if let tenant = fields.tenantID { metadata["tenant_id"] = .string(tenant) }
            if let prefix = fields.keyPrefix { metadata["key_prefix"] = .string(prefix) }
            if let model = fields.model {
                metadata["model"] = .string(model)
                metadata["prompt_tokens"] = .stringConvertible(fields.promptTokens)
                metadata["completion_tokens"] = .stringConvertible(fields.completionTokens)
                metadata["images"] = .stringConvertible(fields.images)
            }
            logger.info("request", metadata: metadata)
        }
    }
}
