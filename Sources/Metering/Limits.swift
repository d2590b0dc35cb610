import Audit
import Foundation
import Postgres

/// The limits a plan, a tenant override or a key override sets; nil means "not limited here".
public struct LimitSettings: Sendable, Equatable, Codable {
    public var requestsPerMinute: Int?
    public var tokensPerMinute: Int?
    public var maxConcurrent: Int?
    public var monthlyTokens: Int?
    public var monthlyImages: Int?
    public var monthlyBudgetMicros: Int?

    public init(
        requestsPerMinute: Int? = nil, tokensPerMinute: Int? = nil, maxConcurrent: Int? = nil, monthlyTokens: Int? = nil,
        monthlyImages: Int? = nil, monthlyBudgetMicros: Int? = nil
    ) {
        self.requestsPerMinute = requestsPerMinute
        self.tokensPerMinute = tokensPerMinute
        self.maxConcurrent = maxConcurrent
        self.monthlyTokens = monthlyTokens
        self.monthlyImages = monthlyImages
        self.monthlyBudgetMicros = monthlyBudgetMicros
    }

    public enum CodingKeys: String, CodingKey, CaseIterable {
        case requestsPerMinute = "requests_per_minute"
        case tokensPerMinute = "tokens_per_minute"
        case maxConcurrent = "max_concurrent"
        case monthlyTokens = "monthly_tokens"
        case monthlyImages = "monthly_images"
        case monthlyBudgetMicros = "monthly_budget_micros"
    }

    /// In an override, this value means "unlimited" (where nil means "inherit").
    public static let unlimited = -1

