import Foundation
import Inference

/// What `model.json` says of an upstream model (its `options`):
///
/// ```json
/// {"engine": "upstream", "task": "text-generation", "defaults": {"max_tokens": 256},
///  "options": {"endpoints": ["http://10.0.0.5:8080", {"url": "http://10.0.0.6:8080", "weight": 2}],
///              "upstream_model": "llama-3.2-1b", "routes": ["chat", "completions"],
///              "connect_timeout": 2, "first_byte_timeout": 30, "request_timeout": 300,
///              "max_concurrent": 16, "tokenizer": "tokenizer"}}
/// ```
struct UpstreamSettings: Sendable {
    struct Endpoint: Sendable {
        /// The API's base URL as OpenAI's clients take it, ending in `/v1` (added when the
        /// manifest leaves it out).
        var base: String
        var weight: Int
        /// `host:port`, the only part of the URL that reaches metrics and logs.
        var label: String
    }

    var endpoints: [Endpoint]
    var upstreamModel: String?
    var routes: Set<UpstreamRoute>
    var connectTimeout: Duration
    var firstByteTimeout: Duration
    var requestTimeout: Duration
    var maxConcurrent: Int
    var queueCapacity: Int
    var retries: Int
    var ejectAfterFailures: Int
    var ejectFor: Duration
    var healthPath: String
    var healthInterval: Duration
    /// Tokens a chat message costs beyond its text (the role and the template's markers), for
    /// the prompt's upper bound.
    var messageOverheadTokens: Int
    var tokenizerFolder: String?
    var maxResponseBytes: Int

    static let optionKeys: Set<String> = [
        "endpoints", "upstream_model", "routes", "connect_timeout", "first_byte_timeout", "request_timeout", "max_concurrent",
        "queue_capacity", "retries", "eject_after_failures", "eject_seconds", "health_path", "health_interval", "message_overhead_tokens",
        "tokenizer", "max_response_bytes", "flood_rest",
    ]

    init(options: [String: JSONValue], task: ModelTask, file: String) throws {
        func fail(_ reason: String) -> ModelLoadError { ModelLoadError(file: file, reason: reason) }
        func seconds(_ key: String, _ fallback: Double) throws -> Duration {
            guard let value = options[key] else { return .milliseconds(Int64(fallback * 1000)) }
            guard let number = value.number, number > 0, number <= 86_400 else { throw fail("options.\(key) must be a number of seconds above 0") }
            return .milliseconds(Int64(number * 1000))
        }
        func whole(_ key: String, _ fallback: Int, minimum: Int = 1) throws -> Int {
            guard let value = options[key] else { return fallback }
            guard let int = value.int, int >= minimum else { throw fail("options.\(key) must be a whole number of at least \(minimum)") }
            return int
        }
        guard let list = options["endpoints"]?.array, !list.isEmpty else {
            throw fail("options.endpoints must list at least one base URL of an OpenAI-compatible server")
        }
        endpoints = try list.enumerated().map { index, entry in
            let url: String?, weight: Int
            switch entry {
            case .string(let text):
                (url, weight) = (text, 1)
            case .object(let members):
                for key in members.keys.sorted() where key != "url" && key != "weight" {
                    throw fail("unknown key 'options.endpoints[\(index)].\(key)' (known: url, weight)")
                }
                guard let given = members["weight"]?.positiveInt ?? (members["weight"] == nil ? 1 : nil) else {
                    throw fail("options.endpoints[\(index)].weight must be a whole number of at least 1")
                }
                (url, weight) = (members["url"]?.string, given)
            default:
                (url, weight) = (nil, 1)
            }
            guard let url, let parsed = URLComponents(string: url), let scheme = parsed.scheme, ["http", "https"].contains(scheme),
                let host = parsed.host, !host.isEmpty, parsed.query == nil, parsed.user == nil, parsed.password == nil
            else {
                throw fail("options.endpoints[\(index)] must be an http(s) base URL without credentials or query (or {\"url\": ..., \"weight\": n})")
            }
            let port = parsed.port ?? (scheme == "https" ? 443 : 80)
            var base = url
            while base.hasSuffix("/") { base.removeLast() }
            if !base.hasSuffix("/v1") { base += "/v1" }
            return Endpoint(base: base, weight: weight, label: "\(host):\(port)")
        }
        if let value = options["upstream_model"] {
            guard let name = value.string, !name.isEmpty else { throw fail("options.upstream_model must be a model name") }
            upstreamModel = name
        }
        let allowed: Set<UpstreamRoute> = task == .embeddings ? [.embeddings] : [.completions, .chat]
        if let value = options["routes"] {
            guard let names = value.array?.compactMap(\.string), !names.isEmpty, names.count == value.array?.count else {
                throw fail("options.routes must list routes (\(allowed.map(\.rawValue).sorted().joined(separator: ", ")))")
            }
            routes = []
            for name in names {
                guard let route = UpstreamRoute(rawValue: name), allowed.contains(route) else {
                    throw fail("options.routes: '\(name)' is not a route of a \(task.rawValue) model (known: \(allowed.map(\.rawValue).sorted().joined(separator: ", ")))")
                }
                routes.insert(route)
            }
        } else {
            routes = allowed
        }
        connectTimeout = try seconds("connect_timeout", 5)
        firstByteTimeout = try seconds("first_byte_timeout", 60)
        requestTimeout = try seconds("request_timeout", 600)
        maxConcurrent = try whole("max_concurrent", 32)
        queueCapacity = try whole("queue_capacity", 256)
        retries = try whole("retries", 2, minimum: 0)
        ejectAfterFailures = try whole("eject_after_failures", 3)
        ejectFor = try seconds("eject_seconds", 10)
        healthInterval = try seconds("health_interval", 5)
        healthPath = options["health_path"]?.string ?? "/models"
        guard healthPath.hasPrefix("/") else { throw fail("options.health_path must start with '/' (it follows the base URL)") }
        messageOverheadTokens = try whole("message_overhead_tokens", 8, minimum: 0)
        maxResponseBytes = try whole("max_response_bytes", 16 << 20)
        if let value = options["tokenizer"] {
            guard let folder = value.string, !folder.isEmpty, !folder.contains("..") else {
                throw fail("options.tokenizer must name a folder in the model folder (vocab.json and merges.txt)")
            }
            tokenizerFolder = folder
        }
    }
}

/// The OpenAI routes an upstream model may serve.
public enum UpstreamRoute: String, Sendable, Hashable {
    case completions, chat, embeddings

    /// The path after the endpoint's base URL.
    var path: String {
        switch self {
        case .completions: "/completions"
        case .chat: "/chat/completions"
        case .embeddings: "/embeddings"
        }
    }
}
