import Foundation
import Gateway
import Hummingbird
import Logging
import Postgres
import ServiceLifecycle

/// `modelgate serve`: opens the database, applies migrations, and runs the gateway until
/// SIGTERM/SIGINT, then drains in-flight requests (up to `server.shutdownGraceSeconds`) and
/// closes the pool.
public enum ModelGateServer {
    public static func run(_ configuration: ModelGateConfiguration, logger: Logger) async throws {
        let pool = try await DatabaseBootstrap.openPool(configuration, logger: logger)
        let migrator = DatabaseBootstrap.migrator(pool, logger: logger)
        do {
            try await migrator.migrate()
        } catch {
            await pool.shutdown()
            throw error
        }

        let dependencies = GatewayDependencies(readiness: {
            await Readiness.check(pool: pool, migrator: migrator)
        })
        let router = Gateway.makeRouter(dependencies)
        let app = Application(
            router: router,
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
                    .init(service: PoolService(pool: pool)),
                    .init(service: app),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                cancellationSignals: [],
                logger: logger)
                .withGracePeriod(seconds: configuration.server.shutdownGraceSeconds))
        try await group.run()
        logger.info("modelgate stopped")
    }
}

extension ServiceGroupConfiguration {
    func withGracePeriod(seconds: Int) -> ServiceGroupConfiguration {
        var copy = self
        copy.maximumGracefulShutdownDuration = .seconds(seconds)
        return copy
    }
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

enum Readiness {
    static func check(pool: PostgresPool, migrator: Migrator) async -> ReadinessReport {
        var checks: [String: String?] = [:]
        do {
            checks["migrations"] = try await migrator.problem()
            checks["database"] = String?.none
        } catch let error as PostgresError {
            checks["database"] = "database unreachable: \(error.message)"
            checks["migrations"] = "unknown (database unreachable)"
        } catch {
            checks["database"] = "database check failed"
        }
        return ReadinessReport(checks: checks)
    }
}
