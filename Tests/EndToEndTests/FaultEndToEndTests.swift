import Audit
import Foundation
import Metering
import Postgres
import Tenancy
import TestSupport
import Testing

/// Faults with real processes on loopback: two instances behind a round-robin client, and an
/// instance killed with SIGKILL in the middle of a load run.
@Suite struct FaultEndToEndTests {
    @Test func twoInstancesBehindARoundRobinClientNeverOvershootAHardQuota() async throws {
        let fixture = try await GatewayFixture.start()
        try await withCleanup({ await fixture.stop() }) {
            let second = try await fixture.harness.server(extraEnvironment: [
                "MODELGATE_MODELS_DIRECTORY": fixture.models, "MODELGATE_METERING_SPOOL_DIRECTORY": fixture.harness.directory + "/spool-2",
            ])
            try await withCleanup({ await second.stopGracefully() }) {
                let quota = 400
                try await LimitService(pool: fixture.harness.system.pool).setTenantOverrides(
                    fixture.tenantA.id, LimitSettings(monthlyTokens: quota), actor: AuditActor("test"))
                let servers = [fixture.server.baseURL, second.baseURL]
                let outcomes = Shared<[Int: Int]>([:])
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for client in 0..<24 {
                        group.addTask {
                            var turn = client
                            // A quota of 400 tokens stops every client long before this bound;
                            // the bound only keeps a broken quota from hanging the suite.
                            while turn < client + 500 {
                                let base = servers[turn % 2]
                                turn += 1
                                let result = try await HTTP.send(
                                    .POST, base + "/v1/completions", key: fixture.keyA,
                                    json: ["model": "shakespeare", "prompt": "KING:", "max_tokens": 8, "temperature": 1])
                                outcomes.withLock { $0[result.status, default: 0] += 1 }
                                if result.status == 429 { return }
                                #expect(result.status == 200, "\(result.body)")
                            }
                            Issue.record("client \(client) was never refused: the quota did not hold")
                        }
                    }
                    try await group.waitForAll()
                }
                let pool = fixture.harness.system.pool
                let events = try await pool.query(
                    "SELECT count(*)::bigint AS n, coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint AS tokens FROM usage_events WHERE tenant_id = $1",
                    [fixture.tenantA.id])
                let used: Int = try events[0].decode("tokens")
                let seen = outcomes.withLock { $0 }
                #expect(try events[0].decode("n", as: Int.self) == seen[200, default: 0], "one usage event per 200: \(seen)")
                #expect(used <= quota)
                // Fully usable: less than one request's worst case (2 prompt + 8 completion tokens) left.
                #expect(quota - used < 10 + 8, "only \(used) of \(quota) tokens were usable")
                let counter = try await pool.query(
                    "SELECT used, reserved FROM quota_counters WHERE subject = $1 AND metric = 'tokens'", ["tenant:" + fixture.tenantA.id.uuidString.lowercased()])
                #expect(try counter[0].decode("used", as: Int.self) == used)
                #expect(try counter[0].decode("reserved", as: Int.self) == 0)
            }
        }
    }

    @Test(.timeLimit(.minutes(3))) func aKilledInstanceLosesNoUsageAndInventsNone() async throws {
        let fixture = try await GatewayFixture.start()
        try await withCleanup({ await fixture.stop() }) {
            let base = fixture.server.baseURL
            let completed = Shared<[String]>([])
            let aborted = Shared(0)
            let stop = Shared(false)
            let load = Task {
                await withTaskGroup(of: Void.self) { group in
                    for _ in 0..<8 {
                        group.addTask {
                            while !stop.withLock({ $0 }) {
                                do {
                                    let result = try await HTTP.send(
                                        .POST, base + "/v1/completions", key: fixture.keyA,
                                        json: ["model": "shakespeare", "prompt": "ROMEO:", "max_tokens": 24, "temperature": 1],
                                        timeout: .seconds(5))  // the client retries refused connections until its deadline
                                    if result.status == 200, let id = result.headers.first(name: "x-request-id") {
                                        let count = completed.withLock { $0.append(id); return $0.count }
                                        // Kill the moment the 20th answer arrives: a server that answered
                                        // before its usage was durable would lose that request's event.
                                        if count == 20 { fixture.server.signal(SIGKILL) }
                                    }
                                } catch {
                                    aborted.withLock { $0 += 1 }  // the connection died with the server
                                    try? await Task.sleep(for: .milliseconds(20))
                                }
                            }
                        }
                    }
                }
            }
            while completed.withLock({ $0.count }) < 20 { try await Task.sleep(for: .milliseconds(10)) }
            _ = await fixture.server.waitForExit(timeout: .seconds(10))
            try await Task.sleep(for: .milliseconds(300))
            stop.withLock { $0 = true }
            await load.value

            // Restart on the same spool and let it replay.
            let restarted = try await fixture.harness.server(extraEnvironment: ["MODELGATE_MODELS_DIRECTORY": fixture.models])
            try await withCleanup({ await restarted.stopGracefully() }) {
                let pool = fixture.harness.system.pool
                let okIDs = completed.withLock { $0 }
                var rows: PostgresRows = try await pool.query("SELECT request_id, status FROM usage_events WHERE tenant_id = $1", [fixture.tenantA.id])
                let deadline = ContinuousClock.now + .seconds(10)
                while ContinuousClock.now < deadline {
                    rows = try await pool.query("SELECT request_id, status FROM usage_events WHERE tenant_id = $1", [fixture.tenantA.id])
                    let settled = Set(try rows.map { try $0.decode("request_id", as: String.self) })
                    if Set(okIDs).isSubset(of: settled) { break }
                    try await Task.sleep(for: .milliseconds(100))
                }
                // And until the spool the killed instance left is replayed (the file is emptied once
                // nothing in it is pending), so that a double count would show.
                let spool = fixture.harness.directory + "/.modelgate/spool/usage.spool"
                while ContinuousClock.now < deadline, ((try? FileManager.default.attributesOfItem(atPath: spool)[.size] as? Int) ?? 0) > 0 {
                    try await Task.sleep(for: .milliseconds(100))
                }
                rows = try await pool.query("SELECT request_id, status FROM usage_events WHERE tenant_id = $1", [fixture.tenantA.id])
                let events = try rows.map { try $0.decode("request_id", as: String.self) }
                let counts = Dictionary(events.map { ($0, 1) }, uniquingKeysWith: +)
                // Every 200 the client saw has exactly one usage event ...
                for id in okIDs { #expect(counts[id] == 1, "request \(id) answered 200 has \(counts[id] ?? 0) usage events") }
                #expect(counts.values.allSatisfy { $0 == 1 })
                // ... and every other event belongs to a request the client saw abort.
                let extra = events.count - okIDs.count
                #expect(extra >= 0 && extra <= aborted.withLock { $0 }, "\(extra) events without a 200, \(aborted.withLock { $0 }) aborted requests")
            }
        }
    }

    @Test(.timeLimit(.minutes(3))) func aPostgreSQLRestartUnderLoadGivesOnly503sThenFullServiceAndLosesNothing() async throws {
        let cluster = try await PrivateCluster()
        let fixture = try await GatewayFixture.start(
            extraEnvironment: ["MODELGATE_DATABASE_CONNECT_TIMEOUT_SECONDS": "2"], database: try await TestDatabase.create(on: cluster))
        try await withCleanup({ await fixture.stop(); await cluster.destroy() }) {
            let base = fixture.server.baseURL
            struct Outcome { var started: ContinuousClock.Instant; var status: Int; var retryAfter: String?; var requestID: String? }
            let outcomes = Shared<[Outcome]>([])
            let transportErrors = Shared<[String]>([])
            let stop = Shared(false)
            let load = Task {
                await withTaskGroup(of: Void.self) { group in
                    for _ in 0..<6 {
                        group.addTask {
                            while !stop.withLock({ $0 }) {
                                let started = ContinuousClock.now
                                do {
                                    let result = try await HTTP.send(
                                        .POST, base + "/v1/completions", key: fixture.keyA,
                                        json: ["model": "shakespeare", "prompt": "ROMEO:", "max_tokens": 4, "temperature": 1], timeout: .seconds(20))
                                    outcomes.withLock {
                                        $0.append(Outcome(started: started, status: result.status, retryAfter: result.headers.first(name: "retry-after"),
                                                          requestID: result.headers.first(name: "x-request-id")))
                                    }
                                    if result.status != 200 { try? await Task.sleep(for: .milliseconds(50)) }
                                } catch {
                                    transportErrors.withLock { $0.append("\(error)") }
                                }
                            }
                        }
                    }
                }
            }
            func count(_ status: Int) -> Int { outcomes.withLock { $0.filter { $0.status == status }.count } }
            while count(200) < 20 { try await Task.sleep(for: .milliseconds(10)) }
            try await cluster.stop()
            let refusedBefore = count(503)
            try await Task.sleep(for: .seconds(3))
            #expect(count(503) > refusedBefore, "no request saw the outage")
            try await cluster.start()
            let back = ContinuousClock.now
            try await Task.sleep(for: .seconds(4))
            stop.withLock { $0 = true }
            await load.value

            let seen = outcomes.withLock { $0 }
            #expect(transportErrors.withLock { $0 }.isEmpty, "\(transportErrors.withLock { $0 }.prefix(3))")
            // During the outage: 503 with Retry-After, nothing else.
            for outcome in seen where outcome.status != 200 {
                #expect(outcome.status == 503 && outcome.retryAfter != nil, "status \(outcome.status), Retry-After \(outcome.retryAfter ?? "none")")
            }
            // Within 2 s of PostgreSQL's return, full service.
            let late = seen.filter { $0.started > back + .seconds(2) }
            #expect(!late.isEmpty)
            #expect(late.allSatisfy { $0.status == 200 }, "\(late.filter { $0.status != 200 }.count) of \(late.count) requests failed more than 2 s after PostgreSQL returned")

            // Nothing lost: once the spool has replayed, every 200 has exactly one usage event.
            let okIDs = seen.filter { $0.status == 200 }.compactMap(\.requestID)
            #expect(okIDs.count == seen.filter { $0.status == 200 }.count)
            let pool = fixture.harness.system.pool
            var counts: [String: Int] = [:]
            let deadline = ContinuousClock.now + .seconds(15)
            repeat {
                let rows = try await pool.query("SELECT request_id FROM usage_events WHERE tenant_id = $1 AND status = 200", [fixture.tenantA.id])
                counts = Dictionary(try rows.map { (try $0.decode("request_id", as: String.self), 1) }, uniquingKeysWith: +)
                if okIDs.allSatisfy({ counts[$0] != nil }) { break }
                try await Task.sleep(for: .milliseconds(100))
            } while ContinuousClock.now < deadline
            for id in okIDs { #expect(counts[id] == 1, "request \(id) answered 200 has \(counts[id] ?? 0) usage events") }
            #expect(counts.count == okIDs.count, "\(counts.count) billed successes for \(okIDs.count) 200 responses")
        }
    }
}

extension FaultEndToEndTests {
    @Test func aSecondInstanceOnTheSameSpoolDirectoryIsRefusedAndTheCLIStillWorks() async throws {
        let fixture = try await GatewayFixture.start()
        try await withCleanup({ await fixture.stop() }) {
            // Same working directory, so the same default spool directory.
            let second = try ModelGateProcess(
                in: fixture.harness.directory, environment: fixture.harness.environment.merging(["MODELGATE_MODELS_DIRECTORY": fixture.models]) { $1 })
            let status = await second.waitForExit(timeout: .seconds(60))
            #expect(status != nil && status != 0, "the second instance kept running")
            #expect(second.log.contains("is in use by another modelgate process (pid"), "\(second.log.suffix(2000))")
            // A CLI command beside the running server settles nothing and takes no lock.
            let listed = try await fixture.harness.cli(["tenant", "list"])
            #expect(listed.status == 0, "\(listed.output)")
            #expect(try await HTTP.send(.GET, fixture.server.baseURL + "/readyz").status == 200)
        }
    }
}
