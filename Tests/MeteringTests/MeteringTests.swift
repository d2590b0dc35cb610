import Encryption
import Foundation
import SchemaMigrations
import Postgres
import Synchronization
import Testing
import TestSupport
@testable import Metering
@testable import Tenancy

/// A tenant and key with given limits, and `instances` meters on the same database.
struct MeteringSetup {
    let system: TestTenancy
    let tenant: Tenant
    let principal: Principal
    let meters: [Meter]
    let pools: [PostgresPool]

    static func make(limits: LimitSettings, keyLimits: [String: Int] = [:], instances: Int = 1, spoolDirectory: String? = nil) async throws -> MeteringSetup {
        let system = try await TestTenancy.create(poolSize: 8)
        _ = try await LimitService(pool: system.pool).setPlan("unlimited", displayName: "No limits", limits: LimitSettings(), actor: .init("test"))
        let tenant = try await system.tenants.create(slug: "metered-\(UUID().uuidString.prefix(6).lowercased())", displayName: "M", plan: "unlimited", actor: .init("test"))
        try await LimitService(pool: system.pool).setTenantOverrides(tenant.id, limits, actor: .init("test"))
        let key = try await system.apiKeys.create(tenant: tenant.id, .init(name: "k", scopes: [.inference], limits: keyLimits), issuer: .operator(.init("test")))
        let principal = try await system.authenticator.authenticate(key.secret, clientAddress: "t")
        var pools = [system.pool]
        for _ in 1..<max(1, instances) { pools.append(PostgresPool(configuration: system.database.configuration)) }
        let meters = try pools.map { pool in
            Meter(pool: pool, spool: try spoolDirectory.map { try UsageSpool(directory: $0) })
        }
        return MeteringSetup(system: system, tenant: tenant, principal: principal, meters: meters, pools: pools)
    }

    func record(_ id: String, prompt: Int, completion: Int, images: Int = 0, at date: Date = Date(), model: String = "demo") -> SettlementRecord {
        SettlementRecord(
            requestID: id, tenantID: tenant.id, keyID: principal.keyID, model: model, route: "/v1/completions", promptTokens: prompt,
            completionTokens: completion, images: images, status: 200, latencyMs: 5, occurredAt: date)
    }

    func counter(_ metric: String) async throws -> (used: Int, reserved: Int) {
        let rows = try await system.pool.query(
            "SELECT coalesce(sum(used), 0)::bigint AS used, coalesce(sum(reserved), 0)::bigint AS reserved FROM quota_counters WHERE subject = $1 AND metric = $2",
            ["tenant:" + tenant.id.uuidString.lowercased(), metric])
        return (try rows[0].decode("used"), try rows[0].decode("reserved"))
    }

    func events() async throws -> Int {
        try await system.pool.query("SELECT count(*) AS n FROM usage_events WHERE tenant_id = $1", [tenant.id])[0].decode("n")
    }

    func close() async {
        for pool in pools.dropFirst() { await pool.shutdown() }
        await system.drop()
    }
}

final class Tally: Sendable {
    let admitted = Atomic<Int>(0)
    let used = Atomic<Int>(0)
    let rejected = Atomic<Int>(0)
}

