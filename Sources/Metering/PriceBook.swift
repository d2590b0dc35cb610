import Audit
import Foundation
import Postgres
import Synchronization

/// Prices in force for one model at one time: micro-units per 1M tokens, and per image.
public struct Price: Sendable, Equatable {
    public var prompt: Int
    public var completion: Int
    public var image: Int

    /// The cost of a request in micro-units, integers only: each token term is rounded half up
    /// to the micro-unit (`(q · p + 500 000) / 1 000 000`), images are whole prices.
    public func cost(prompt promptTokens: Int, completion completionTokens: Int, images: Int) -> Int {
        Self.tokens(promptTokens, at: prompt) + Self.tokens(completionTokens, at: completion) + images * image
    }

    public static func tokens(_ count: Int, at pricePerMillion: Int) -> Int {
        millionths(count, pricePerMillion, plus: 500_000)
    }

    /// `(count · price + round) / 1 000 000` without forming `count · price`, which a large
    /// count at a large price takes past Int.max: whole millions first, then the rest.
    static func millionths(_ count: Int, _ price: Int, plus round: Int) -> Int {
        let (millions, rest) = count.quotientAndRemainder(dividingBy: 1_000_000)
        return millions * price + (rest * price + round) / 1_000_000
    }
}

public struct PriceEntry: Sendable, Equatable, Encodable {
    public var model: String
    public var metric: String
    public var unitPrice: Int
    public var tenantID: UUID?
    public var effectiveFrom: Date

    enum CodingKeys: String, CodingKey {
        case model, metric
        case unitPrice = "unit_price"
        case tenantID = "tenant_id"
        case effectiveFrom = "effective_from"
    }
}

/// Prices per model and metric with effective dates (never retroactive) and optional
/// per-tenant overrides. Lookups are cached briefly.
public struct PriceBook: Sendable {
    public static let metrics = ["prompt_tokens", "completion_tokens", "images"]
    /// The highest price (per 1M tokens, or per image): one currency unit per token. Keeps
    /// every cost a request can have, and the reports' per-event products, inside 64 bits.
    public static let maximumUnitPrice = 1_000_000_000_000
    let pool: PostgresPool

    public init(pool: PostgresPool) { self.pool = pool }

    /// Adds a price from `effectiveFrom` on (default: now). A time in the past is refused:
    /// billed usage is never repriced.
    public func set(
        model: String, metric: String, unitPrice: Int, tenant: UUID? = nil, effectiveFrom: Date? = nil, actor: AuditActor,
        allowPast: Bool = false
    ) async throws {
        guard Self.metrics.contains(metric) else {
            throw MeteringError.invalid("metric", "one of \(Self.metrics.joined(separator: ", "))")
        }
        guard unitPrice >= 0 else { throw MeteringError.invalid("price", "must not be negative") }
        guard unitPrice <= Self.maximumUnitPrice else {
            throw MeteringError.invalid("price", "must be at most \(Self.maximumUnitPrice) micro-units")
        }
        guard !model.isEmpty, model.count <= 200 else { throw MeteringError.invalid("model", "1-200 characters") }
        let from = effectiveFrom ?? Date()
        if !allowPast, from < Date().addingTimeInterval(-60) {
            throw MeteringError.invalid("effective_from", "prices apply from now on, never retroactively")
        }
        try await pool.transaction { connection in
            try connection.execute(
                """
                INSERT INTO prices (id, model, metric, unit_price, tenant_id, effective_from) VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT (model, metric, tenant_id, effective_from) DO UPDATE SET unit_price = EXCLUDED.unit_price
                """, [UUID(), model, metric, unitPrice, tenant, from])
            try AuditLog.append(
                connection, actor: actor, tenant: tenant, action: "price.set", target: "model:\(model)",
                details: ["metric": metric, "unit_price": String(unitPrice), "effective_from": ISO8601DateFormatter().string(from: from)])
        }
        PriceCache.shared.clear()
    }

