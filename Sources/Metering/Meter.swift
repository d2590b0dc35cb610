import Foundation
import Logging
import Postgres
import Synchronization

/// What a request may use at most, known before it runs.
public struct UsageEstimate: Sendable {
    public var requestID: String
    public var model: String
    /// Prompt tokens plus `max_tokens` (the worst case), for token quotas and tokens per minute.
    public var promptTokens: Int
    public var maxCompletionTokens: Int
    public var images: Int

    public init(requestID: String, model: String, promptTokens: Int = 0, maxCompletionTokens: Int = 0, images: Int = 0) {
        self.requestID = requestID
        self.model = model
        self.promptTokens = promptTokens
        self.maxCompletionTokens = maxCompletionTokens
        self.images = images
    }

    var tokens: Int { promptTokens + maxCompletionTokens }

    /// The worst case of `work` for request `requestID` on `model`.
    public init(requestID: String, model: String, worstCase work: WorstCase) {
        self.init(requestID: requestID, model: model, promptTokens: work.promptTokens, maxCompletionTokens: work.maxCompletionTokens, images: work.images)
    }
}

/// The most a piece of work can use, as admission reserves it: Metering's rule for each kind.
public struct WorstCase: Sendable, Equatable {
    public var promptTokens = 0
    public var maxCompletionTokens = 0
    public var images = 0

    /// Text generation: every prompt's tokens, and `maxTokens` for each of `choices` choices
    /// of each of `prompts` prompts (a choice may run to its limit; n choices share the prompt).
    public static func generation(promptTokens: Int, maxTokens: Int, choices: Int, prompts: Int) -> WorstCase {
        let (perPrompt, overflow) = maxTokens.multipliedReportingOverflow(by: max(1, choices))
        let (total, overflowAgain) = perPrompt.multipliedReportingOverflow(by: max(1, prompts))
        return WorstCase(promptTokens: promptTokens, maxCompletionTokens: overflow || overflowAgain ? Int.max / 2 : total)
    }

    /// Embeddings: the input's tokens.
    public static func embedding(tokens: Int) -> WorstCase { WorstCase(promptTokens: tokens) }

    /// Image classification: the images sent.
    public static func images(_ count: Int) -> WorstCase { WorstCase(images: count) }
}

/// The state of one rate limit after admission, for OpenAI's `x-ratelimit-*` headers.
public struct RateLimitStatus: Sendable, Equatable {
    public var limit: Int
    public var remaining: Int
    /// Seconds until the limit is fully available again.
    public var resetSeconds: Double
}

/// The per-minute limits a request met, for OpenAI's `x-ratelimit-*` headers: on an admitted
/// request and on a refused one alike.
public struct RateLimitReport: Sendable, Equatable {
    public var requests: RateLimitStatus?
    public var tokens: RateLimitStatus?

    public init(requests: RateLimitStatus? = nil, tokens: RateLimitStatus? = nil) {
        self.requests = requests
        self.tokens = tokens
    }

    /// Keeps the tighter status per kind (the tenant's and the key's limits both apply).
    mutating func include(_ status: RateLimitStatus, what: String) {
        if what == "requests" {
            if requests.map({ status.remaining < $0.remaining }) ?? true { requests = status }
        } else if tokens.map({ status.remaining < $0.remaining }) ?? true {
            tokens = status
        }
    }
}

/// An admitted request: its reservation is held until `settle`.
public struct Admission: Sendable {
    public var requestID: String
    public var tenantID: UUID
    public var keyID: UUID
    public var rateLimits: RateLimitReport

    public init(requestID: String, tenantID: UUID, keyID: UUID, rateLimits: RateLimitReport) {
        self.requestID = requestID
        self.tenantID = tenantID
        self.keyID = keyID
        self.rateLimits = rateLimits
    }
}