@Suite struct QuotaTests {
    @Test func aHardQuotaIsNeverExceededByFiftyClientsOnTwoInstancesAndIsFullyUsable() async throws {
        let setup = try await MeteringSetup.make(limits: LimitSettings(monthlyTokens: 1000), instances: 2)
        try await withCleanup({ await setup.close() }) {
            let tally = Tally()
            // Each request reserves 10 + 30 = 40 tokens and uses between 25 and 40.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for client in 0..<50 {
                    group.addTask {
                        let meter = setup.meters[client % 2]
                        var attempt = 0
                        // The quota stops each client within a few requests; the bound keeps a
                        // broken quota from hanging the suite.
                        while attempt < 1000 {
                            let id = "c\(client)-\(attempt)"
                            attempt += 1
                            do {
                                _ = try await meter.admit(UsageEstimate(requestID: id, model: "demo", promptTokens: 10, maxCompletionTokens: 30), caller: setup.principal.metered)
                            } catch MeteringError.quotaExceeded {
                                tally.rejected.add(1, ordering: .relaxed)
                                return
                            }
                            tally.admitted.add(1, ordering: .relaxed)
                            let completion = 15 + (client * 7 + attempt) % 16
                            tally.used.add(10 + completion, ordering: .relaxed)
                            await meter.settle(setup.record(id, prompt: 10, completion: completion))
                        }
                        Issue.record("client \(client) was never refused: the quota did not hold")
                    }
                }
                try await group.waitForAll()
            }
            // Whatever room is left after everyone stopped: one client takes it until refused.
            var attempt = 0
            while attempt < 1000 {
                let id = "last-\(attempt)"
                attempt += 1
                do {
                    _ = try await setup.meters[0].admit(UsageEstimate(requestID: id, model: "demo", promptTokens: 10, maxCompletionTokens: 30), caller: setup.principal.metered)
                } catch MeteringError.quotaExceeded { break }
                tally.used.add(40, ordering: .relaxed)
                await setup.meters[0].settle(setup.record(id, prompt: 10, completion: 30))
            }
            let counter = try await setup.counter("tokens")
            #expect(counter.used == tally.used.load(ordering: .relaxed))
            #expect(counter.used <= 1000, "quota overshot: \(counter.used)")
            #expect(counter.used > 1000 - 40, "quota not fully usable: \(counter.used)")
            #expect(counter.reserved == 0)
            #expect(try await setup.events() == tally.admitted.load(ordering: .relaxed) + attempt - 1)
            #expect(tally.rejected.load(ordering: .relaxed) == 50)
        }
    }

    @Test func sixtyPerMinuteAdmitsExactlySixtyOfABurstOfAHundredOnOneOrTwoInstances() async throws {
        for instances in [1, 2] {
            let setup = try await MeteringSetup.make(limits: LimitSettings(requestsPerMinute: 60), instances: instances)
            let tally = Tally()
            let started = ContinuousClock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<100 {
                    group.addTask {
                        do {
                            let admission = try await setup.meters[index % instances].admit(
                                UsageEstimate(requestID: "burst-\(index)", model: "demo", promptTokens: 1), caller: setup.principal.metered)
                            #expect(admission.rateLimits.requests?.limit == 60)
                            tally.admitted.add(1, ordering: .relaxed)
                        } catch MeteringError.rateLimited(_, let retryAfter, _) {
                            #expect(retryAfter >= 1)
                            tally.rejected.add(1, ordering: .relaxed)
                        }
                    }
                }
                try await group.waitForAll()
            }
            // Exactly 60, plus the one request per second the limit refills while a slow (loaded)
            // machine runs the burst.
            let elapsed = ContinuousClock.now - started
            let refill = Int(elapsed.components.seconds) + 1
            let admitted = tally.admitted.load(ordering: .relaxed)
            #expect(admitted >= 60 && admitted <= 60 + (elapsed < .seconds(1) ? 0 : refill), "\(instances) instance(s): \(admitted) in \(elapsed)")
            #expect(admitted + tally.rejected.load(ordering: .relaxed) == 100)
            await setup.close()
        }
    }

    @Test func concurrencyAndKeyLimitsAreEnforcedAndReleased() async throws {
        let setup = try await MeteringSetup.make(limits: LimitSettings(maxConcurrent: 2), keyLimits: ["monthly_images": 3])
        try await withCleanup({ await setup.close() }) {
            let meter = setup.meters[0]
            _ = try await meter.admit(UsageEstimate(requestID: "a", model: "demo", images: 1), caller: setup.principal.metered)
            _ = try await meter.admit(UsageEstimate(requestID: "b", model: "demo", images: 1), caller: setup.principal.metered)
            await #expect(throws: MeteringError.self) {
                try await meter.admit(UsageEstimate(requestID: "c", model: "demo", images: 1), caller: setup.principal.metered)
            }
            await meter.settle(setup.record("a", prompt: 0, completion: 0, images: 1))
            _ = try await meter.admit(UsageEstimate(requestID: "c", model: "demo", images: 1), caller: setup.principal.metered)
            await meter.settle(setup.record("b", prompt: 0, completion: 0, images: 1))
            // The key's own monthly image quota (3) is tighter than the plan's.
            do {
                _ = try await meter.admit(UsageEstimate(requestID: "d", model: "demo", images: 1), caller: setup.principal.metered)
                Issue.record("key quota not enforced")
            } catch MeteringError.quotaExceeded(let message) {
                #expect(message.contains("for this key"))
            }
            await meter.settle(setup.record("c", prompt: 0, completion: 0, images: 1))
            #expect(try await setup.counter("concurrent").reserved == 0)
        }
    }

    @Test func expiredReservationsOfACrashedInstanceAreReturned() async throws {
        let setup = try await MeteringSetup.make(limits: LimitSettings(maxConcurrent: 1, monthlyTokens: 100))
        try await withCleanup({ await setup.close() }) {
            let crashed = Meter(pool: setup.system.pool, spool: nil, reservationTTLSeconds: 0)
            _ = try await crashed.admit(UsageEstimate(requestID: "lost", model: "demo", promptTokens: 50, maxCompletionTokens: 40), caller: setup.principal.metered)
            #expect(try await setup.counter("tokens").reserved == 90)
            try await Task.sleep(for: .milliseconds(50))
            #expect(try await setup.meters[0].sweepExpiredReservations() == 1)
            #expect(try await setup.counter("tokens").reserved == 0)
            #expect(try await setup.counter("concurrent").reserved == 0)
            _ = try await setup.meters[0].admit(UsageEstimate(requestID: "next", model: "demo", promptTokens: 50, maxCompletionTokens: 40), caller: setup.principal.metered)
        }
    }
}

