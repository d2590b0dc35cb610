import Foundation
import Postgres
import Synchronization

/// Select-only round trips through `PostgresPool` (8 connections) vs `pgbench -S` (8 clients)
/// against the same freshly started server, same table, same query.
struct PoolBenchmark {
    let seconds: Double

    func run() async throws {
        let directory = "/tmp/modelgate-bench-\(getpid())"
        let cluster = try LocalPostgresCluster(directory: directory, options: .init(durable: true, maxConnections: 100))
        try cluster.start(database: "bench")
        defer { try? cluster.destroy() }
        let bin = try LocalPostgresCluster.findBinDirectory()
        let socket = cluster.socketDirectory
        let pgbenchBase = ["-h", socket, "-p", "5432", "-U", "postgres"]
        let initialised = try ChildProcess.run(bin + "/pgbench", pgbenchBase + ["-i", "-s", "10", "-q", "bench"])
        guard initialised.status == 0 else { throw BenchError("pgbench -i failed: \(initialised.output)") }

        var results: [String: Double] = [:]
        for mode in ["simple", "prepared"] {
            let run = try ChildProcess.run(
                bin + "/pgbench",
                pgbenchBase + ["-S", "-M", mode, "-c", "8", "-j", "2", "-T", String(Int(seconds)), "-n", "bench"])
            guard run.status == 0, let tps = Self.tps(run.output) else { throw BenchError("pgbench failed: \(run.output)") }
            results["pgbench_\(mode)"] = tps
        }

        let pool = PostgresPool(configuration: PostgresConfiguration(
            connectionString: cluster.connectionString(database: "bench"), poolSize: 8))
        let completed = Counter()
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        let started = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<32 {
                group.addTask {
                    while ContinuousClock.now < deadline {
                        let aid = Int.random(in: 1...1_000_000)
                        let rows = try await pool.query("SELECT abalance FROM pgbench_accounts WHERE aid = $1", [aid])
                        _ = try rows[0].decode("abalance", as: Int.self)
                        completed.add()
                    }
                }
            }
            try await group.waitForAll()
        }
        let elapsed = ContinuousClock.now - started
        let elapsedSeconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let poolQPS = Double(completed.value) / elapsedSeconds
        await pool.shutdown()

        let report: [String: Any] = [
            "benchmark": "postgres_pool_select",
            "pool_queries_per_second": Int(poolQPS),
            "pgbench_simple_tps": Int(results["pgbench_simple"] ?? 0),
            "pgbench_prepared_tps": Int(results["pgbench_prepared"] ?? 0),
            "ratio_vs_pgbench_simple": ((poolQPS / (results["pgbench_simple"] ?? 1)) * 100).rounded() / 100,
            "ratio_vs_pgbench_prepared": ((poolQPS / (results["pgbench_prepared"] ?? 1)) * 100).rounded() / 100,
            "seconds": seconds,
        ]
        let data = try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }

    static func tps(_ output: String) -> Double? {
        for line in output.split(separator: "\n") where line.hasPrefix("tps = ") {
            let number = line.dropFirst(6).split(separator: " ").first.map(String.init) ?? ""
            return Double(number)
        }
        return nil
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

final class Counter: Sendable {
    private let count = Atomic<Int>(0)
    func add() { count.add(1, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}