/// Admission (rate limits, concurrency, quota reservation) and settlement (usage event, rollup,
/// counters), exact across any number of instances because every decision is a row-locked
/// update in PostgreSQL inside one transaction. Settlement goes through the write-ahead spool:
/// a request that ran is billed exactly once, whatever dies in between.
public final class Meter: Sendable {
    let pool: PostgresPool
    let limits: LimitService
    let prices: PriceBook
    let spool: UsageSpool?
    let logger: Logger
    /// How long a reservation outlives a crashed instance before the sweeper returns it.
    let reservationTTL: Int
    let counters = MeterCounters()
    private let faultBeforeSettlement: Bool
    /// What this instance last learned of each rate-limit subject (`tenant:<id>:rpm`...).
    private let observedRates = Mutex<[String: ObservedRate]>([:])

    /// A subject's theoretical arrival time as this instance last saw it (converted to the
    /// local clock), with the limit it was seen under. The shared value only grows, so a
    /// request this lower bound already refuses, the database would refuse too: such requests
    /// are answered 429 before their body is read (`precheck`). Forgotten when the tenant's or
    /// key's limits change (`forgetRates`).
    struct ObservedRate {
        var tat: Date
        var limit: Int
    }

    public init(pool: PostgresPool, spool: UsageSpool?, logger: Logger = Logger(label: "modelgate.metering"), reservationTTLSeconds: Int = 600) {
        self.pool = pool
        self.limits = LimitService(pool: pool)
        self.prices = PriceBook(pool: pool)
        self.spool = spool
        self.logger = logger
        self.reservationTTL = reservationTTLSeconds
        // Fault injection for the crash tests: die after spooling, before the database settlement.
        self.faultBeforeSettlement = ProcessInfo.processInfo.environment["MODELGATE_FAULT_CRASH_BEFORE_SETTLEMENT"] == "1"
    }

    // MARK: Admission

    /// Checks rate limits and concurrency and reserves the worst case against every hard quota
    /// and the budget, atomically. Throws `rateLimited`, `quotaExceeded` or `unavailable`.
    public func admit(_ estimate: UsageEstimate, caller: MeteredCaller) async throws -> Admission {
        let (tenant, plan, key) = (caller.tenantID, caller.plan, caller.keyID)
        let ttl = reservationTTL
        do {
            let budget = try await prices.worstCase(estimate, tenant: tenant)
            let (admission, observed) = try await pool.transaction { connection -> (Admission, [(String, RateLimitStatus, Date)]) in
                let (now, tenantLimits, keyLimits) = try LimitService.effectiveNow(connection, tenant: tenant, plan: plan, keyLimits: caller.keyLimits)
                var report = RateLimitReport()
                var observed: [(String, RateLimitStatus, Date)] = []
                let offset = Date().timeIntervalSince(now)  // local clock minus the database's
                // Rate limits: tenant first, then key (fixed order, no deadlocks).
                for (subject, settings) in [(caller.tenantSubject, tenantLimits), (caller.keySubject, keyLimits)] {
                    for (suffix, limit, cost, what) in [
                        (":rpm", settings.requestsPerMinute, 1, "requests"), (":tpm", settings.tokensPerMinute, estimate.tokens, "tokens"),
                    ] {
                        guard let limit else { continue }
                        do {
                            let (status, tat) = try RateLimiter.take(connection, subject: subject + suffix, limit: limit, cost: cost, now: now, what: what)
                            report.include(status, what: what)
                            observed.append((subject + suffix, status, tat.addingTimeInterval(offset)))
                        } catch let refusal as RateLimiter.Refusal {
                            report.include(refusal.status, what: what)
                            self.observe([(subject + suffix, refusal.status, refusal.tat.addingTimeInterval(offset))])
                            throw MeteringError.rateLimited(message: refusal.message, retryAfterSeconds: refusal.retryAfterSeconds, report: report)
                        }
                    }
                }
                // Concurrency and monthly quotas, as reservations on counters.
                let period = Self.monthStart(now)
                var subjects: [String] = []
                var concurrent = 0
                for (subject, settings) in [(caller.tenantSubject, tenantLimits), (caller.keySubject, keyLimits)] {
                    var touched = false
                    if let limit = settings.maxConcurrent {
                        try Self.reserve(connection, subject: subject, metric: "concurrent", period: "1970-01-01", amount: 1, limit: limit) {
                            MeteringError.rateLimited(
                                message: "Too many concurrent requests (limit \(limit)); retry when one finishes.", retryAfterSeconds: 1, report: report)
                        }
                        concurrent = 1
                        touched = true
                    }
                    let quotas: [(String, Int?, Int, String)] = [
                        ("tokens", settings.monthlyTokens, estimate.tokens, "tokens"),
                        ("images", settings.monthlyImages, estimate.images, "images"),
                        ("budget", settings.monthlyBudgetMicros, budget, "budget (micro-units)"),
                    ]
                    for (metric, limit, amount, noun) in quotas {
                        guard let limit else { continue }
                        try Self.reserve(connection, subject: subject, metric: metric, period: period, amount: amount, limit: limit) {
                            MeteringError.quotaExceeded(
                                "You exceeded your monthly quota of \(limit) \(noun)\(subject.hasPrefix("key:") ? " for this key" : ""); this request needs up to \(amount).")
                        }
                        touched = true
                    }
                    if touched { subjects.append(subject) }
                }
                try connection.execute(
                    """
                    INSERT INTO quota_reservations (request_id, tenant_id, key_id, period_start, tokens, images, budget, concurrent, subjects, expires_at)
                    VALUES ($1, $2, $3, $4::date, $5, $6, $7, $8, $9, now() + make_interval(secs => $10::float8))
                    """,
                    [estimate.requestID, tenant, key, period, estimate.tokens, estimate.images, budget, concurrent, subjects, Double(ttl)])
                return (Admission(requestID: estimate.requestID, tenantID: tenant, keyID: key, rateLimits: report), observed)
            }
            // Only what committed: a take rolled back (a quota refused after it) is no lower bound.
            observe(observed)
            counters.admitted.add(1, ordering: .relaxed)
            return admission
        } catch let error as MeteringError {
            counters.rejected.add(1, ordering: .relaxed)
            throw error
        } catch let error as PostgresError where error.isUniqueViolation {
            throw MeteringError.invalid("request_id", "request \(estimate.requestID) is already in flight or was settled")
        } catch let error as PostgresError where error.isConnectionError || error.kind == .poolTimeout {
            throw MeteringError.unavailable("The request cannot be admitted: the database is unreachable. Retry shortly.")
        }
    }

