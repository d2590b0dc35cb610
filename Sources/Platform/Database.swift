import Foundation
import Logging
import Postgres
import SchemaMigrations

/// Opens the database a configuration names: the configured URL, or — when none is set — a
/// local PostgreSQL cluster under `database.localDirectory`, created and started on demand.
public enum DatabaseBootstrap {
    /// The local cluster zero-config mode uses (nil when a database URL is configured).
    public static func localCluster(_ configuration: ModelGateConfiguration, logger: Logger) throws -> LocalPostgresCluster? {
        guard configuration.database.url.isEmpty else { return nil }
        return try LocalPostgresCluster(directory: configuration.database.localDirectory, logger: logger)
    }

    /// Resolves the connection settings, starting the local cluster if that is what the
    /// configuration means. Says so in one log line.
    public static func postgresConfiguration(
        _ configuration: ModelGateConfiguration, logger: Logger
    ) throws -> PostgresConfiguration {
        var connectionString = configuration.database.url
        if let cluster = try localCluster(configuration, logger: logger) {
            let started = try cluster.start(database: "modelgate")
            connectionString = cluster.connectionString(database: "modelgate")
            logger.info(
                "\(started ? "started" : "using running") local PostgreSQL (no database.url configured; stop it with 'modelgate db stop')",
                metadata: ["directory": "\(cluster.directory)"])
        }
        return PostgresConfiguration(
            connectionString: connectionString,
            poolSize: configuration.database.poolSize,
            connectTimeoutSeconds: configuration.database.connectTimeoutSeconds,
            statementTimeoutMilliseconds: configuration.database.statementTimeoutMs)
    }

    /// Opens a pool and checks that the server answers; fails with a clear error otherwise.
    public static func openPool(_ configuration: ModelGateConfiguration, logger: Logger) async throws -> PostgresPool {
        let settings = try postgresConfiguration(configuration, logger: logger)
        let pool = PostgresPool(configuration: settings, logger: logger)
        do {
            try await pool.query("SELECT 1")
        } catch {
            await pool.shutdown()
            throw error
        }
        return pool
    }

    public static func migrator(_ pool: PostgresPool, logger: Logger) -> Migrator {
        Migrator(pool: pool, migrations: SchemaMigrations.all, logger: logger)
    }
}
