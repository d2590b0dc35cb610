import Foundation
import Logging
import Postgres
import SchemaMigrations
import Synchronization

/// One throwaway PostgreSQL cluster per test process, started by the tests themselves, and a
/// fresh database per test cloned from a migrated template (fast, isolated, parallel-safe).
///
/// ```swift
/// let database = try await TestDatabase.create()
/// defer { database.drop() }   // or let it be: the cluster is deleted when the process exits
/// let pool = database.pool
/// ```
public final class TestDatabase: Sendable {
    public let name: String
    public let pool: PostgresPool
    public let configuration: PostgresConfiguration

    /// A new database holding the full schema.
    public static func create(poolSize: Int = 4, statementTimeoutMilliseconds: Int = 30_000) async throws -> TestDatabase {
        let cluster = try await TestCluster.shared()
        let name = "t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(20)
        try await cluster.adminPool.execute(
            "CREATE DATABASE \(name) TEMPLATE \(TestCluster.templateName)")
        var configuration = PostgresConfiguration(
            connectionString: cluster.cluster.connectionString(database: String(name)),
            poolSize: poolSize, connectTimeoutSeconds: 2,
            statementTimeoutMilliseconds: statementTimeoutMilliseconds, acquireTimeoutSeconds: 30)
        configuration.applicationName = "modelgate-tests"
        return TestDatabase(name: String(name), pool: PostgresPool(configuration: configuration), configuration: configuration)
    }

    /// A new, empty database (no migrations applied).
    public static func createEmpty(poolSize: Int = 4) async throws -> TestDatabase {
        let cluster = try await TestCluster.shared()
        let name = "e_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(20)
        try await cluster.adminPool.execute("CREATE DATABASE \(name) TEMPLATE template0")
        let configuration = PostgresConfiguration(
            connectionString: cluster.cluster.connectionString(database: String(name)), poolSize: poolSize,
            connectTimeoutSeconds: 2, acquireTimeoutSeconds: 30)
        return TestDatabase(name: String(name), pool: PostgresPool(configuration: configuration), configuration: configuration)
    }

    /// The database `app` of a private cluster, migrated (for tests that restart PostgreSQL).
    public static func create(on cluster: PrivateCluster, poolSize: Int = 4) async throws -> TestDatabase {
        let configuration = cluster.configuration(poolSize: poolSize)
        let pool = PostgresPool(configuration: configuration)
        try await Migrator(pool: pool, migrations: SchemaMigrations.all, logger: Logger(label: "modelgate.tests")).migrate()
        return TestDatabase(name: "app", pool: pool, configuration: configuration, onSharedCluster: false)
    }

    /// Whether the database lives on the shared cluster (and is dropped from it when done).
    let onSharedCluster: Bool

    init(name: String, pool: PostgresPool, configuration: PostgresConfiguration, onSharedCluster: Bool = true) {
        self.name = name
        self.pool = pool
        self.configuration = configuration
        self.onSharedCluster = onSharedCluster
    }

    /// The libpq connection string of this database (for a `modelgate` process under test).
    public var connectionString: String { configuration.connectionString }

    /// Closes the pool and drops the database.
    public func drop() async {
        await pool.shutdown()
        if onSharedCluster, let cluster = try? await TestCluster.shared() {
            _ = try? await cluster.adminPool.execute("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
        }
    }

    /// The shared cluster's directory and socket (for tests that run `psql`/`pg_dump`).
    public static func cluster() async throws -> LocalPostgresCluster {
        try await TestCluster.shared().cluster
    }
}

/// The process-wide test cluster: created on first use in a temporary directory, removed at exit.
final class TestCluster: Sendable {
    static let templateName = "modelgate_template"
    let cluster: LocalPostgresCluster
    let adminPool: PostgresPool

    private static let state = Mutex<Task<TestCluster, any Error>?>(nil)

    static func shared() async throws -> TestCluster {
        let task = state.withLock { current -> Task<TestCluster, any Error> in
            if let current { return current }
            let task = Task { try await TestCluster.boot() }
            current = task
            return task
        }
        return try await task.value
    }

    private init(cluster: LocalPostgresCluster, adminPool: PostgresPool) {
        self.cluster = cluster
        self.adminPool = adminPool
    }

    private static func boot() async throws -> TestCluster {
        removeStaleClusters()
        let directory = "/tmp/modelgate-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        var logger = Logger(label: "modelgate.tests")
        logger.logLevel = .warning
        // Every test runs at once, each with its own database, pools and servers: a full suite
        // peaked at 312 connections here, and a fresh-clone CI run hit an earlier cap of 400.
        let cluster = try await Task.detached {
            let cluster = try LocalPostgresCluster(
                directory: directory, options: .init(durable: false, maxConnections: 1000, port: 5432), logger: logger)
            try cluster.start(database: templateName)
            return cluster
        }.value
        Cleanup.register(cluster)
        let template = PostgresPool(configuration: PostgresConfiguration(
            connectionString: cluster.connectionString(database: templateName), poolSize: 1))
        try await Migrator(pool: template, migrations: SchemaMigrations.all, logger: logger).migrate()
        await template.shutdown()
        let admin = PostgresPool(configuration: PostgresConfiguration(
            connectionString: cluster.connectionString(database: "postgres"), poolSize: 2, acquireTimeoutSeconds: 60))
        try await admin.execute("ALTER DATABASE \(templateName) WITH is_template = true ALLOW_CONNECTIONS = false")
        return TestCluster(cluster: cluster, adminPool: admin)
    }

    /// Clusters left by test processes that died without cleaning up.
    private static func removeStaleClusters() {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/tmp") else { return }
        for entry in entries where entry.hasPrefix("modelgate-test-") {
            let parts = entry.split(separator: "-")
            guard parts.count >= 3, let pid = Int32(parts[2]), kill(pid, 0) != 0 else { continue }
            if let stale = try? LocalPostgresCluster(directory: "/tmp/" + entry, options: .init(durable: false)) {
                try? stale.destroy()
            }
        }
    }
}

/// Stops and deletes the test cluster when the test process exits.
enum Cleanup {
    private static let registered = Mutex<LocalPostgresCluster?>(nil)

    static func register(_ cluster: LocalPostgresCluster) {
        registered.withLock { $0 = cluster }
        atexit {
            Cleanup.registered.withLock { cluster in
                try? cluster?.destroy()
            }
        }
    }
}
