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
    /// configuration means (and creating it only when `create`: `serve` and `db init` do,
    /// other commands fail naming where they looked). Says so in one log line.
    public static func postgresConfiguration(
        _ configuration: ModelGateConfiguration, logger: Logger, create: Bool = false
    ) throws -> PostgresConfiguration {
        var connectionString = configuration.database.url
        if let cluster = try localCluster(configuration, logger: logger) {
            guard create || cluster.exists else { throw DatabaseBootstrapError.noLocalDatabase(cluster.directory) }
            let started = try cluster.start(database: "modelgate", create: create)
            connectionString = cluster.connectionString(database: "modelgate")
            logger.log(
                level: started ? .info : .debug,
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
    public static func openPool(_ configuration: ModelGateConfiguration, logger: Logger, create: Bool = false) async throws -> PostgresPool {
        let settings = try postgresConfiguration(configuration, logger: logger, create: create)
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

/// Why a command found no database to work on.
public enum DatabaseBootstrapError: Error, CustomStringConvertible {
    /// Zero-config mode, and no cluster where this command looked: only `serve` and
    /// `db init` create one.
    case noLocalDatabase(String)

    public var description: String {
        switch self {
        case .noLocalDatabase(let directory):
            "no ModelGate database in \(directory) (no database.url is set, and only 'modelgate serve' and 'modelgate db init' create one): "
                + "run this where the server runs, or pass --config, or set MODELGATE_DATABASE_URL"
        }
    }
}