    // MARK: Refusals before the body is read

    func observe(_ entries: [(String, RateLimitStatus, Date)]) {
        guard !entries.isEmpty else { return }
        observedRates.withLock { rates in
            if rates.count > 100_000 { rates.removeAll() }  // bounded: a lower bound may always be forgotten
            for (subject, status, tat) in entries { rates[subject] = ObservedRate(tat: tat, limit: status.limit) }
        }
    }

    /// 429 when what this instance has seen proves that a request of `caller` costing
    /// `tokens` (a lower bound; 0 before the body is read) cannot be admitted: decided from
    /// memory, before the request's body is read or its work (tokenizing, image decoding)
    /// begins. Never refuses what admission would accept (see `ObservedRate`).
    public func precheck(_ caller: MeteredCaller, tokens: Int = 0) throws {
        let now = Date()
        var report = RateLimitReport()
        var refusal: (String, Int)?
        observedRates.withLock { rates in
            for subject in [caller.tenantSubject, caller.keySubject] {
                for (suffix, cost, what) in [(":rpm", 1, "requests"), (":tpm", tokens, "tokens")] where cost > 0 {
                    guard let seen = rates[subject + suffix], seen.limit > 0 else { continue }
                    let interval = RateLimiter.window / Double(seen.limit)
                    let ahead = seen.tat.timeIntervalSince(now)
                    let wait = ahead + interval * Double(cost) - RateLimiter.window
                    let status = RateLimitStatus(
                        limit: seen.limit, remaining: max(0, Int(((RateLimiter.window - ahead) / interval).rounded(.down))),
                        resetSeconds: max(0, ahead))
                    report.include(status, what: what)
                    if wait > 0, cost <= seen.limit, refusal == nil {
                        refusal = ("Rate limit reached: \(seen.limit) \(what) per minute. Retry after \(Int(wait.rounded(.up))) s.", max(1, Int(wait.rounded(.up))))
                    }
                }
            }
        }
        if let (message, retryAfter) = refusal {
            counters.rejected.add(1, ordering: .relaxed)
            throw MeteringError.rateLimited(message: message, retryAfterSeconds: retryAfter, report: report)
        }
    }

