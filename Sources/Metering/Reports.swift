import Foundation
import Postgres

/// One row of a usage report.
public struct UsageRow: Sendable, Equatable, Encodable {
    public var group: String
    /// A name beside the group's id: the key's name and display prefix when grouped by key.
    public var label: String? = nil
    public var requests: Int
    public var promptTokens: Int
    public var completionTokens: Int
    public var images: Int
    public var costMicros: Int

    enum CodingKeys: String, CodingKey {
        case group, label, requests, images
        case promptTokens = "prompt_tokens"
        case completionTokens = "completion_tokens"
        case costMicros = "cost_micros"
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(group, forKey: .group)
        try container.encodeIfPresent(label, forKey: .label)
        try container.encode(requests, forKey: .requests)
        try container.encode(promptTokens, forKey: .promptTokens)
        try container.encode(completionTokens, forKey: .completionTokens)
        try container.encode(images, forKey: .images)
        try container.encode(costMicros, forKey: .costMicros)
    }
}

public enum UsageGrouping: String, Sendable, CaseIterable {
    case day, hour, model, key
}

/// An invoice line: quantity of a metric of a model at one unit price.
public struct InvoiceLine: Sendable, Equatable, Encodable {
    public var model: String
    public var metric: String
    public var quantity: Int
    /// Micro-units per 1M tokens, or per image.
    public var unitPrice: Int
    public var amountMicros: Int

    enum CodingKeys: String, CodingKey {
        case model, metric, quantity
        case unitPrice = "unit_price"
        case amountMicros = "amount_micros"
    }
}

public struct Invoice: Sendable, Equatable, Encodable {
    public var tenantID: UUID
    public var month: String
    public var lines: [InvoiceLine]
    public var subtotalMicros: Int
    public var currency = "USD"

    enum CodingKeys: String, CodingKey {
        case month, lines, currency
        case tenantID = "tenant_id"
        case subtotalMicros = "subtotal_micros"
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(tenantID.uuidString.lowercased(), forKey: .tenantID)
        try container.encode(month, forKey: .month)
        try container.encode(lines, forKey: .lines)
        try container.encode(subtotalMicros, forKey: .subtotalMicros)
        try container.encode(currency, forKey: .currency)
    }
}

public struct BillingDifference: Sendable, Equatable {
    public var tenantID: UUID
    public var requestID: String?
    public var message: String
}

/// Usage reports (from hourly rollups), invoices and their verification (from raw events).
public struct Reports: Sendable {
    let pool: PostgresPool

    public init(pool: PostgresPool) { self.pool = pool }

    /// Usage of a tenant in [from, to), grouped. Every group's numbers are sums of rollups, which
    /// are kept consistent with the events in the settlement transaction.
    /// Years a report window may name (usage is never older, and no later time is meant).
    public static let windowRange = Date(timeIntervalSince1970: 0)...Date(timeIntervalSince1970: 253_402_300_799)  // to 9999-12-31T23:59:59Z

    /// Checks a window given by a caller, naming its bounds as the caller does (`start`/`end`
    /// over HTTP, `from`/`to` from the CLI): both within `windowRange`, the start not after the
    /// end. (A start of 1e300 seconds once trapped on its way to the database.)
    public static func checkWindow(_ from: Date, _ to: Date, names: (String, String)) throws {
        // Not finite compares as inside any range (`<=` is `!(>)`), so it is checked first.
        for (date, name) in [(from, names.0), (to, names.1)] where !date.timeIntervalSince1970.isFinite || !windowRange.contains(date) {
            throw MeteringError.invalid(name, "must be between 1970-01-01 and 9999-12-31")
        }
        guard from <= to else { throw MeteringError.invalid(names.0, "must not be after \(names.1)") }
    }

    public func usage(tenant: UUID, from: Date, to: Date, groupBy: UsageGrouping, key: UUID? = nil) async throws -> [UsageRow] {
        let group: String
        switch groupBy {
        case .day: group = "to_char(hour, 'YYYY-MM-DD')"
        case .hour: group = "to_char(hour, 'YYYY-MM-DD\"T\"HH24:00:00\"Z\"')"
        case .model: group = "model"
        case .key: group = "coalesce(key_id::text, '-')"
        }
        // Grouped by key, each row names its key (as the tenant named it, and its prefix).
        let rows = try await pool.query(
            """
            SELECT r.grp, r.requests, r.prompt_tokens, r.completion_tokens, r.images, r.cost,
                   CASE WHEN $5 THEN k.name || ' (' || k.prefix || '…)' END AS label
            FROM (
                SELECT \(group) AS grp, sum(requests)::bigint AS requests, sum(prompt_tokens)::bigint AS prompt_tokens,
                       sum(completion_tokens)::bigint AS completion_tokens, sum(images)::bigint AS images, sum(cost_micros)::bigint AS cost
                FROM usage_rollups
                WHERE tenant_id = $1 AND hour >= date_trunc('hour', $2::timestamptz) AND hour < $3 AND ($4::uuid IS NULL OR key_id = $4)
                GROUP BY grp
            ) r LEFT JOIN api_keys k ON $5 AND k.id::text = r.grp AND k.tenant_id = $1
            ORDER BY r.grp
            """, [tenant, from, to, key, groupBy == .key])
        return try rows.map {
            UsageRow(
                group: try $0.decode("grp"), label: try $0.decode("label"), requests: try $0.decode("requests"),
                promptTokens: try $0.decode("prompt_tokens"), completionTokens: try $0.decode("completion_tokens"), images: try $0.decode("images"),
                costMicros: try $0.decode("cost"))
        }
    }

