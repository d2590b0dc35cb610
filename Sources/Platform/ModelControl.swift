import Foundation
import Inference
import Logging
import Postgres
import Upstream

/// Keeps the `models` table in step with this instance's registry, and carries `load`,
/// `unload`, `reload` and `remove` requests to every instance through NOTIFY (`modelgate_models`).
public struct ModelControl: Sendable {
    public static let channel = "modelgate_models"
    let pool: PostgresPool
    let registry: ModelRegistry
    let logger: Logger

    public init(pool: PostgresPool, registry: ModelRegistry, logger: Logger) {
        self.pool = pool
        self.registry = registry
        self.logger = logger
    }

    /// Asks every instance (this one included) to act on a model, and waits for this one:
    /// when its load fails, so does the request, with the reason (the others are asked all
    /// the same; each keeps serving what it had).
    public func request(_ action: String, _ name: String) async throws {
        var failure: (any Error)?
        do { try await apply(action, name) } catch { failure = error }
        try await pool.execute("SELECT pg_notify($1, $2)", [Self.channel, action + ":" + name])
        if let failure { throw failure }
    }

    func apply(_ action: String, _ name: String) async throws {
        switch action {
        case "unload": try registry.unload(name)
        case "remove":
            registry.remove(name)
            _ = try? await pool.execute("DELETE FROM models WHERE name = $1", [name])
        case "load", "reload":
            do {
                try await registry.load(name)
            } catch {
                logger.warning("model \(action) failed", metadata: ["model": "\(name)", "error": "\(error)"])
                await publish()
                throw error
            }
        default: return
        }
        await publish()
    }

    /// Checks `name`'s folder in the configured model directory (its manifest, engine and
    /// options) without loading it: what `modelgate model load` does before asking the servers.
    public static func checkFolder(_ name: String, configuration: ModelGateConfiguration) throws {
        let directory = ModelDirectory.resolve(configuration.models.directory)
        _ = try EngineFactories.check(directory: directory + "/" + name, factories: ModelDirectory.engines)
    }

    /// Every model name this installation knows, with the model's own name for each: names and
    /// aliases the servers reported, and the folders of the configured model directory (for the
    /// CLI's checks of model names).
    public static func knownModels(pool: PostgresPool, configuration: ModelGateConfiguration) async throws -> [String: String] {
        var known: [String: String] = [:]
        for folder in ModelRegistry(directory: ModelDirectory.resolve(configuration.models.directory), factories: ModelDirectory.engines).discover() { known[folder] = folder }
        for row in try await pool.query("SELECT name, aliases FROM models") {
            let name: String = try row.decode("name")
            known[name] = name
            for alias in try row.decode("aliases", as: [String].self) { known[alias] = name }
        }
        return known
    }

    /// `names` as models' own names (an alias becomes the model it names); throws naming the
    /// first this installation does not know.
    public static func checkKnown(_ names: [String], option: String, pool: PostgresPool, configuration: ModelGateConfiguration) async throws -> [String] {
        guard !names.isEmpty else { return [] }
        let known = try await knownModels(pool: pool, configuration: configuration)
        return try names.map { name in
            guard let canonical = known[name] else {
                throw ModelLoadError(
                    file: option, reason: "unknown model '\(name)' (known: \(known.isEmpty ? "none yet" : known.keys.sorted().joined(separator: ", ")))")
            }
            return canonical
        }
    }

    /// Writes every model's state to the `models` table.
    public func publish() async {
        for info in registry.models() {
            _ = try? await pool.execute(
                """
                INSERT INTO models (name, engine, task, version, status, reason, tenants, aliases) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                ON CONFLICT (name) DO UPDATE SET engine = $2, task = $3, version = $4, status = $5, reason = $6, tenants = $7, aliases = $8,
                    updated_at = now()
                """, [info.name, info.engine, info.task?.rawValue, info.version, info.status.name, info.reason, info.tenants, info.aliases])
        }
    }

    /// Writes the endpoints of every upstream model to the `models` table every `interval`
    /// (for `modelgate model show`), until cancelled.
    public func reportEndpoints(every interval: Duration = .seconds(5)) async {
        while !Task.isCancelled {
            for info in registry.models() {
                guard case .external(let external)? = registry.engine(info.name)?.1, let upstream = external as? UpstreamEngine else { continue }
                let endpoints = upstream.endpointStatus.map(EndpointReport.init)
                guard let json = try? JSONEncoder().encode(endpoints) else { continue }
                _ = try? await pool.execute(
                    "UPDATE models SET endpoints = $2 WHERE name = $1", [info.name, PostgresJSON(text: String(decoding: json, as: UTF8.self))])
            }
            try? await Task.sleep(for: interval)
        }
    }

    /// One endpoint as `models.endpoints` holds it.
    public struct EndpointReport: Codable, Sendable {
        public var endpoint: String
        public var healthy: Bool
        public var outstanding: Int
        public var requests: Int
        public var failures: Int
        public var meanLatencyMs: Double?

        enum CodingKeys: String, CodingKey {
            case endpoint, healthy, outstanding, requests, failures
            case meanLatencyMs = "mean_latency_ms"
        }

        init(_ status: UpstreamEndpointStatus) {
            endpoint = status.endpoint
            healthy = status.healthy
            outstanding = status.outstanding
            requests = status.requests
            failures = status.failures
            meanLatencyMs = status.requests > 0 ? (status.latencySeconds / Double(status.requests) * 1000 * 10).rounded() / 10 : nil
        }
    }

    /// Acts on requests from other instances and the CLI until cancelled.
    public func listen() async {
        for await event in pool.notifications(channels: [Self.channel]) {
            if Task.isCancelled { break }
            guard case .notification(let notification) = event else { continue }
            let parts = notification.payload.split(separator: ":", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { continue }
            // Our own request was applied before it was sent.
            if registry.info(parts[1])?.status == (parts[0] == "unload" ? .unloaded : .ready), ["load", "unload"].contains(parts[0]) { continue }
            try? await apply(parts[0], parts[1])
        }
    }
}
