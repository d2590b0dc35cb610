import Foundation
import Inference
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
        let database = pool.statistics
        gauge("modelgate_db_pool_connections", database.size)
        gauge("modelgate_db_pool_in_use", database.inUse)
        gauge("modelgate_db_pool_waiting", database.waiting)
        gauge("modelgate_db_pool_connection_errors", database.connectionErrors)
        gauge("modelgate_db_queries", database.queries)
        let keys = authenticator.statistics
        gauge("modelgate_key_cache_hits", keys.hits)
        gauge("modelgate_key_cache_misses", keys.misses)
        gauge("modelgate_key_cache_hit_ratio", keys.hits + keys.misses == 0 ? 0 : Double(keys.hits) / Double(keys.hits + keys.misses))
        gauge("modelgate_auth_failures", keys.failures)
        let metering = meter.statistics
        gauge("modelgate_admissions", metering.admitted)
        gauge("modelgate_usage_events_spooled", metering.spooled)
        gauge("modelgate_usage_events_replayed", metering.replayed)
        gauge("modelgate_usage_settlement_failures", metering.settlementFailures)
        for info in models.models() {
            for state in ["loading", "ready", "failed", "unloaded"] {
                gauge("modelgate_model_state", info.status.name == state ? 1 : 0, [("model", info.name), ("state", state)])
            }
            guard let (_, engine) = models.engine(info.name) else { continue }
            switch engine {
            case .text(let generator):
                let statistics = generator.statistics
                gauge("modelgate_model_queue_depth", statistics.waiting, [("model", info.name)])
                gauge("modelgate_model_running_sequences", statistics.running, [("model", info.name)])
            case .embeddings(let service):
                gauge("modelgate_model_queue_depth", service.waiting, [("model", info.name)])
            case .images(let service):
                gauge("modelgate_model_queue_depth", service.waiting, [("model", info.name)])
            }
            let shares = engine.shares.snapshot
            gauge("modelgate_model_share_waiting", shares.waiting, [("model", info.name)])
            gauge("modelgate_model_share_resting", shares.resting, [("model", info.name)])
        }
        return registry.emitToBuffer()
    }

    private func gauge(_ name: String, _ value: some BinaryInteger, _ labels: [(String, String)] = []) {
        gauge(name, Double(value), labels)
    }

    private func gauge(_ name: String, _ value: Double, _ labels: [(String, String)] = []) {
        let help = name.replacingOccurrences(of: "modelgate_", with: "").replacingOccurrences(of: "_", with: " ") + " (read at scrape time)"
        registry.makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels).set(value)
    }
}
