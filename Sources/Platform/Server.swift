import Audit
import Foundation
import Gateway
import Hummingbird
import Inference
import Logging
import Metering
import Postgres
import ServiceLifecycle
import Synchronization
import Tenancy
import Upstream

/// `modelgate serve`: opens the database, applies migrations, and runs the gateway until
/// SIGTERM/SIGINT, then drains in-flight requests (up to `server.shutdownGraceSeconds`) and
/// closes the pool.
public enum ModelGateServer {
    public static func run(_ configuration: ModelGateConfiguration, logger: Logger) async throws {
        let services = try await ModelGateServices.open(configuration, logger: logger, spool: true, create: true)
        try await bootstrapOperatorKey(services)
        Inference.BLAS.configureThreads()
        let registry = ModelRegistry(directory: ModelDirectory.resolve(configuration.models.directory), factories: ModelDirectory.engines)
        let control = ModelControl(pool: services.pool, registry: registry, logger: logger)
        await registry.loadAll()
        for info in registry.models() {
            if case .failed(let reason) = info.status {
                logger.error("model failed to load", metadata: ["model": "\(info.name)", "reason": "\(reason)"])
            } else {
                logger.info("model ready", metadata: ["model": "\(info.name)", "engine": "\(info.engine)"])
            }
        }
        await control.publish()
        let exporter = MetricsExport()
        let shutdown = ShutdownSignals(drainDelay: .milliseconds(configuration.server.drainDelayMs), logger: logger)
        var dependencies = GatewayDependencies(
            readiness: {
                var report = await Readiness.check(pool: services.pool, migrator: services.migrator, registry: registry)
                if shutdown.isDraining { report.problems["lifecycle"] = "draining: shutting down, send new requests elsewhere" }
                return report
            },
            authenticator: services.authenticator, tenants: services.tenants, apiKeys: services.apiKeys,
            auditLog: { tenant, since, limit in try await AuditLog.list(services.pool, tenant: tenant, since: since, limit: limit) },
            registry: registry, meter: services.meter, idempotency: services.idempotency, payloadLog: services.payloadLog, reports: services.reports,
            limits: services.limits, prices: services.prices, modelControl: { action, name in try await control.request(action, name) },
            maxBodyBytes: configuration.server.maxBodyBytes, requestTimeout: .seconds(configuration.server.requestTimeoutSeconds),
            metrics: {
                exporter.scrape(pool: services.pool, authenticator: services.authenticator, meter: services.meter, registry: registry)
            })
        dependencies.metricsNeedOperatorKey = configuration.server.metricsNeedOperatorKey
        dependencies.upstreamCredentials = services.upstreamCredentials
        dependencies.dropUnsupportedParams = configuration.server.dropUnsupportedParams
        dependencies.maxImagePixels = configuration.limits.maxImagePixels
        dependencies.maxImagePixelsPerRequest = configuration.limits.maxImagePixelsPerRequest
        let router = Gateway.makeRouter(dependencies)
        let app = Application(
            router: router,
            server: .http1(configuration: .init(idleTimeout: .seconds(Int64(configuration.server.idleTimeoutSeconds)))),
            configuration: .init(
                address: .hostname(configuration.server.host, port: configuration.server.port),
                serverName: "modelgate"),
            onServerRunning: { channel in
                let address = channel.localAddress.map { "\($0.ipAddress ?? configuration.server.host):\($0.port ?? 0)" } ?? "?"
                logger.info("modelgate listening", metadata: ["address": "\(address)"])
            },
            logger: logger)

        let group = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: PoolService(pool: services.pool)),
                    .init(service: BackgroundTask { await services.authenticator.runInvalidationListener() }),
                    .init(service: BackgroundTask { await services.authenticator.runLastUsedFlusher() }),
                    .init(service: BackgroundTask { await services.meter.runMaintenance() }),
                    .init(service: BackgroundTask { await services.runRetention() }),
                    .init(service: BackgroundTask { await control.listen() }),
                    .init(service: BackgroundTask { await control.reportEndpoints() }),
                    .init(service: app),
                ],
                gracefulShutdownSignals: [],
                cancellationSignals: [],
                logger: logger)
                .withGracePeriod(seconds: configuration.server.shutdownGraceSeconds))
        shutdown.attach(group)
        try await group.run()
        logger.info("modelgate stopped")
    }

    /// Zero-config convenience: the first start prints an operator key on stdout (never in the
    /// log) so the operator can create tenants over HTTP at once.
    static func bootstrapOperatorKey(_ services: ModelGateServices) async throws {
        guard services.configuration.database.url.isEmpty else { return }
        let existing = try await services.apiKeys.list(tenant: nil)
        guard existing.isEmpty else { return }
        let created = try await services.apiKeys.create(
            tenant: nil, NewAPIKey(name: "bootstrap operator key", scopes: [.admin]), issuer: .operator(AuditActor("system:bootstrap")))
        FileHandle.standardOutput.write(Data("""
            ──────────────────────────────────────────────────────────────────────
            ModelGate created an operator key (scope: admin). It is shown only once:

                \(created.secret)

            Tenants, keys, limits and prices over HTTP with it: README, "The operator's HTTP API"
            (for example: curl -H "Authorization: Bearer <key>" http://HOST:PORT/admin/v1/tenants)
            ──────────────────────────────────────────────────────────────────────

            """.utf8))
        services.logger.notice("printed a bootstrap operator key on stdout", metadata: ["key_prefix": "\(created.key.prefix)"])
    }
}

