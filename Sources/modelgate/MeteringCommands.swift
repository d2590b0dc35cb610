import ArgumentParser
import Foundation
import Metering
import Platform
import Tenancy

enum ReportFormat: String, ExpressibleByArgument, CaseIterable {
    case table, csv, json
}

enum CSV {
    static func field(_ value: String) -> String {
        value.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" }) ? "\"" + value.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : value
    }

    static func render(_ header: [String], _ rows: [[String]]) -> String {
        ([header] + rows).map { $0.map(field).joined(separator: ",") }.joined(separator: "\n") + "\n"
    }
}

/// Micro-units as a decimal string (`1234567` -> `1.234567`), integers only.
func money(_ micros: Int) -> String {
    let sign = micros < 0 ? "-" : ""
    let value = abs(micros)
    return sign + String(value / 1_000_000) + "." + String(format: "%06d", value % 1_000_000)
}

struct PlanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan", abstract: "Plans: default limits for tenants.", subcommands: [List.self, Create.self, Set.self])

    static func show(_ plans: [Plan], json: Bool) throws {
        if json { return try Output.json(plans) }
        var table = TextTable(["PLAN", "NAME", "RPM", "TPM", "CONCURRENT", "TOKENS/MONTH", "IMAGES/MONTH", "BUDGET/MONTH"])
        func value(_ number: Int?) -> String { number.map(String.init) ?? "-" }
        for plan in plans {
            let l = plan.limits
            table.add([plan.name, plan.displayName, value(l.requestsPerMinute), value(l.tokensPerMinute), value(l.maxConcurrent),
                       value(l.monthlyTokens), value(l.monthlyImages), l.monthlyBudgetMicros.map(money) ?? "-"])
        }
        print(table.render(), terminator: "")
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List plans.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: OutputFormat
        var json: Bool { output.isJSON }
        func run() async throws {
            try await withServices(global) { services in try PlanCommand.show(try await services.limits.plans(), json: json) }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a plan: modelgate plan create team requests_per_minute=120 monthly_tokens=5000000")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Plan name.") var name: String
        @Argument(help: "Limits as name=value (a number, or 'unlimited').") var limits: [String] = []
        @Option(help: "Display name.") var displayName: String?
        func run() async throws {
            try await withServices(global) { services in
                if (try? await services.limits.plan(name)) != nil { throw MeteringError.invalid("name", "plan '\(name)' already exists; use 'plan set'") }
                let plan = try await services.limits.setPlan(
                    name, displayName: displayName, limits: try LimitSettings().updating(limits, words: .plan), actor: .cli())
                try PlanCommand.show([plan], json: false)
            }
        }
    }

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change a plan's limits: modelgate plan set free monthly_tokens=100000")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Plan name.") var name: String
        @Argument(help: "Limits as name=value (a number, or 'unlimited').") var limits: [String] = []
        @Option(help: "Display name.") var displayName: String?
        func run() async throws {
            try await withServices(global) { services in
                let current = try await services.limits.plan(name)
                let plan = try await services.limits.setPlan(
                    name, displayName: displayName, limits: try current.limits.updating(limits, words: .plan), actor: .cli())
                try PlanCommand.show([plan], json: false)
            }
        }
    }
}

