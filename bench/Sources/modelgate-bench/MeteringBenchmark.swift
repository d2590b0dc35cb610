import Audit
import Encryption
import Foundation
import Metering
import Postgres
import SchemaMigrations
import Synchronization
import Tenancy

/// Admissions + settlements per second through `Meter` alone (no HTTP), with one and with two
/// "instances" (meters with their own connection pools) on one database, and the latency each
/// request gains (p50/p99 of admit + settle). Quotas, a rate limit and concurrency are enforced,
/// and every settlement goes through the fsync'd spool, as in serving.
struct MeteringBenchmark {
    let seconds: Double

    func run() async throws {
        let directory = "/tmp/modelgate-bench-metering-\(getpid())"
        let cluster = try LocalPostgresCluster(directory: directory + "/db", options: .init(durable: ProcessInfo.processInfo.environment["BENCH_DURABLE"] != "0", maxConnections: 100))
        try cluster.start(database: "bench")
        defer { try? cluster.destroy(); try? FileManager.default.removeItem(atPath: directory) }
        let configuration = PostgresConfiguration(connectionString: cluster.connectionString(database: "bench"), poolSize: 8)
        let pool = PostgresPool(configuration: configuration)
        try await Migrator(pool: pool, migrations: SchemaMigrations.all).migrate()
        let keys = try MasterKeys.generate()
        let ring = KeyRing(masterKeys: keys, store: PostgresDataKeyStore(pool: pool)) { keys }
        _ = try await LimitService(pool: pool).setPlan(
            "bench", displayName: nil,
            limits: LimitSettings(requestsPerMinute: 100_000_000, tokensPerMinute: 1_000_000_000, maxConcurrent: 10_000, monthlyTokens: 1_000_000_000_000),
            actor: AuditActor("bench"))
        let tenant = try await TenantService(pool: pool, keyRing: ring).create(slug: "bench", displayName: "Bench", plan: "bench", actor: AuditActor("bench"))
        let key = try await APIKeyService(pool: pool, keyHasher: keys.keyHasher).create(tenant: tenant.id, NewAPIKey(name: "k", scopes: [.inference]), issuer: .operator(AuditActor("bench")))
        let principal = try await Authenticator(pool: pool, keyHasher: keys.keyHasher).authenticate(key.secret, clientAddress: "bench")

        // The baseline: the least an exact, shared counter costs — per request, two
        // transactions that each update one row (admission reserves, settlement commits),
        // through the same pool and with the same number of clients.
        try await pool.execute("CREATE TABLE bench_baseline (id int PRIMARY KEY, n bigint NOT NULL)")
        try await pool.execute("INSERT INTO bench_baseline VALUES (1, 0)")
        var baseline: [Int: Double] = [:]
        for clients in [1, 32] {
            let deadline = Date().addingTimeInterval(seconds / 2)
            let started = Date()
            let pairs = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<clients {
                    group.addTask {
                        var pairs = 0
                        while Date() < deadline {
                            for _ in 0..<2 {
                                try await pool.transaction { try $0.execute("UPDATE bench_baseline SET n = n + 1 WHERE id = 1") }
                            }
                            pairs += 1
                        }
                        return pairs
                    }
                }
                return try await group.reduce(0, +)
            }
            baseline[clients] = Double(pairs) / Date().timeIntervalSince(started)
        }

        for (instances, clients) in [(1, 1), (1, 32), (2, 32)] {
            var pools = [pool]
            for _ in 1..<instances { pools.append(PostgresPool(configuration: configuration)) }
            let meters = try pools.enumerated().map { index, pool in
                Meter(pool: pool, spool: try UsageSpool(directory: directory + "/spool-\(instances)-\(clients)-\(index)"))
            }
            let latencies = Latencies()
            let deadline = Date().addingTimeInterval(seconds)
            let started = Date()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for client in 0..<clients {
                    group.addTask {
                        let meter = meters[client % meters.count]
                        var sequence = 0
                        while Date() < deadline {
                            let id = "i\(instances)-n\(clients)-c\(client)-\(sequence)"
                            sequence += 1
                            let begin = ContinuousClock.now
                            _ = try await meter.admit(UsageEstimate(requestID: id, model: "demo", promptTokens: 20, maxCompletionTokens: 40), caller: MeteredCaller(tenantID: tenant.id, keyID: principal.keyID, plan: principal.tenantPlan ?? "", keyLimits: principal.limits))
                            await meter.settle(SettlementRecord(
                                requestID: id, tenantID: tenant.id, keyID: principal.keyID, model: "demo", route: "/v1/completions",
                                promptTokens: 20, completionTokens: 30, images: 0, status: 200, latencyMs: 1))
                            latencies.record(ContinuousClock.now - begin)
                        }
                    }
                }
                try await group.waitForAll()
            }
            let elapsed = Date().timeIntervalSince(started)
            let (count, p50, p99) = latencies.summary()
            let rate = Double(count) / elapsed
            let floor = baseline[clients] ?? rate
            printJSON([
                "benchmark": "metering", "instances": instances, "clients": clients,
                "admissions_and_settlements_per_second": Int(rate),
                "baseline_two_row_updates_per_second": Int(floor), "ratio_vs_baseline": (rate / floor * 100).rounded() / 100,
                "added_latency_p50_ms": p50, "added_latency_p99_ms": p99, "seconds": seconds,
            ])
            for extra in pools.dropFirst() { await extra.shutdown() }
        }
        await pool.shutdown()
    }
}

/// Request latencies from many tasks.
final class Latencies: Sendable {
    private let values = Mutex<[Double]>([])

    func record(_ duration: Duration) {
        let milliseconds = Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
        values.withLock { $0.append(milliseconds) }
    }

    /// Count, p50 and p99 in milliseconds (two decimals).
    func summary() -> (Int, Double, Double) {
        let sorted = values.withLock { $0 }.sorted()
        guard !sorted.isEmpty else { return (0, 0, 0) }
        func percentile(_ p: Double) -> Double { (sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] * 100).rounded() / 100 }
        return (sorted.count, percentile(0.5), percentile(0.99))
    }
}