    /// Forgets what was seen of a tenant's rate limits, or a key's (their limits changed), or
    /// all of them (nil: a plan changed, or changes may have been missed).
    public func forgetRates(tenant: UUID? = nil, key: UUID? = nil) {
        observedRates.withLock { rates in
            if let tenant { rates = rates.filter { !$0.key.hasPrefix("tenant:" + tenant.uuidString.lowercased()) } }
            if let key { rates = rates.filter { !$0.key.hasPrefix("key:" + key.uuidString.lowercased()) } }
            if tenant == nil, key == nil { rates.removeAll() }
        }
    }

    /// Adds `amount` to a counter's reservations if used + reserved stays within `limit`.
    static func reserve(
        _ connection: PostgresConnection, subject: String, metric: String, period: String, amount: Int, limit: Int,
        refusal: () -> MeteringError
    ) throws {
        guard amount > 0 else { return }
        // One round trip: a new counter starts with this reservation if it fits at all; an
        // existing one takes it only if used + reserved stays within the limit (row-locked).
        let updated = try connection.execute(
            """
            INSERT INTO quota_counters AS q (subject, metric, period_start, reserved)
            SELECT $1, $2, $3::date, $4::bigint WHERE $4::bigint <= $5::bigint
            ON CONFLICT (subject, metric, period_start) DO UPDATE SET reserved = q.reserved + EXCLUDED.reserved
                WHERE q.used + q.reserved + EXCLUDED.reserved <= $5::bigint
            """, [subject, metric, period, amount, limit])
        if updated == 0 { throw refusal() }
    }

    /// A change to one quota counter: reservations released, usage added.
    struct CounterChange {
        var subject: String
        var metric: String
        var period: String
        var released = 0
        var used = 0
        /// Create the counter if it does not exist yet.
        var create = false
    }

    /// The order every transaction touches quota counters in — tenant subjects before key
    /// subjects, then by subject, then concurrent, tokens, images, budget (the order admission
    /// reserves them) — so admissions, settlements and the sweeper never deadlock one another.
    static func locksBefore(_ a: CounterChange, _ b: CounterChange) -> Bool {
        let metrics = ["concurrent", "tokens", "images", "budget"]
        func rank(_ change: CounterChange) -> (Int, String, Int, String) {
            (change.subject.hasPrefix("tenant:") ? 0 : 1, change.subject, metrics.firstIndex(of: change.metric) ?? metrics.count, change.period)
        }
        return rank(a) < rank(b)
    }

    /// The changes that return a reservation row (`quota_reservations`, as deleted), adding
    /// `used` per metric.
    static func release(_ held: PostgresRow, used: [String: Int]) throws -> [CounterChange] {
        let period: String = try held.decode("period")
        let subjects: [String] = try held.decode("subjects")
        var changes: [CounterChange] = []
        for subject in subjects {
            changes.append(.init(subject: subject, metric: "concurrent", period: "1970-01-01", released: try held.decode("concurrent")))
            for metric in ["tokens", "images", "budget"] {
                changes.append(.init(subject: subject, metric: metric, period: period, released: try held.decode(metric), used: used[metric] ?? 0))
            }
        }
        return changes
    }