struct LimitsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "limits",
        abstract: "Tenant and key limits: a tenant's override replaces its plan's value (up or down, or 'unlimited'); a key's can only tighten it.",
        subcommands: [Show.self, Set.self])

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a tenant's (or key's) limits and this month's usage.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Tenant id or slug.") var tenant: String
        @Option(help: "Key id.") var key: String?
        @OptionGroup var output: OutputFormat
        var json: Bool { output.isJSON }
        func run() async throws {
            try await withServices(global) { services in
                let id = try await services.tenants.resolve(tenant)
                let record = try await services.tenants.get(id)
                var keyLimits: [String: Int] = [:]
                if let key {
                    guard let keyID = UUID(uuidString: key) else { throw MeteringError.invalid("key", "not a key id") }
                    keyLimits = try await services.apiKeys.get(keyID, tenant: id).limits
                }
                let overrides = try await services.limits.tenantOverrides(id)
                let (tenantLimits, keyOverrides) = try await services.limits.effective(tenant: id, plan: record.plan, keyLimits: keyLimits)
                // This month's use: the key's own counters with --key, else the tenant's.
                let subject = key.map { "key:" + $0.lowercased() } ?? "tenant:" + id.uuidString.lowercased()
                let use = try await services.limits.quotaUse(subject: subject)
                let applying = key == nil ? tenantLimits : tenantLimits.tightened(by: keyOverrides)
                struct QuotaLine: Encodable { var limit: Int?; var used: Int; var reserved: Int; var remaining: Int? }
                let quotas: [(String, String, Int?)] = [
                    ("max_concurrent", "concurrent", applying.maxConcurrent), ("monthly_tokens", "tokens", applying.monthlyTokens),
                    ("monthly_images", "images", applying.monthlyImages), ("monthly_budget_micros", "budget", applying.monthlyBudgetMicros),
                ]
                var usage: [String: QuotaLine] = [:]
                for (name, metric, limit) in quotas {
                    let counted = use[metric] ?? QuotaUse(used: 0, reserved: 0)
                    usage[name] = QuotaLine(limit: limit, used: counted.used, reserved: counted.reserved, remaining: counted.remaining(under: limit))
                }
                struct Body: Encodable {
                    var plan: String; var tenant_overrides: LimitSettings; var effective: LimitSettings; var key_overrides: LimitSettings?
                    var usage: [String: QuotaLine]
                }
                let body = Body(
                    plan: record.plan, tenant_overrides: overrides, effective: tenantLimits, key_overrides: key == nil ? nil : keyOverrides, usage: usage)
                if json { return try Output.json(body) }
                var table = TextTable(
                    ["LIMIT", "PLAN \(record.plan)", "TENANT OVERRIDE", "EFFECTIVE"] + (key == nil ? [] : ["KEY OVERRIDE"]) + ["USED", "RESERVED", "REMAINING"])
                let plan = try await services.limits.plan(record.plan).limits
                func v(_ value: Int?, unset: String = "-") -> String {
                    value.map { $0 == LimitSettings.unlimited ? "unlimited" : String($0) } ?? unset
                }
                for limit in LimitSettings.CodingKeys.allCases {
                    var row = [limit.rawValue, v(plan[limit], unset: "unlimited"), v(overrides[limit], unset: "inherit"), v(tenantLimits[limit], unset: "unlimited")]
                    if key != nil { row.append(v(keyOverrides[limit], unset: "inherit")) }
                    if let line = usage[limit.rawValue] {
                        row += [String(line.used), String(line.reserved), v(line.remaining, unset: "unlimited")]
                    } else {
                        row += ["-", "-", "-"]
                    }
                    table.add(row)
                }
                print(table.render(), terminator: "")
            }
        }
    }

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set overrides: modelgate limits set --tenant acme requests_per_minute=600 monthly_tokens=unlimited max_concurrent=inherit")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Tenant id or slug.") var tenant: String
        @Option(help: "Key id (sets the key's own overrides).") var key: String?
        @Argument(help: "Limits as name=value: a number; 'inherit' (back to the plan's, or for a key the tenant's); 'unlimited' (tenants only).")
        var limits: [String]
        func run() async throws {
            try await withServices(global) { services in
                let id = try await services.tenants.resolve(tenant)
                if let key {
                    guard let keyID = UUID(uuidString: key) else { throw MeteringError.invalid("key", "not a key id") }
                    let current = LimitSettings(keyLimits: try await services.apiKeys.get(keyID, tenant: id).limits)
                    try await services.limits.setKeyOverrides(keyID, tenant: id, try current.updating(limits, words: .keyOverride), actor: .cli())
                } else {
                    let current = try await services.limits.tenantOverrides(id)
                    try await services.limits.setTenantOverrides(id, try current.updating(limits, words: .tenantOverride), actor: .cli())
                }
                print("limits updated")
            }
        }
    }
}

struct PriceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "price", abstract: "The price book (micro-units per 1M tokens or per image).", subcommands: [Set.self, List.self])

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set a price from now (or --from, in the future) on.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Model name.") var model: String
        @Option(help: "prompt_tokens, completion_tokens or images.") var metric: String
        @Option(help: "Micro-units per 1M tokens, or per image (1 USD = 1000000).") var price: Int
        @Option(help: "Tenant id or slug for a tenant-specific price.") var tenant: String?
        @Option(help: "ISO 8601 time the price applies from (default: now).") var from: String?
        func run() async throws {
            try await withServices(global) { services in
                let model = try await ModelControl.checkKnown([self.model], option: "--model", pool: services.pool, configuration: services.configuration)[0]
                let tenantID = try await tenant.asyncMap { try await services.tenants.resolve($0) }
                let start = try from.map { text -> Date in
                    guard let date = ISO8601DateFormatter().date(from: text) else { throw MeteringError.invalid("from", "not an ISO 8601 time") }
                    return date
                }
                try await services.prices.set(model: model, metric: metric, unitPrice: price, tenant: tenantID, effectiveFrom: start, actor: .cli())
                print("price set: \(model) \(metric) \(price) micro-units\(metric == "images" ? " per image" : " per 1M tokens")")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List prices.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Only this model.") var model: String?
        @OptionGroup var output: OutputFormat
        var json: Bool { output.isJSON }
        func run() async throws {
            try await withServices(global) { services in
                let prices = try await services.prices.list(model: model)
                if json { return try Output.json(prices) }
                let slugs = Dictionary(uniqueKeysWithValues: try await services.tenants.list(includeDeleted: true).map { ($0.id, $0.slug) })
                var table = TextTable(["MODEL", "METRIC", "UNIT PRICE (MICROS)", "TENANT", "TENANT ID", "EFFECTIVE FROM"])
                for price in prices {
                    table.add([
                        price.model, price.metric, String(price.unitPrice), price.tenantID.flatMap { slugs[$0] } ?? "*",
                        price.tenantID?.uuidString.lowercased() ?? "-", Output.date(price.effectiveFrom),
                    ])
                }
                print(table.render(), terminator: "")
            }
        }
    }
}

