import Foundation
import Postgres

/// A cluster of a test's own, for tests that stop or restart the server (which would disturb
/// every other test on the shared cluster). Costs an initdb (about a second).
public final class PrivateCluster: Sendable {
    public let cluster: LocalPostgresCluster

    public init() async throws {
        let directory = "/tmp/modelgate-test-\(getpid())-private-\(UInt32.random(in: 0...UInt32.max))"
        cluster = try await Task.detached {
            let cluster = try LocalPostgresCluster(directory: directory, options: .init(durable: false, maxConnections: 50))
            try cluster.start(database: "app")
            return cluster
        }.value
    }

    public func configuration(poolSize: Int = 4, connectTimeoutSeconds: Int = 2) -> PostgresConfiguration {
        PostgresConfiguration(
            connectionString: cluster.connectionString(database: "app"), poolSize: poolSize,
            connectTimeoutSeconds: connectTimeoutSeconds, acquireTimeoutSeconds: 10)
    }

    public func stop() async throws { try await Task.detached { [cluster] in try cluster.stop() }.value }
    public func start() async throws { try await Task.detached { [cluster] in _ = try cluster.start(database: "app") }.value }
    public func destroy() async { await Task.detached { [cluster] in try? cluster.destroy() }.value }
}