    /// Absent values are `null`; an override's `unlimited` is the string `"unlimited"`.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        for key in CodingKeys.allCases {
            let value = self[key]
            if value == Self.unlimited { try container.encode("unlimited", forKey: key) } else { try container.encode(value, forKey: key) }
        }
    }

    /// The value of one limit by its name.
    public subscript(key: CodingKeys) -> Int? {
        get {
            switch key {
            case .requestsPerMinute: requestsPerMinute
            case .tokensPerMinute: tokensPerMinute
            case .maxConcurrent: maxConcurrent
            case .monthlyTokens: monthlyTokens
            case .monthlyImages: monthlyImages
            case .monthlyBudgetMicros: monthlyBudgetMicros
            }
        }
        set {
            switch key {
            case .requestsPerMinute: requestsPerMinute = newValue
            case .tokensPerMinute: tokensPerMinute = newValue
            case .maxConcurrent: maxConcurrent = newValue
            case .monthlyTokens: monthlyTokens = newValue
            case .monthlyImages: monthlyImages = newValue
            case .monthlyBudgetMicros: monthlyBudgetMicros = newValue
            }
        }
    }

    /// These settings, or an error naming the first value no limit can have (negative, or
    /// too large for its column). `unlimited` is allowed in a tenant's override (it lifts the
    /// plan's limit), nowhere else.
    public func validated(allowingUnlimited: Bool = false) throws -> LimitSettings {
        let values: [(CodingKeys, Int?, Int)] = [
            (.requestsPerMinute, requestsPerMinute, Int(Int32.max)), (.tokensPerMinute, tokensPerMinute, Int.max),
            (.maxConcurrent, maxConcurrent, Int(Int32.max)), (.monthlyTokens, monthlyTokens, Int.max),
            (.monthlyImages, monthlyImages, Int.max), (.monthlyBudgetMicros, monthlyBudgetMicros, Int.max),
        ]
        for (key, value, maximum) in values {
            guard let value, !(allowingUnlimited && value == Self.unlimited) else { continue }
            guard value >= 0, value <= maximum else {
                throw MeteringError.invalid(key.rawValue, "must be an integer from 0 to \(maximum), or null for no limit")
            }
        }
        return self
    }

    /// The tighter of two settings, metric by metric.
    public func tightened(by other: LimitSettings) -> LimitSettings {
        var tightest = LimitSettings()
        for key in CodingKeys.allCases {
            switch (self[key], other[key]) {
            case let (a?, b?): tightest[key] = min(a, b)
            case let (a, b): tightest[key] = a ?? b
            }
        }
        return tightest
    }

    /// From a key's `limits` JSON (names as in `CodingKeys`).
    public init(keyLimits: [String: Int]) {
        self.init()
        for key in CodingKeys.allCases { self[key] = keyLimits[key.rawValue] }
    }

    /// As a key's `limits` JSON: the limits set, by name.
    public var keyLimits: [String: Int] {
        Dictionary(uniqueKeysWithValues: CodingKeys.allCases.compactMap { key in self[key].map { (key.rawValue, $0) } })
    }

    /// What a `name=value` assignment may say besides a number.
    public enum Words: Sendable {
        /// A plan: `unlimited` (no limit).
        case plan
        /// A tenant's override: `inherit` (the plan's value) or `unlimited` (above any plan).
        case tenantOverride
        /// A key's override, which can only tighten its tenant's: `inherit`.
        case keyOverride
    }

    /// Parses `name=value` pairs (`requests_per_minute=60`, `monthly_tokens=unlimited`,
    /// `max_concurrent=inherit`) onto self.
    public func updating(_ assignments: [String], words: Words) throws -> LimitSettings {
        var copy = self
        for assignment in assignments {
            let parts = assignment.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw MeteringError.invalid("limits", "expected name=value, got '\(assignment)'") }
            guard let key = CodingKeys(rawValue: parts[0]) else {
                throw MeteringError.invalid(
                    parts[0], "unknown limit (known: \(CodingKeys.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            let allowed: [String] = switch words {
            case .plan: ["unlimited"]
            case .tenantOverride: ["inherit", "unlimited"]
            case .keyOverride: ["inherit"]
            }
            switch parts[1] {
            case "inherit" where allowed.contains("inherit"):
                copy[key] = nil
            case "unlimited" where words == .plan:
                copy[key] = nil
            case "unlimited" where words == .tenantOverride:
                copy[key] = Self.unlimited
            default:
                guard let number = Int(parts[1].replacingOccurrences(of: "_", with: "")), number >= 0 else {
                    let ambiguity = parts[1] == "none" || parts[1] == "null" ? " ('\(parts[1])' is ambiguous)" : ""
                    throw MeteringError.invalid(
                        parts[0], "'\(parts[1])' is not a non-negative integer or \(allowed.map { "'\($0)'" }.joined(separator: " or "))\(ambiguity)")
                }
                copy[key] = number
            }
        }
        return copy
    }

    static let columns = "requests_per_minute, tokens_per_minute, max_concurrent, monthly_tokens, monthly_images, monthly_budget_micros"

    init(row: PostgresRow) throws {
        self.init(
            requestsPerMinute: try row.decode("requests_per_minute"), tokensPerMinute: try row.decode("tokens_per_minute"),
            maxConcurrent: try row.decode("max_concurrent"), monthlyTokens: try row.decode("monthly_tokens"),
            monthlyImages: try row.decode("monthly_images"), monthlyBudgetMicros: try row.decode("monthly_budget_micros"))
    }

    var parameters: [any PostgresEncodable] {
        [requestsPerMinute, tokensPerMinute, maxConcurrent, monthlyTokens, monthlyImages, monthlyBudgetMicros]
    }

    var summary: String {
        CodingKeys.allCases.map { key in
            "\(key.rawValue)=\(self[key].map { $0 == Self.unlimited ? "unlimited" : String($0) } ?? "inherit")"
        }.joined(separator: ",")
    }
}

/// One quota's use this month.
public struct QuotaUse: Sendable, Equatable, Encodable {
    public var used: Int
    public var reserved: Int

    public init(used: Int, reserved: Int) {
        self.used = used
        self.reserved = reserved
    }

    /// What is left under `limit` (nil: unlimited).
    public func remaining(under limit: Int?) -> Int? { limit.map { max(0, $0 - used - reserved) } }
}

public struct Plan: Sendable, Equatable, Encodable {
    public var name: String
    public var displayName: String
    public var limits: LimitSettings

    enum CodingKeys: String, CodingKey {
        case name, limits
        case displayName = "display_name"
    }
}

public enum MeteringError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalid(String, String)
    case notFound(String)
    /// A rate limit (requests or tokens per minute) or the concurrency cap: retry later.
    /// `report` holds the per-minute limits for the response's headers.
    case rateLimited(message: String, retryAfterSeconds: Int, report: RateLimitReport = RateLimitReport())
    /// A hard monthly quota or the budget would be exceeded.
    case quotaExceeded(String)
    /// The database cannot be reached: the request cannot be admitted.
    case unavailable(String)

    public var description: String {
        switch self {
        case .invalid(let field, let message): "\(field): \(message)"
        case .notFound(let message), .quotaExceeded(let message), .unavailable(let message): message
        case .rateLimited(let message, _, _): message
        }
    }
}