struct UsageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "usage", abstract: "Usage reports.", subcommands: [Report.self])

    struct Report: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A tenant's usage between two times, grouped.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Tenant id or slug.") var tenant: String
        @Option(help: "Start (ISO 8601 time or YYYY-MM-DD, UTC). Default: the start of this month.") var from: String?
        @Option(help: "End, exclusive. Default: now.") var to: String?
        @Option(help: "day, hour, model or key.") var groupBy: String = "day"
        @OptionGroup var output: OutputFormat
        var format: ReportFormat { output.value }
        func run() async throws {
            guard let grouping = UsageGrouping(rawValue: groupBy) else { CLI.fail("--group-by must be day, hour, model or key") }
            try await withServices(global) { services in
                let id = try await services.tenants.resolve(tenant)
                let start = try from.map(parseTime) ?? monthStart()
                let end = try to.map(parseTime) ?? Date()
                try Reports.checkWindow(start, end, names: ("--from", "--to"))
                let rows = try await services.reports.usage(tenant: id, from: start, to: end, groupBy: grouping)
                switch format {
                case .json: try Output.json(rows)
                case .csv:
                    let named = grouping == .key ? ["key_name"] : []
                    print(CSV.render([grouping.rawValue] + named + ["requests", "prompt_tokens", "completion_tokens", "images", "cost_micros"],
                                     rows.map { row in
                                         [row.group] + (grouping == .key ? [row.label ?? ""] : [])
                                             + [String(row.requests), String(row.promptTokens), String(row.completionTokens), String(row.images), String(row.costMicros)]
                                     }), terminator: "")
                case .table:
                    let named = grouping == .key ? ["NAME"] : []
                    var table = TextTable([grouping.rawValue.uppercased()] + named + ["REQUESTS", "PROMPT TOKENS", "COMPLETION TOKENS", "IMAGES", "COST (USD)"])
                    for row in rows {
                        table.add([row.group] + (grouping == .key ? [row.label ?? "-"] : [])
                                  + [String(row.requests), String(row.promptTokens), String(row.completionTokens), String(row.images), money(row.costMicros)])
                    }
                    print(table.render(), terminator: "")
                }
            }
        }
    }
}

struct BillingCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "billing", abstract: "Invoices.", subcommands: [InvoiceCommand.self, Verify.self])

    struct InvoiceCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "invoice", abstract: "A tenant's invoice for a month.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Tenant id or slug.") var tenant: String
        @Option(help: "YYYY-MM (UTC).") var month: String
        @OptionGroup var output: OutputFormat
        var format: ReportFormat { output.value }
        func run() async throws {
            try await withServices(global) { services in
                let id = try await services.tenants.resolve(tenant)
                let invoice = try await services.reports.invoice(tenant: id, month: month)
                switch format {
                case .json: try Output.json(invoice)
                case .csv:
                    print(CSV.render(["model", "metric", "quantity", "unit_price_micros", "amount_micros"],
                                     invoice.lines.map { [$0.model, $0.metric, String($0.quantity), String($0.unitPrice), String($0.amountMicros)] }
                                        + [["subtotal", "", "", "", String(invoice.subtotalMicros)]]), terminator: "")
                case .table:
                    var table = TextTable(["MODEL", "METRIC", "QUANTITY", "UNIT PRICE", "AMOUNT (USD)"])
                    for line in invoice.lines {
                        table.add([line.model, line.metric, String(line.quantity), money(line.unitPrice) + (line.metric == "images" ? "/image" : "/1M"), money(line.amountMicros)])
                    }
                    table.add(["subtotal", "", "", "", money(invoice.subtotalMicros)])
                    print("Invoice \(invoice.month) for tenant \(tenant)")
                    print(table.render(), terminator: "")
                }
            }
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Recompute every event of a month from the price book and compare.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "YYYY-MM (UTC).") var month: String
        func run() async throws {
            try await withServices(global) { services in
                let differences = try await services.reports.verify(month: month, prices: services.prices)
                for difference in differences {
                    print("tenant \(difference.tenantID.uuidString.lowercased())\(difference.requestID.map { " request \($0)" } ?? ""): \(difference.message)")
                }
                print("\(differences.count) difference(s)")
                if !differences.isEmpty { throw ExitCode(1) }
            }
        }
    }
}

func parseTime(_ text: String) throws -> Date {
    if let date = ISO8601DateFormatter().date(from: text) { return date }
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withFullDate]
    if let date = formatter.date(from: text) { return date }
    throw MeteringError.invalid("time", "'\(text)' is not an ISO 8601 time or YYYY-MM-DD date")
}

func monthStart() -> Date {
    var calendar = Calendar(identifier: .gregorian)
    calendar.timeZone = TimeZone(identifier: "UTC") ?? .current
    return calendar.date(from: calendar.dateComponents([.year, .month], from: Date())) ?? Date()
}
