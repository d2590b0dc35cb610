import Foundation
import Inference
import Upstream
import Metering
import Metrics
import Postgres
import Prometheus
import Synchronization
import Tenancy

/// `GET /metrics`: swift-metrics recorded through a Prometheus registry (requests, latency,
/// tokens, images, rejections), plus gauges read at scrape time from the services: database
/// pool, key cache, usage spool, model state and queue depth.
final class MetricsExport: Sendable {
    let registry: PrometheusCollectorRegistry
    private static let bootstrapped = Mutex<PrometheusCollectorRegistry?>(nil)

    /// The process-wide registry (swift-metrics is bootstrapped once per process).
    init() {
        registry = Self.bootstrapped.withLock { existing in
            if let existing { return existing }
            let registry = PrometheusCollectorRegistry()
            var factory = PrometheusMetricsFactory(registry: registry)
            factory.defaultDurationHistogramBuckets = [
                .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
                .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30),
            ]
            MetricsSystem.bootstrap(factory)
            existing = registry
            return registry
        }
    }

    func scrape(pool: PostgresPool, authenticator: Authenticator, meter: Metering.Meter, registry models: ModelRegistry) -> [UInt8] {
        var exposition = Exposition()
        let database = pool.statistics
        exposition.gauge("modelgate_db_pool_connections", "Database connections in the pool.", database.size)
        exposition.gauge("modelgate_db_pool_in_use", "Database connections running a query now.", database.inUse)
        exposition.gauge("modelgate_db_pool_waiting", "Callers waiting for a database connection.", database.waiting)
        exposition.counter("modelgate_db_pool_connection_errors_total", "Database connection attempts that failed.", database.connectionErrors)
        exposition.counter("modelgate_db_queries_total", "Database statements run.", database.queries)
        let keys = authenticator.statistics
        exposition.counter("modelgate_key_cache_hits_total", "API key verifications answered from the in-memory cache.", keys.hits)
        exposition.counter("modelgate_key_cache_misses_total", "API key verifications that looked the key up in the database.", keys.misses)
        exposition.family(
            "modelgate_key_cache_hit_ratio", "gauge", "Share of key verifications answered from the cache since start.",
            [([], keys.hits + keys.misses == 0 ? 0 : Double(keys.hits) / Double(keys.hits + keys.misses))])
        exposition.counter("modelgate_auth_failures_total", "Requests refused for a missing, malformed, unknown, revoked or expired key.", keys.failures)
        let metering = meter.statistics
        exposition.counter("modelgate_admissions_total", "Inference requests admitted (quota reserved).", metering.admitted)
        exposition.counter("modelgate_usage_events_spooled_total", "Usage records written to the durable spool.", metering.spooled)
        exposition.counter("modelgate_usage_events_replayed_total", "Spooled usage records settled by replay.", metering.replayed)
        exposition.counter("modelgate_usage_settlement_failures_total", "Settlements the database refused or missed (kept in the spool).", metering.settlementFailures)
        var states: [([(String, String)], Double)] = []
        var queues: [([(String, String)], Double)] = []
        var running: [([(String, String)], Double)] = []
        var shareWaiting: [([(String, String)], Double)] = []
        var shareResting: [([(String, String)], Double)] = []
        var upstreamHealthy: [([(String, String)], Double)] = []
        var upstreamOutstanding: [([(String, String)], Double)] = []
        var upstreamRequests: [([(String, String)], Double)] = []
        var upstreamFailures: [([(String, String)], Double)] = []
        var upstreamLatency: [([(String, String)], Double)] = []
        var upstreamExcess: [([(String, String)], Double)] = []
        for info in models.models() {
            for state in ["loading", "ready", "failed", "unloaded"] {
                states.append(([("model", info.name), ("state", state)], info.status.name == state ? 1 : 0))
            }
            guard let (_, engine) = models.engine(info.name) else { continue }
            let labels = [("model", info.name)]
            switch engine {
            case .text(let generator):
                let statistics = generator.statistics
                queues.append((labels, Double(statistics.waiting)))
                running.append((labels, Double(statistics.running)))
            case .embeddings(let service):
                queues.append((labels, Double(service.waiting)))
            case .images(let service):
                queues.append((labels, Double(service.waiting)))
            case .external(let external):
                guard let upstream = external as? UpstreamEngine else { break }
                queues.append((labels, Double(engine.shares.snapshot.waiting)))
                upstreamExcess.append((labels, Double(upstream.excessTokens)))
                // Endpoints by host and port only: never a path or a credential.
                for endpoint in upstream.endpointStatus {
                    let endpointLabels = labels + [("endpoint", endpoint.endpoint)]
                    upstreamHealthy.append((endpointLabels, endpoint.healthy ? 1 : 0))
                    upstreamOutstanding.append((endpointLabels, Double(endpoint.outstanding)))
                    upstreamRequests.append((endpointLabels, Double(endpoint.requests)))
                    upstreamFailures.append((endpointLabels, Double(endpoint.failures)))
                    upstreamLatency.append((endpointLabels, endpoint.latencySeconds))
                }
            }
            let shares = engine.shares.snapshot
            shareWaiting.append((labels, Double(shares.waiting)))
            shareResting.append((labels, Double(shares.resting)))
        }
        exposition.family("modelgate_model_state", "gauge", "1 for the state each model is in (loading, ready, failed, unloaded).", states)
        exposition.family("modelgate_model_queue_depth", "gauge", "Requests waiting in a model's queue.", queues)
        exposition.family("modelgate_model_running_sequences", "gauge", "Sequences a text model is generating now.", running)
        exposition.family("modelgate_model_share_waiting", "gauge", "Requests waiting for their tenant's share of a model.", shareWaiting)
        exposition.family("modelgate_model_share_resting", "gauge", "Slots resting after a flooding tenant's request.", shareResting)
        exposition.family("modelgate_upstream_endpoint_healthy", "gauge", "1 while an upstream endpoint serves (not ejected).", upstreamHealthy)
        exposition.family("modelgate_upstream_endpoint_outstanding", "gauge", "Requests an upstream endpoint is answering now.", upstreamOutstanding)
        exposition.family("modelgate_upstream_endpoint_requests_total", "counter", "Requests sent to an upstream endpoint.", upstreamRequests)
        exposition.family("modelgate_upstream_endpoint_failures_total", "counter", "Requests to an upstream endpoint that failed (connection, 5xx, timeout, broken stream).", upstreamFailures)
        exposition.family("modelgate_upstream_endpoint_latency_seconds_total", "counter", "Time requests to an upstream endpoint took, added up.", upstreamLatency)
        exposition.family("modelgate_upstream_usage_excess_tokens_total", "counter", "Tokens an upstream reported beyond the reservation: not billed.", upstreamExcess)
        ProcessMetrics.append(to: &exposition)
        return Array(exposition.text.utf8) + Self.withHelp(registry.emitToBuffer())
    }

    /// HELP for the families recorded through swift-metrics (its Prometheus backend has no way
    /// to give them one).
    static let help: [String: String] = [
        "modelgate_http_requests_total": "HTTP requests answered, by route template, method and status.",
        "modelgate_http_request_duration_seconds": "Time to answer an HTTP request (to its last byte for streams), by route template.",
        "modelgate_tokens_total": "Tokens processed, by model and kind (prompt, completion).",
        "modelgate_images_total": "Images classified, by model.",
        "modelgate_admission_rejections_total": "Inference requests refused before running, by reason.",
    ]

    /// Inserts a `# HELP` line before each family's `# TYPE` line that lacks one.
    static func withHelp(_ exposition: [UInt8]) -> [UInt8] {
        var output = ""
        var previous = ""
        for line in String(decoding: exposition, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("# TYPE "), !previous.hasPrefix("# HELP ") {
                let name = line.dropFirst(7).split(separator: " ").first.map(String.init) ?? ""
                output += "# HELP \(name) \(help[name] ?? name.replacingOccurrences(of: "_", with: " "))\n"
            }
            output += line + "\n"
            previous = String(line)
        }
        return Array(output.dropLast().utf8)
    }
}