/// Plans (`free` and `pro` are seeded) and per-tenant overrides; every change is audited.
public struct LimitService: Sendable {
    let pool: PostgresPool
    let notifier: (any LimitChangeNotifier)?

    /// `notifier` tells every instance about changes (without one, caches see them at their TTL).
    public init(pool: PostgresPool, notifier: (any LimitChangeNotifier)? = nil) {
        self.pool = pool
        self.notifier = notifier
    }

    public func plans() async throws -> [Plan] {
        try await pool.query("SELECT name, display_name, \(LimitSettings.columns) FROM plans ORDER BY name").map(Self.plan)
    }

    public func plan(_ name: String) async throws -> Plan {
        let rows = try await pool.query("SELECT name, display_name, \(LimitSettings.columns) FROM plans WHERE name = $1", [name])
        guard let row = rows.first else { throw MeteringError.notFound("no plan '\(name)'") }
        return try Self.plan(row)
    }

    /// Creates a plan, or changes an existing one's limits.
    public func setPlan(_ name: String, displayName: String?, limits: LimitSettings, actor: AuditActor) async throws -> Plan {
        guard name.range(of: "^[a-z0-9][a-z0-9_-]{0,62}$", options: .regularExpression) != nil else {
            throw MeteringError.invalid("name", "a plan name is lower-case letters, digits, '-' and '_'")
        }
        try await pool.transaction { connection in
            try connection.execute(
                """
                INSERT INTO plans (name, display_name, \(LimitSettings.columns)) VALUES ($1, coalesce($2, $1), $3, $4, $5, $6, $7, $8)
                ON CONFLICT (name) DO UPDATE SET display_name = coalesce($2, plans.display_name),
                    requests_per_minute = $3, tokens_per_minute = $4, max_concurrent = $5, monthly_tokens = $6,
                    monthly_images = $7, monthly_budget_micros = $8, updated_at = now()
                """, [name, displayName] + limits.validated().parameters)
            try AuditLog.append(connection, actor: actor, tenant: nil, action: "plan.set", target: "plan:\(name)", details: ["limits": limits.summary])
            try notifier?.limitsChanged(.plan(name), on: connection)
        }
        return try await plan(name)
    }

    /// The tenant's own overrides (all nil when none).
    public func tenantOverrides(_ tenant: UUID) async throws -> LimitSettings {
        let rows = try await pool.query("SELECT \(LimitSettings.columns) FROM tenant_limits WHERE tenant_id = $1", [tenant])
        return try rows.first.map(LimitSettings.init(row:)) ?? LimitSettings()
    }

    public func setTenantOverrides(_ tenant: UUID, _ limits: LimitSettings, actor: AuditActor) async throws {
        try await pool.transaction { connection in
            try connection.execute(
                """
                INSERT INTO tenant_limits (tenant_id, \(LimitSettings.columns)) VALUES ($1, $2, $3, $4, $5, $6, $7)
                ON CONFLICT (tenant_id) DO UPDATE SET requests_per_minute = $2, tokens_per_minute = $3, max_concurrent = $4,
                    monthly_tokens = $5, monthly_images = $6, monthly_budget_micros = $7, updated_at = now()
                """, [tenant] + limits.validated(allowingUnlimited: true).parameters)
            try AuditLog.append(
                connection, actor: actor, tenant: tenant, action: "limits.set", target: "tenant:\(tenant.uuidString.lowercased())",
                details: ["limits": limits.summary])
            try notifier?.limitsChanged(.tenant(tenant), on: connection)
        }
    }

    /// Sets a key's overrides (stored with the key).
    public func setKeyOverrides(_ key: UUID, tenant: UUID, _ limits: LimitSettings, actor: AuditActor) async throws {
        let json = try PostgresJSON(limits.keyLimits)
        let updated = try await pool.transaction { connection -> Bool in
            let count = try connection.execute("UPDATE api_keys SET limits = $3 WHERE id = $1 AND tenant_id = $2", [key, tenant, json])
            guard count == 1 else { return false }
            try AuditLog.append(
                connection, actor: actor, tenant: tenant, action: "limits.set", target: "key_id:\(key.uuidString.lowercased())",
                details: ["limits": limits.summary])
            try notifier?.limitsChanged(.key(key), on: connection)
            return true
        }
        guard updated else { throw MeteringError.notFound("no API key \(key.uuidString.lowercased()) for this tenant") }
    }