@Suite struct SettlementTests {
    @Test func replayingASettlementLeavesExactlyOneEvent() async throws {
        let setup = try await MeteringSetup.make(limits: LimitSettings(monthlyTokens: 10_000))
        try await withCleanup({ await setup.close() }) {
            let meter = setup.meters[0]
            _ = try await meter.admit(UsageEstimate(requestID: "once", model: "demo", promptTokens: 5, maxCompletionTokens: 10), caller: setup.principal.metered)
            let record = setup.record("once", prompt: 5, completion: 7)
            #expect(try await meter.settleInDatabase(record))
            #expect(try await !meter.settleInDatabase(record))
            await meter.settle(record)
            #expect(try await setup.events() == 1)
            #expect(try await setup.counter("tokens").used == 12)
            let rollup = try await setup.system.pool.query("SELECT requests FROM usage_rollups WHERE tenant_id = $1", [setup.tenant.id])
            #expect(try rollup[0].decode("requests", as: Int.self) == 1)
        }
    }

    @Test func theSpoolReplaysAfterACrashAndNeverDoubleCounts() async throws {
        let directory = NSTemporaryDirectory() + "mg-spool-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let setup = try await MeteringSetup.make(limits: LimitSettings(monthlyTokens: 10_000))
        try await withCleanup({ await setup.close() }) {
            // Spooled but never settled (the process died in between).
            let crashed = try UsageSpool(directory: directory)
            for index in 0..<5 { try await crashed.append(setup.record("spooled-\(index)", prompt: 3, completion: 4)) }
            // A torn record at the end (died mid-write) is ignored.
            let handle = try #require(FileHandle(forWritingAtPath: crashed.path))
            handle.seekToEndOfFile()
            handle.write(Data([0, 0, 0, 200, 1, 2, 3]))
            try handle.close()
            // One of them had been settled before the crash.
            #expect(try await setup.meters[0].settleInDatabase(setup.record("spooled-0", prompt: 3, completion: 4)))

            let restarted = Meter(pool: setup.system.pool, spool: try UsageSpool(directory: directory))
            #expect(await restarted.replaySpool() == 5)
            #expect(try await setup.events() == 5)
            #expect(try await setup.counter("tokens").used == 35)
            #expect(await restarted.replaySpool() == 0)
            #expect(try await setup.events() == 5)
            #expect(UsageSpool.read(crashed.path).isEmpty)
        }
    }