    /// The invoice of a tenant for a calendar month (`YYYY-MM`): one line per model, metric and
    /// unit price; each line's amount is the sum of its events' rounded amounts, so the
    /// subtotal equals the sum of the events' costs. Deterministic: same data, same invoice.
    public func invoice(tenant: UUID, month: String) async throws -> Invoice {
        let (start, end) = try Self.monthRange(month)
        let rows = try await pool.query(
            """
            SELECT model, metric, unit_price, sum(quantity)::bigint AS quantity, sum(amount)::bigint AS amount FROM (
                SELECT model, 'prompt_tokens' AS metric, prompt_price AS unit_price, prompt_tokens AS quantity,
                       (prompt_tokens * prompt_price + 500000) / 1000000 AS amount FROM usage_events
                WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3 AND prompt_tokens > 0
                UNION ALL
                SELECT model, 'completion_tokens', completion_price, completion_tokens,
                       (completion_tokens * completion_price + 500000) / 1000000 FROM usage_events
                WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3 AND completion_tokens > 0
                UNION ALL
                SELECT model, 'images', image_price, images, images * image_price FROM usage_events
                WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3 AND images > 0
            ) AS items
            GROUP BY model, metric, unit_price ORDER BY model, metric, unit_price
            """, [tenant, start, end])
        let lines = try rows.map {
            InvoiceLine(
                model: try $0.decode("model"), metric: try $0.decode("metric"), quantity: try $0.decode("quantity"),
                unitPrice: try $0.decode("unit_price"), amountMicros: try $0.decode("amount"))
        }
        return Invoice(tenantID: tenant, month: month, lines: lines, subtotalMicros: lines.reduce(0) { $0 + $1.amountMicros })
    }

    /// Recomputes every event of the month from the price book and compares with the stored
    /// prices and costs, the rollups and the invoices; returns every difference (empty: all agree).
    public func verify(month: String, prices: PriceBook) async throws -> [BillingDifference] {
        let (start, end) = try Self.monthRange(month)
        var differences: [BillingDifference] = []
        var lastID = ""
        while true {
            let events = try await pool.query(
                """
                SELECT request_id, tenant_id, model, prompt_tokens, completion_tokens, images, prompt_price, completion_price,
                       image_price, cost_micros, occurred_at FROM usage_events
                WHERE occurred_at >= $1 AND occurred_at < $2 AND request_id > $3 ORDER BY request_id LIMIT 1000
                """, [start, end, lastID])
            if events.isEmpty { break }
            for event in events {
                let requestID: String = try event.decode("request_id")
                let tenant: UUID = try event.decode("tenant_id")
                let price = try await prices.price(model: try event.decode("model"), tenant: tenant, at: try event.decode("occurred_at"))
                let stored = Price(prompt: try event.decode("prompt_price"), completion: try event.decode("completion_price"), image: try event.decode("image_price"))
                let cost = price.cost(prompt: try event.decode("prompt_tokens"), completion: try event.decode("completion_tokens"), images: try event.decode("images"))
                if stored != price {
                    differences.append(.init(tenantID: tenant, requestID: requestID, message: "priced at \(stored), the price book says \(price)"))
                }
                if cost != (try event.decode("cost_micros", as: Int.self)) {
                    differences.append(.init(tenantID: tenant, requestID: requestID, message: "cost \(try event.decode("cost_micros", as: Int.self)), recomputed \(cost)"))
                }
                lastID = requestID
            }
        }
        // Rollups against events, per tenant.
        let tenants = try await pool.query(
            """
            SELECT e.tenant_id, e.cost, e.requests, coalesce(r.cost, 0) AS rollup_cost, coalesce(r.requests, 0) AS rollup_requests
            FROM (SELECT tenant_id, sum(cost_micros)::bigint AS cost, count(*)::bigint AS requests FROM usage_events
                  WHERE occurred_at >= $1 AND occurred_at < $2 GROUP BY tenant_id) e
            LEFT JOIN (SELECT tenant_id, sum(cost_micros)::bigint AS cost, sum(requests)::bigint AS requests FROM usage_rollups
                  WHERE hour >= $1 AND hour < $2 GROUP BY tenant_id) r ON r.tenant_id = e.tenant_id
            """, [start, end])
        for row in tenants {
            let tenant: UUID = try row.decode("tenant_id")
            let cost: Int = try row.decode("cost")
            let rollupCost: Int = try row.decode("rollup_cost")
            let requests: Int = try row.decode("requests")
            let rollupRequests: Int = try row.decode("rollup_requests")
            if cost != rollupCost || requests != rollupRequests {
                differences.append(.init(tenantID: tenant, requestID: nil, message: "hourly rollups disagree with the events"))
            }
            let invoice = try await invoice(tenant: tenant, month: month)
            if invoice.subtotalMicros != cost {
                differences.append(.init(tenantID: tenant, requestID: nil, message: "invoice subtotal \(invoice.subtotalMicros) differs from the events' \(cost)"))
            }
        }
        return differences
    }

    /// Deletes raw events older than `days` (rollups and invoices of closed months stay).
    public func applyRetention(days: Int) async throws -> Int {
        try await pool.execute("DELETE FROM usage_events WHERE occurred_at < now() - make_interval(days => $1)", [days])
    }

    static func monthRange(_ month: String) throws -> (Date, Date) {
        let parts = month.split(separator: "-")
        guard parts.count == 2, let year = Int(parts[0]), let number = Int(parts[1]), (1...12).contains(number), (1970...9999).contains(year) else {
            throw MeteringError.invalid("month", "expected YYYY-MM, got '\(month)'")
        }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC") ?? .current
        guard let start = calendar.date(from: DateComponents(year: year, month: number, day: 1)),
            let end = calendar.date(byAdding: .month, value: 1, to: start)
        else { throw MeteringError.invalid("month", "expected YYYY-MM") }
        return (start, end)
    }
}