/// Prometheus text exposition for values read at scrape time, each family with HELP and TYPE.
struct Exposition {
    var text = ""

    mutating func counter(_ name: String, _ help: String, _ value: some BinaryInteger) {
        family(name, "counter", help, [([], Double(value))])
    }

    mutating func gauge(_ name: String, _ help: String, _ value: some BinaryInteger) {
        family(name, "gauge", help, [([], Double(value))])
    }

    mutating func family(_ name: String, _ type: String, _ help: String, _ samples: [([(String, String)], Double)]) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        for (labels, value) in samples {
            let labelText = labels.isEmpty ? "" : "{" + labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",") + "}"
            text += "\(name)\(labelText) \(Self.format(value))\n"
        }
    }

    static func escape(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }

    static func format(_ value: Double) -> String {
        value.rounded() == value && abs(value) < 1e15 ? String(Int64(value)) : String(value)
    }
}

/// The standard `process_*` metrics every Prometheus client exports, read from `/proc/self`.
enum ProcessMetrics {
    static func append(to exposition: inout Exposition) {
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let pageSize = Double(sysconf(Int32(_SC_PAGESIZE)))
        if let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        {
            // Fields after the command name, from field 3 (state) on.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 22, let user = Double(fields[11]), let system = Double(fields[12]),
                let virtual = Double(fields[20]), let resident = Double(fields[21])
            {
                exposition.family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", [([], (user + system) / ticks)])
                exposition.family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", [([], virtual)])
                exposition.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", [([], resident * pageSize)])
            }
            // Field 22: start time in clock ticks after boot; /proc/stat's btime: boot time.
            if fields.count > 19, let startTicks = Double(fields[19]), let boot = bootTime() {
                exposition.family(
                    "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.",
                    [([], (boot + startTicks / ticks).rounded(.down))])
            }
        }
        if let descriptors = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
            exposition.family("process_open_fds", "gauge", "Number of open file descriptors.", [([], Double(descriptors.count))])
        }
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            exposition.family("process_max_fds", "gauge", "Maximum number of open file descriptors.", [([], Double(limit.rlim_cur))])
        }
    }

    static func bootTime() -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8) else { return nil }
        let line = stat.split(separator: "\n").first { $0.hasPrefix("btime ") }
        return line.flatMap { Double($0.dropFirst(6)) }
    }
}