    @Test func concurrentAdmissionsAndSettlementsOnTwoInstancesNeverDeadlock() async throws {
        // Tenant and key limits on every metric: admissions and settlements lock the same
        // counters, and must take them in one order (this deadlocked once, under a benchmark).
        let setup = try await MeteringSetup.make(
            limits: LimitSettings(maxConcurrent: 1000, monthlyTokens: 100_000_000, monthlyImages: 1_000_000, monthlyBudgetMicros: 1_000_000_000),
            keyLimits: ["max_concurrent": 1000, "monthly_tokens": 100_000_000], instances: 2)
        try await withCleanup({ await setup.close() }) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for client in 0..<24 {
                    group.addTask {
                        let meter = setup.meters[client % 2]
                        for sequence in 0..<15 {
                            let id = "d\(client)-\(sequence)"
                            _ = try await meter.admit(UsageEstimate(requestID: id, model: "demo", promptTokens: 5, maxCompletionTokens: 5), caller: setup.principal.metered)
                            try await meter.settleInDatabase(setup.record(id, prompt: 5, completion: 3))
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(try await setup.events() == 24 * 15)
            #expect(try await setup.counter("tokens") == (used: 24 * 15 * 8, reserved: 0))
            #expect(try await setup.counter("concurrent").reserved == 0)
            #expect(try await sweepNothingLeft(setup))
        }
    }

    private func sweepNothingLeft(_ setup: MeteringSetup) async throws -> Bool {
        try await setup.system.pool.query("SELECT count(*) AS n FROM quota_reservations")[0].decode("n", as: Int.self) == 0
    }

    @Test func concurrentSpoolAppendsAreAllDurableAndSettlingEmptiesTheFile() async throws {
        let directory = NSTemporaryDirectory() + "mg-spool-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let spool = try UsageSpool(directory: directory)
        let tenant = UUID()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<300 {
                group.addTask {
                    try await spool.append(SettlementRecord(
                        requestID: "r\(index)", tenantID: tenant, keyID: nil, model: "m", route: "/v1/completions",
                        promptTokens: index, completionTokens: 1, images: 0, status: 200, latencyMs: 1))
                }
            }
            try await group.waitForAll()
        }
        // Every acknowledged append is in the file (read back by a fresh reader).
        let records = spool.unsettled()
        #expect(records.count == 300)
        #expect(Set(records.map(\.requestID)).count == 300)
        #expect(spool.pendingCount == 300)
        for index in 0..<300 { spool.settled("r\(index)") }
        #expect(spool.pendingCount == 0)
        let size = try FileManager.default.attributesOfItem(atPath: spool.path)[.size] as? Int
        #expect(size == 0)
    }

    @Test func withTheDatabaseDownAdmissionFailsClearlyAndSettlementsWaitInTheSpool() async throws {
        let server = try await PrivateCluster()
        try await withCleanup({ await server.destroy() }) {
            let pool = PostgresPool(configuration: server.configuration(poolSize: 4))
            try await Migrator(pool: pool, migrations: SchemaMigrations.all).migrate()
            let keyFile = NSTemporaryDirectory() + "mg-keys-\(UUID().uuidString)/keyring.json"
            let keys = try Encryption.MasterKeys.generate()
            try keys.save(file: keyFile)
            let ring = Encryption.KeyRing(masterKeys: keys, store: PostgresDataKeyStore(pool: pool)) { keys }
            _ = try await LimitService(pool: pool).setPlan("unlimited", displayName: nil, limits: LimitSettings(), actor: .init("test"))
            let tenant = try await TenantService(pool: pool, keyRing: ring).create(slug: "outage", displayName: "O", plan: "unlimited", actor: .init("test"))
            let key = try await APIKeyService(pool: pool, keyHasher: keys.keyHasher).create(tenant: tenant.id, .init(name: "k", scopes: [.inference]), issuer: .operator(.init("test")))
            let principal = try await Authenticator(pool: pool, keyHasher: keys.keyHasher).authenticate(key.secret, clientAddress: "t")
            let directory = NSTemporaryDirectory() + "mg-spool-\(UUID().uuidString)"
            let meter = Meter(pool: pool, spool: try UsageSpool(directory: directory))
            let record = { (id: String) in
                SettlementRecord(requestID: id, tenantID: tenant.id, keyID: key.key.id, model: "demo", route: "/v1/completions",
                                 promptTokens: 2, completionTokens: 3, images: 0, status: 200, latencyMs: 1)
            }
            // Admitted before the outage, settled during it.
            for index in 0..<3 {
                _ = try await meter.admit(UsageEstimate(requestID: "r\(index)", model: "demo", promptTokens: 2, maxCompletionTokens: 5), caller: principal.metered)
            }
            try await server.stop()
            do {
                _ = try await meter.admit(UsageEstimate(requestID: "during", model: "demo", promptTokens: 2), caller: principal.metered)
                Issue.record("admitted without a database")
            } catch MeteringError.unavailable(let message) {
                #expect(message.contains("database"))
            }
            for index in 0..<3 { await meter.settle(record("r\(index)")) }
            #expect(meter.statistics.settlementFailures == 3)
            try await server.start()
            #expect(await meter.replaySpool() == 3)
            let events = try await pool.query("SELECT count(*) AS n FROM usage_events")
            #expect(try events[0].decode("n", as: Int.self) == 3)
            let month = String(Meter.monthStart(Date()).prefix(7))
            #expect(try await Reports(pool: pool).verify(month: month, prices: PriceBook(pool: pool)).isEmpty)
            await pool.shutdown()
        }
    }
}

@Suite struct BillingTests {
    /// Costs and worst-case reservations against 128-bit arithmetic, up to the highest price a
    /// price may be and far more tokens than a request can have (the products trapped once), and
    /// a price above the highest is refused.
    @Test func costsAreExactAndCannotOverflowAtTheHighestPrice() async throws {
        var random = SystemRandomNumberGenerator()
        let highest = PriceBook.maximumUnitPrice
        func reference(_ terms: [(Int, Int)], round: Int) -> Int {
            Int((terms.reduce(Int128(0)) { $0 + Int128($1.0) * Int128($1.1) } + Int128(round)) / 1_000_000)
        }
        for _ in 0..<2000 {
            let prompt = Int.random(in: 0...10_000_000_000, using: &random), completion = Int.random(in: 0...10_000_000_000, using: &random)
            let promptPrice = Bool.random(using: &random) ? highest : Int.random(in: 0...highest, using: &random)
            let completionPrice = Int.random(in: 0...highest, using: &random)
            #expect(Price.tokens(prompt, at: promptPrice) == reference([(prompt, promptPrice)], round: 500_000))
            let price = Price(prompt: promptPrice, completion: completionPrice, image: highest)
            #expect(price.cost(prompt: prompt, completion: completion, images: 64)
                == reference([(prompt, promptPrice)], round: 500_000) + reference([(completion, completionPrice)], round: 500_000) + 64 * highest)
        }
        let setup = try await MeteringSetup.make(limits: LimitSettings())
        try await withCleanup({ await setup.close() }) {
            let book = PriceBook(pool: setup.system.pool)
            try await book.set(model: "dear", metric: "prompt_tokens", unitPrice: highest, actor: .init("test"))
            try await book.set(model: "dear", metric: "completion_tokens", unitPrice: highest - 1, actor: .init("test"))
            await #expect(throws: MeteringError.invalid("price", "must be at most \(highest) micro-units")) {
                try await book.set(model: "dear", metric: "images", unitPrice: highest + 1, actor: .init("test"))
            }
            let estimate = UsageEstimate(requestID: "r", model: "dear", promptTokens: 8_388_607, maxCompletionTokens: 8_388_608)
            #expect(try await book.worstCase(estimate, tenant: setup.tenant.id)
                == reference([(8_388_607, highest), (8_388_608, highest - 1)], round: 999_999))
        }
    }

    @Test func aMidMonthPriceChangeAppliesFromItsTimeAndMoneyStaysInteger() async throws {
        let setup = try await MeteringSetup.make(limits: LimitSettings())
        try await withCleanup({ await setup.close() }) {
            let book = PriceBook(pool: setup.system.pool)
            let meter = setup.meters[0]
            var calendar = Calendar(identifier: .gregorian)
            calendar.timeZone = TimeZone(identifier: "UTC") ?? .current
            let march = try #require(calendar.date(from: DateComponents(year: 2026, month: 3, day: 1)))
            let change = try #require(calendar.date(from: DateComponents(year: 2026, month: 3, day: 16)))
            // 0.1 USD and then 0.3 USD per 1M prompt tokens; 0.7 per 1M completion tokens throughout.
            try await book.set(model: "demo", metric: "prompt_tokens", unitPrice: 100_000, effectiveFrom: march, actor: .init("test"), allowPast: true)
            try await book.set(model: "demo", metric: "completion_tokens", unitPrice: 700_000, effectiveFrom: march, actor: .init("test"), allowPast: true)
            try await book.set(model: "demo", metric: "prompt_tokens", unitPrice: 300_000, effectiveFrom: change, actor: .init("test"), allowPast: true)
            await #expect(throws: MeteringError.self) {
                try await book.set(model: "demo", metric: "prompt_tokens", unitPrice: 1, effectiveFrom: march, actor: .init("test"))
            }
            // Ten events before the change, ten after: 3,000,005 prompt and 1,000,001 completion tokens each.
            for index in 0..<20 {
                let time = (index < 10 ? march : change).addingTimeInterval(Double(index) * 60 + 1)
                await meter.settle(setup.record("bill-\(index)", prompt: 3_000_005, completion: 1_000_001, at: time))
            }
            let invoice = try await Reports(pool: setup.system.pool).invoice(tenant: setup.tenant.id, month: "2026-03")
            // Per event: prompt 3,000,005 x 0.1 = 300,000.5 -> 300,001 micro-units (half up); after the
            // change 900,001.5 -> 900,002; completion 700,000.7 -> 700,001.
            #expect(invoice.lines == [
                InvoiceLine(model: "demo", metric: "completion_tokens", quantity: 20_000_020, unitPrice: 700_000, amountMicros: 14_000_020),
                InvoiceLine(model: "demo", metric: "prompt_tokens", quantity: 30_000_050, unitPrice: 100_000, amountMicros: 3_000_010),
                InvoiceLine(model: "demo", metric: "prompt_tokens", quantity: 30_000_050, unitPrice: 300_000, amountMicros: 9_000_020),
            ])
            #expect(invoice.subtotalMicros == 26_000_050)
            let events = try await setup.system.pool.query("SELECT sum(cost_micros)::bigint AS total FROM usage_events WHERE tenant_id = $1", [setup.tenant.id])
            #expect(try events[0].decode("total", as: Int.self) == invoice.subtotalMicros)
            // Floating point would not even agree with itself here: summing the prices in dollars.
            let floating = (0..<10).reduce(0.0) { sum, _ in sum + 3_000_005 * 0.1 / 1e6 } * 1e6
            #expect(Int(floating) != 3_000_010)
            // Same data, same invoice.
            #expect(try await Reports(pool: setup.system.pool).invoice(tenant: setup.tenant.id, month: "2026-03") == invoice)
            #expect(try await Reports(pool: setup.system.pool).verify(month: "2026-03", prices: book).isEmpty)
            // Tampering with a stored price is reported.
            try await setup.system.pool.execute("UPDATE usage_events SET cost_micros = cost_micros + 1 WHERE request_id = 'bill-3'")
            let differences = try await Reports(pool: setup.system.pool).verify(month: "2026-03", prices: book)
            #expect(differences.contains { $0.requestID == "bill-3" })
        }
    }
}