    public func list(model: String? = nil) async throws -> [PriceEntry] {
        let rows = try await pool.query(
            "SELECT * FROM prices WHERE $1::text IS NULL OR model = $1 ORDER BY model, metric, tenant_id NULLS FIRST, effective_from", [model])
        return try rows.map {
            PriceEntry(
                model: try $0.decode("model"), metric: try $0.decode("metric"), unitPrice: try $0.decode("unit_price"),
                tenantID: try $0.decode("tenant_id"), effectiveFrom: try $0.decode("effective_from"))
        }
    }

    /// The prices in force for `model` at `time` (tenant override first; 0 when none is set).
    /// Always read from the database, so settlement and `billing verify` agree exactly.
    public func price(model: String, tenant: UUID, at time: Date) async throws -> Price {
        try await pool.withConnection { connection in try Self.price(connection, model: model, tenant: tenant, at: time) }
    }

    /// `price(model:tenant:at:)` on a connection already held (inside settlement's transaction).
    static func price(_ connection: PostgresConnection, model: String, tenant: UUID, at time: Date) throws -> Price {
        let rows = try connection.query(
            """
            SELECT DISTINCT ON (metric) metric, unit_price FROM prices
            WHERE model = $1 AND (tenant_id = $2 OR tenant_id IS NULL) AND effective_from <= $3
            ORDER BY metric, tenant_id NULLS LAST, effective_from DESC
            """, [model, tenant, time])
        var price = Price(prompt: 0, completion: 0, image: 0)
        for row in rows {
            let value: Int = try row.decode("unit_price")
            switch try row.decode("metric", as: String.self) {
            case "prompt_tokens": price.prompt = value
            case "completion_tokens": price.completion = value
            default: price.image = value
            }
        }
        return price
    }

    /// The most a request could cost, rounded up (for the budget reservation; current prices
    /// cached for a few seconds).
    func worstCase(_ estimate: UsageEstimate, tenant: UUID) async throws -> Int {
        let now = Date()
        let price: Price
        if let cached = PriceCache.shared.get(model: estimate.model, tenant: tenant, time: now) {
            price = cached
        } else {
            price = try await self.price(model: estimate.model, tenant: tenant, at: now)
            PriceCache.shared.put(model: estimate.model, tenant: tenant, time: now, price: price)
        }
        // Rounded up once over both terms, as the sum of the products would be.
        let (promptMillions, promptRest) = estimate.promptTokens.quotientAndRemainder(dividingBy: 1_000_000)
        let (completionMillions, completionRest) = estimate.maxCompletionTokens.quotientAndRemainder(dividingBy: 1_000_000)
        let tokens = promptMillions * price.prompt + completionMillions * price.completion
            + (promptRest * price.prompt + completionRest * price.completion + 999_999) / 1_000_000
        return tokens + estimate.images * price.image
    }
}

/// A short-lived cache of current prices for budget reservations. Cleared when a price is set
/// on this instance; other instances see a change within 10 s.
final class PriceCache: Sendable {
    static let shared = PriceCache()
    private let entries = Mutex<[String: (Price, Date)]>([:])

    func get(model: String, tenant: UUID, time: Date) -> Price? {
        guard abs(time.timeIntervalSinceNow) < 5 else { return nil }
        return entries.withLock { entries in
            guard let (price, stored) = entries[model + "|" + tenant.uuidString], Date().timeIntervalSince(stored) < 10 else { return nil }
            return price
        }
    }

    func put(model: String, tenant: UUID, time: Date, price: Price) {
        guard abs(time.timeIntervalSinceNow) < 5 else { return }
        entries.withLock { entries in
            if entries.count > 10_000 { entries.removeAll() }
            entries[model + "|" + tenant.uuidString] = (price, Date())
        }
    }

    func clear() { entries.withLock { $0.removeAll() } }
}