extension ServiceGroupConfiguration {
    func withGracePeriod(seconds: Int) -> ServiceGroupConfiguration {
        var copy = self
        copy.maximumGracefulShutdownDuration = .seconds(seconds)
        return copy
    }
}

/// SIGTERM/SIGINT: the first marks the server as draining (`/readyz` answers 503 so a load
/// balancer stops sending), and after `server.drainDelayMs` starts the graceful shutdown
/// (the listener closes, in-flight requests finish within the grace period, usage is settled
/// or spooled, the pool closes); a second exits at once (what was in flight is in the usage
/// spool, or its quota reservation expires).
final class ShutdownSignals: Sendable {
    private final class Flag: Sendable {
        let raised = Atomic<Bool>(false)
        let group = Mutex<ServiceGroup?>(nil)
    }

    private let flag = Flag()
    private let sources: Mutex<[any DispatchSourceSignal]>

    init(drainDelay: Duration, logger: Logger) {
        let flag = self.flag
        sources = Mutex([SIGTERM, SIGINT].map { signalNumber in
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler {
                if flag.raised.exchange(true, ordering: .relaxed) {
                    logger.warning("second shutdown signal: exiting now")
                    exit(130)
                }
                logger.notice("shutdown signal: not ready any more; draining in-flight requests")
                let group = flag.group.withLock { $0 }
                Task {
                    try? await Task.sleep(for: drainDelay)
                    await group?.triggerGracefulShutdown()
                }
            }
            source.resume()
            return source
        })
    }

    /// The group whose graceful shutdown the first signal starts (after the drain delay).
    func attach(_ group: ServiceGroup) { flag.group.withLock { $0 = group } }

    var isDraining: Bool { flag.raised.load(ordering: .relaxed) }
}

/// Keeps the pool open until everything registered after it (the HTTP server) has drained,
/// then closes every connection.
struct PoolService: Service {
    let pool: PostgresPool

    func run() async throws {
        try? await gracefulShutdown()
        await pool.shutdown()
    }
}

/// A loop that runs until graceful shutdown cancels it.
struct BackgroundTask: Service {
    let body: @Sendable () async -> Void

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await body()
        }
    }
}

enum Readiness {
    static func check(pool: PostgresPool, migrator: Migrator, registry: ModelRegistry) async -> ReadinessReport {
        var checks: [String: String?] = [:]
        var models: [String: String] = [:]
        for info in registry.models() {
            let state = info.reason.map { "\(info.status.name): \($0)" } ?? info.status.name
            models[info.name] = state
            if info.required { checks["model:" + info.name] = info.status == .ready ? String?.none : "required model is \(state)" }
        }
        do {
            checks["migrations"] = try await migrator.problem()
            checks["database"] = String?.none
        } catch let error as PostgresError {
            checks["database"] = "database unreachable: \(error.message)"
            checks["migrations"] = "unknown (database unreachable)"
        } catch {
            checks["database"] = "database check failed"
        }
        return ReadinessReport(checks: checks, models: models)
    }
}

/// The model directory: as configured (relative to the working directory), or, when that does
/// not exist, the repository's `models/` beside the binary (a development checkout).
public enum ModelDirectory {
    /// The engines a model folder may name: the native ones and the upstream engine.
    public static let engines: [any EngineFactory.Type] = EngineFactories.native + [UpstreamFactory.self]

    public static func resolve(_ configured: String) -> String {
        if FileManager.default.fileExists(atPath: configured) { return configured }
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<5 {
            let candidate = directory.appendingPathComponent("models")
            if configured == "models", FileManager.default.fileExists(atPath: candidate.path + "/.modelgate-models") { return candidate.path }
            directory = directory.deletingLastPathComponent()
        }
        return configured
    }
}