    /// Plan, tenant and key limits combined: the tighter wins, metric by metric.
    public func effective(tenant: UUID, plan: String, keyLimits: [String: Int]) async throws -> (tenant: LimitSettings, key: LimitSettings) {
        let rows = try await pool.query(Self.effectiveQuery, [tenant, plan])
        return try Self.effective(rows.first, keyLimits: keyLimits)
    }

    /// `effective` inside a transaction, with the database's `now()` in the same round trip.
    static func effectiveNow(_ connection: PostgresConnection, tenant: UUID, plan: String, keyLimits: [String: Int]) throws
        -> (now: Date, tenant: LimitSettings, key: LimitSettings)
    {
        let rows = try connection.query(Self.effectiveQuery, [tenant, plan])
        guard let row = rows.first else { throw PostgresError(.decoding, "the limits query returned no row") }
        let (tenantLimits, keyLimits) = try Self.effective(row, keyLimits: keyLimits)
        return (try row.decode("now"), tenantLimits, keyLimits)
    }

    /// One row whatever exists: `now()`, the plan's limits (NULL without such a plan) and the
    /// tenant's overrides (`t_` columns).
    static let effectiveQuery = """
        SELECT now() AS now, p.name AS plan_name, \(LimitSettings.CodingKeys.allCases.map { "p.\($0.rawValue)" }.joined(separator: ", ")),
               \(LimitSettings.CodingKeys.allCases.map { "t.\($0.rawValue) AS t_\($0.rawValue)" }.joined(separator: ", "))
        FROM (SELECT 1) AS one LEFT JOIN plans p ON p.name = $2 LEFT JOIN tenant_limits t ON t.tenant_id = $1
        """

    static func effective(_ row: PostgresRow?, keyLimits: [String: Int]) throws -> (tenant: LimitSettings, key: LimitSettings) {
        guard let row, try row.decode("plan_name", as: String?.self) != nil else {
            return (LimitSettings(), LimitSettings(keyLimits: keyLimits))
        }
        let planLimits = try LimitSettings(row: row)
        let overrides = LimitSettings(
            requestsPerMinute: try row.decode("t_requests_per_minute"), tokensPerMinute: try row.decode("t_tokens_per_minute"),
            maxConcurrent: try row.decode("t_max_concurrent"), monthlyTokens: try row.decode("t_monthly_tokens"),
            monthlyImages: try row.decode("t_monthly_images"), monthlyBudgetMicros: try row.decode("t_monthly_budget_micros"))
        // A tenant override replaces the plan's value where set: it may loosen as well as
        // tighten, and `unlimited` lifts the plan's limit altogether.
        var tenantLimits = LimitSettings()
        for key in LimitSettings.CodingKeys.allCases {
            switch overrides[key] {
            case LimitSettings.unlimited?: tenantLimits[key] = nil
            case let value?: tenantLimits[key] = value
            case nil: tenantLimits[key] = planLimits[key]
            }
        }
        return (tenantLimits, LimitSettings(keyLimits: keyLimits))
    }

    /// This month's use of each quota of `subject` (`tenant:<id>` or `key:<id>`): settled use
    /// and what requests in flight hold; `concurrent` is requests in flight now.
    public func quotaUse(subject: String, at date: Date = Date()) async throws -> [String: QuotaUse] {
        let rows = try await pool.query(
            """
            SELECT metric, used, reserved FROM quota_counters
            WHERE subject = $1 AND (period_start = $2::date OR metric = 'concurrent')
            """, [subject, Meter.monthStart(date)])
        var use: [String: QuotaUse] = [:]
        for row in rows { use[try row.decode("metric")] = QuotaUse(used: try row.decode("used"), reserved: try row.decode("reserved")) }
        return use
    }

    static func plan(_ row: PostgresRow) throws -> Plan {
        Plan(name: try row.decode("name"), displayName: try row.decode("display_name"), limits: try LimitSettings(row: row))
    }
}