    /// Applies counter changes (merged per counter) in lock order.
    static func apply(_ changes: [CounterChange], on connection: PostgresConnection) throws {
        var merged: [String: CounterChange] = [:]
        for change in changes {
            let id = change.subject + "|" + change.metric + "|" + change.period
            if var existing = merged[id] {
                existing.released += change.released
                existing.used += change.used
                existing.create = existing.create || change.create
                merged[id] = existing
            } else {
                merged[id] = change
            }
        }
        for change in merged.values.sorted(by: locksBefore) where change.released != 0 || change.used != 0 {
            if change.create {
                try connection.execute(
                    "INSERT INTO quota_counters (subject, metric, period_start) VALUES ($1, $2, $3::date) ON CONFLICT DO NOTHING",
                    [change.subject, change.metric, change.period])
            }
            try connection.execute(
                """
                UPDATE quota_counters SET reserved = greatest(reserved - $4, 0), used = used + $5
                WHERE subject = $1 AND metric = $2 AND period_start = $3::date
                """, [change.subject, change.metric, change.period, change.released, change.used])
        }
    }

    static func monthStart(_ date: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC") ?? .current
        let parts = calendar.dateComponents([.year, .month], from: date)
        return String(format: "%04d-%02d-01", parts.year ?? 1970, parts.month ?? 1)
    }

    /// Returns an admitted request's reservation without a usage event: for a request that
    /// turned out to be the client's mistake before any work ran on it (an image that does not
    /// decode). Its rate-limit take stays taken. If the database is away, the reservation
    /// expires instead.
    public func cancel(_ admission: Admission) async {
        do {
            try await pool.transaction { connection in
                let held = try connection.query(
                    """
                    DELETE FROM quota_reservations WHERE request_id = $1
                    RETURNING period_start::text AS period, tokens, images, budget, concurrent, subjects
                    """, [admission.requestID])
                try Self.apply(held.flatMap { try Self.release($0, used: [:]) }, on: connection)
            }
        } catch {
            logger.warning("cancelled admission left to expire", metadata: ["request_id": "\(admission.requestID)"])
        }
    }

    // MARK: Settlement

    /// Records the actual usage of an admitted (or failed, or cancelled) request: spooled first,
    /// then settled in the database. Never throws: if the database is away, the spool keeps it.
    public func settle(_ record: SettlementRecord) async {
        if let spool {
            do {
                try await spool.append(record)
            } catch {
                logger.error("usage spool write failed; settling directly", metadata: ["error": "\(error)"])
            }
            counters.spooled.add(1, ordering: .relaxed)
        }
        if faultBeforeSettlement { kill(getpid(), SIGKILL) }
        do {
            try await settleInDatabase(record)
            spool?.settled(record.requestID)
        } catch {
            counters.settlementFailures.add(1, ordering: .relaxed)
            logger.warning("settlement deferred to the spool", metadata: ["request_id": "\(record.requestID)"])
        }
    }

    /// Settles one record idempotently: a request id already settled changes nothing.
    /// Returns false for a duplicate.
    ///
    /// One transaction of four round trips, plus one per quota counter touched: BEGIN, the price
    /// in force, one statement that marks the request settled, takes its reservation back and
    /// writes the usage event and the hourly rollup (all of it only if the request was not
    /// settled before), the counters, COMMIT.
    @discardableResult
    public func settleInDatabase(_ record: SettlementRecord) async throws -> Bool {
        try await pool.transaction { connection -> Bool in
            let price = try PriceBook.price(connection, model: record.model, tenant: record.tenantID, at: record.occurredAt)
            let cost = price.cost(prompt: record.promptTokens, completion: record.completionTokens, images: record.images)
            let actualTokens = record.promptTokens + record.completionTokens
            let rows = try connection.query(
                Self.settlementStatement,
                [
                    record.requestID, record.tenantID, record.keyID, record.model, record.route, record.promptTokens,
                    record.completionTokens, record.images, record.status, record.latencyMs, price.prompt, price.completion,
                    price.image, cost, record.occurredAt, record.usageSource?.rawValue,
                ])
            guard let row = rows.first, try row.decode("fresh", as: Bool.self) else { return false }
            if try row.decode("period", as: String?.self) != nil {
                try Self.apply(
                    Self.release(row, used: ["tokens": actualTokens, "images": record.images, "budget": cost]), on: connection)
            } else {
                // The reservation expired (a crash long ago) or never existed: count the usage.
                let period = Self.monthStart(record.occurredAt)
                var changes: [CounterChange] = []
                for (metric, used) in [("tokens", actualTokens), ("images", record.images), ("budget", cost)] {
                    changes.append(.init(subject: "tenant:" + record.tenantID.uuidString.lowercased(), metric: metric, period: period, used: used, create: true))
                    if let key = record.keyID {
                        changes.append(.init(subject: "key:" + key.uuidString.lowercased(), metric: metric, period: period, used: used))
                    }
                }
                try Self.apply(changes, on: connection)
            }
            return true
        }
    }

    /// Settlement's one statement ($1 request id, $2 tenant, $3 key, $4 model, $5 route, $6-$8
    /// prompt tokens, completion tokens, images, $9 status, $10 latency, $11-$13 prices, $14
    /// cost, $15 time, $16 usage source): one row, `fresh` false for a request settled before (then nothing
    /// changed), and the reservation taken back (its columns NULL when there was none).
    static let settlementStatement = """
        WITH fresh AS (
            INSERT INTO settled_requests (request_id, tenant_id, occurred_at) VALUES ($1, $2, $15)
            ON CONFLICT DO NOTHING RETURNING request_id
        ), held AS (
            DELETE FROM quota_reservations WHERE request_id = $1 AND EXISTS (SELECT 1 FROM fresh)
            RETURNING period_start::text AS period, tokens, images, budget, concurrent, subjects
        ), event AS (
            INSERT INTO usage_events (request_id, tenant_id, key_id, model, route, prompt_tokens, completion_tokens, images,
                status, latency_ms, prompt_price, completion_price, image_price, cost_micros, occurred_at, usage_source)
            SELECT $1, $2, $3::uuid, $4::text, $5::text, $6::bigint, $7::bigint, $8::bigint, $9::integer, $10::integer,
                $11::bigint, $12::bigint, $13::bigint, $14::bigint, $15::timestamptz, $16::text
            FROM fresh
        ), rollup AS (
            INSERT INTO usage_rollups (tenant_id, key_id, model, hour, requests, prompt_tokens, completion_tokens, images, cost_micros)
            SELECT $2, $3::uuid, $4::text, date_trunc('hour', $15::timestamptz), 1, $6::bigint, $7::bigint, $8::bigint, $14::bigint
            FROM fresh
            ON CONFLICT (tenant_id, key_id, model, hour) DO UPDATE SET
                requests = usage_rollups.requests + 1,
                prompt_tokens = usage_rollups.prompt_tokens + EXCLUDED.prompt_tokens,
                completion_tokens = usage_rollups.completion_tokens + EXCLUDED.completion_tokens,
                images = usage_rollups.images + EXCLUDED.images,
                cost_micros = usage_rollups.cost_micros + EXCLUDED.cost_micros
        )
        SELECT EXISTS (SELECT 1 FROM fresh) AS fresh, held.* FROM (SELECT 1) AS one LEFT JOIN held ON true
        """

    // MARK: Background work

    /// Settles what the spool holds (after a crash, or records deferred while the database was
    /// away). Returns how many were settled.
    @discardableResult
    public func replaySpool() async -> Int {
        guard let spool else { return 0 }
        var settled = 0
        for record in spool.unsettled() {
            do {
                try await settleInDatabase(record)
                spool.settled(record.requestID)
                settled += 1
                counters.replayed.add(1, ordering: .relaxed)
            } catch {
                break  // still unreachable; try again later
            }
        }
        return settled
    }

    /// Returns expired reservations (instances that crashed mid-request) to their counters.
    @discardableResult
    public func sweepExpiredReservations() async throws -> Int {
        try await pool.transaction { connection -> Int in
            let expired = try connection.query(
                """
                DELETE FROM quota_reservations WHERE request_id IN (
                    SELECT request_id FROM quota_reservations WHERE expires_at < now() ORDER BY expires_at LIMIT 200 FOR UPDATE SKIP LOCKED)
                RETURNING period_start::text AS period, tokens, images, budget, concurrent, subjects
                """)
            try Self.apply(expired.flatMap { try Self.release($0, used: [:]) }, on: connection)
            return expired.count
        }
    }

    /// Spool replay every second, the sweeper every 10 s, partitions daily; until cancelled.
    public func runMaintenance() async {
        var tick = 0
        await replaySpool()
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            if spool?.pendingCount ?? 0 > 0 || tick % 10 == 0 { await replaySpool() }
            if tick % 10 == 0 { _ = try? await sweepExpiredReservations() }
            if tick % 3600 == 0 { _ = try? await pool.execute("SELECT ensure_usage_partitions((now() AT TIME ZONE 'UTC')::date, 3)") }
            tick += 1
        }
    }

    public var statistics: (admitted: Int, rejected: Int, spooled: Int, replayed: Int, settlementFailures: Int) {
        (counters.admitted.load(ordering: .relaxed), counters.rejected.load(ordering: .relaxed), counters.spooled.load(ordering: .relaxed),
         counters.replayed.load(ordering: .relaxed), counters.settlementFailures.load(ordering: .relaxed))
    }
}

final class MeterCounters: Sendable {
    let admitted = Atomic<Int>(0)
    let rejected = Atomic<Int>(0)
    let spooled = Atomic<Int>(0)
    let replayed = Atomic<Int>(0)
    let settlementFailures = Atomic<Int>(0)
}

/// Rate limits with the generic cell rate algorithm: one row per subject holds the theoretical
/// arrival time; a request is allowed when it would not push that time more than one window
/// (60 s) past now. One statement, row-locked: exact across instances, bursts up to the limit.
enum RateLimiter {
    static let window: Double = 60

    /// A refusal, with the state that refused it.
    struct Refusal: Error {
        var message: String
        var retryAfterSeconds: Int
        var status: RateLimitStatus
        /// The subject's theoretical arrival time (database clock).
        var tat: Date
    }

    /// Takes `cost` from the subject's budget: its status and theoretical arrival time after
    /// the take, or a `Refusal`.
    static func take(_ connection: PostgresConnection, subject: String, limit: Int, cost: Int, now: Date, what: String) throws -> (RateLimitStatus, Date) {
        guard limit > 0 else {
            throw Refusal(
                message: "Rate limit of 0 \(what) per minute: this key may not make requests.", retryAfterSeconds: 60,
                status: RateLimitStatus(limit: 0, remaining: 0, resetSeconds: window), tat: now)
        }
        let interval = window / Double(limit)  // seconds per unit
        if cost > limit {
            throw Refusal(
                message: "This request needs \(cost) \(what) but the limit is \(limit) \(what) per minute; reduce it.", retryAfterSeconds: 60,
                status: RateLimitStatus(limit: limit, remaining: limit, resetSeconds: 0), tat: now)
        }
        let increment = interval * Double(cost)
        let rows = try connection.query(
            """
            INSERT INTO rate_limit_state (subject, tat) VALUES ($1, $2::timestamptz + make_interval(secs => $3::float8))
            ON CONFLICT (subject) DO UPDATE
                SET tat = greatest(rate_limit_state.tat, $2::timestamptz) + make_interval(secs => $3::float8)
                WHERE greatest(rate_limit_state.tat, $2::timestamptz) + make_interval(secs => $3::float8)
                      <= $2::timestamptz + make_interval(secs => $4::float8)
            RETURNING tat
            """, [subject, now, increment, window])
        func status(_ tat: Date) -> RateLimitStatus {
            let ahead = max(0, tat.timeIntervalSince(now))
            return RateLimitStatus(limit: limit, remaining: max(0, Int(((window - ahead) / interval).rounded(.down))), resetSeconds: ahead)
        }
        if let row = rows.first {
            let tat: Date = try row.decode("tat")
            return (status(tat), tat)
        }
        let current = try connection.query("SELECT tat FROM rate_limit_state WHERE subject = $1", [subject])
        let tat: Date = try current.first?.decode("tat") ?? now
        let wait = tat.timeIntervalSince(now) + increment - window
        throw Refusal(
            message: "Rate limit reached: \(limit) \(what) per minute. Retry after \(Int(wait.rounded(.up))) s.",
            retryAfterSeconds: max(1, Int(wait.rounded(.up))), status: status(tat), tat: tat)
    }
}
