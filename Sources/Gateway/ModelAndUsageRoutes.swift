import Foundation
import Hummingbird
import Inference
import Metering
import Tenancy

/// `GET /v1/models[/{id}]` (what this key may use), `GET /v1/usage` (the tenant's own usage),
/// and the operator's `/admin/v1/models`, `/admin/v1/usage`, `/admin/v1/invoices`,
/// `/admin/v1/plans`, `/admin/v1/tenants/{id}/limits` and `/admin/v1/prices`.
struct ModelAndUsageRoutes {
    let registry: ModelRegistry
    let reports: Reports
    let limits: LimitService
    let prices: PriceBook
    let tenants: TenantService
    let modelControl: @Sendable (String, String) async throws -> Void
    let maxBodyBytes: Int

    struct ModelObject: Encodable, Sendable {
        var id: String
        var object = "model"
        var created: Int
        var owned_by = "modelgate"
        var task: String?
        var display_name: String
        var context_length: Int?
        /// For an alias: the model it names (usage and prices are under that name).
        var root: String?
    }

    struct AdminModel: Encodable, Sendable {
        var name: String
        var engine: String
        var task: String?
        var version: String
        var status: String
        var reason: String?
        var visibility: [String]?
        var loaded_at: Date?
        var display_name: String
        var aliases: [String]
    }

    /// The model as `/v1/models` shows it, under its own name or one of its aliases.
    static func object(_ info: ModelInfo, as name: String? = nil) -> ModelObject {
        ModelObject(
            id: name ?? info.name, created: Int(info.loadedAt?.timeIntervalSince1970 ?? 0), task: info.task?.rawValue,
            display_name: info.displayName, context_length: info.contextLength, root: name.flatMap { $0 == info.name ? nil : info.name })
    }

    /// The ready models this key may use, each under its name and then each alias.
    static func listing(_ registry: ModelRegistry, for principal: Principal) -> [ModelObject] {
        registry.models().filter { $0.status == .ready && ModelAccess.visible($0, to: principal) }.flatMap { info in
            [object(info)] + info.aliases.map { object(info, as: $0) }
        }
    }

    static func admin(_ info: ModelInfo) -> AdminModel {
        AdminModel(
            name: info.name, engine: info.engine, task: info.task?.rawValue, version: info.version, status: info.status.name, reason: info.reason,
            visibility: info.tenants, loaded_at: info.loadedAt, display_name: info.displayName, aliases: info.aliases)
    }

    func register(tenant group: RouterGroup<GatewayRequestContext>, admin: RouterGroup<GatewayRequestContext>) {
        group.get("models") { _, context in
            let principal = try context.require(.inference)
            return JSONResponse(status: .ok, body: ListBody(data: Self.listing(registry, for: principal)))
        }
        group.get("models/:name") { _, context in
            let principal = try context.require(.inference)
            let name = context.parameters.get("name") ?? ""
            guard let info = registry.info(name), info.status == .ready, ModelAccess.visible(info, to: principal) else {
                throw InferencePipeline.modelNotFound(name)
            }
            return JSONResponse(status: .ok, body: Self.object(info, as: name))
        }
        group.get("usage") { request, context in
            let (_, tenant) = try context.requireTenant(.usageRead)
            let (from, to, grouping) = try Self.window(request)
            return JSONResponse(status: .ok, body: ListBody(data: try await reports.usage(tenant: tenant, from: from, to: to, groupBy: grouping)))
        }

        admin.get("models") { _, context in
            return JSONResponse(status: .ok, body: ListBody(data: registry.models().map(Self.admin)))
        }
        admin.get("models/:name") { _, context in
            guard let info = registry.info(context.parameters.get("name") ?? "") else { throw TenancyError.notFound("no such model") }
            return JSONResponse(status: .ok, body: Self.admin(info))
        }
        for action in ["load", "unload", "reload"] {
            admin.post("models/:name/\(action)") { _, context in
                let name = context.parameters.get("name") ?? ""
                guard registry.info(name) != nil || registry.discover().contains(name) else { throw TenancyError.notFound("no model '\(name)' in the model directory") }
                try await modelControl(action, name)
                guard let info = registry.info(name) else { throw TenancyError.notFound("no such model") }
                return JSONResponse(status: .ok, body: Self.admin(info))
            }
        }
        admin.get("usage") { request, context in
            guard let reference = request.uri.queryParameters.get("tenant") else { throw OpenAIError.invalidRequest("tenant is required", param: "tenant") }
            let tenant = try await tenants.resolve(reference)
            let (from, to, grouping) = try Self.window(request)
            return JSONResponse(status: .ok, body: ListBody(data: try await reports.usage(tenant: tenant, from: from, to: to, groupBy: grouping)))
        }
        admin.get("invoices") { request, context in
            let query = request.uri.queryParameters
            guard let reference = query.get("tenant"), let month = query.get("month") else {
                throw OpenAIError.invalidRequest("tenant and month (YYYY-MM) are required", param: "month")
            }
            return JSONResponse(status: .ok, body: try await reports.invoice(tenant: try await tenants.resolve(reference), month: month))
        }
        admin.get("plans") { _, context in
            return JSONResponse(status: .ok, body: ListBody(data: try await limits.plans()))
        }
        admin.put("plans/:name") { request, context in
            let principal = try context.requirePrincipal()
            let body = try await JSONBody.decode(PlanInput.self, from: request, context: context, limit: maxBodyBytes)
            let plan = try await limits.setPlan(context.parameters.get("name") ?? "", displayName: body.display_name, limits: try body.limits.settings(.plan), actor: .key(principal))
            return JSONResponse(status: .ok, body: plan)
        }
        admin.get("tenants/:id/limits") { _, context in
            let id = try await tenants.resolve(context)
            let tenant = try await tenants.get(id)
            let (effective, _) = try await limits.effective(tenant: id, plan: tenant.plan, keyLimits: [:])
            return JSONResponse(status: .ok, body: TenantLimitsBody(plan: tenant.plan, overrides: try await limits.tenantOverrides(id), effective: effective))
        }
        admin.put("tenants/:id/limits") { request, context in
            let principal = try context.requirePrincipal()
            let id = try await tenants.resolve(context)
            _ = try await tenants.get(id)
            let body = try await JSONBody.decode(LimitSettingsInput.self, from: request, context: context, limit: maxBodyBytes)
            let overrides = try body.settings(.tenantOverride)
            try await limits.setTenantOverrides(id, overrides, actor: .key(principal))
            return JSONResponse(status: .ok, body: overrides)
        }
        admin.get("prices") { request, context in
            return JSONResponse(status: .ok, body: ListBody(data: try await prices.list(model: request.uri.queryParameters.get("model"))))
        }
        admin.post("prices") { request, context in
            let principal = try context.requirePrincipal()
            let body = try await JSONBody.decode(PriceInput.self, from: request, context: context, limit: maxBodyBytes)
            let tenant = try await body.tenant.asyncMapTenant { try await tenants.resolve($0) }
            // Prices are kept under a model's own name, whichever name the request used.
            let model = registry.canonicalName(body.model) ?? body.model
            try await prices.set(model: model, metric: body.metric, unitPrice: body.unit_price, tenant: tenant, effectiveFrom: body.effective_from, actor: .key(principal))
            return JSONResponse(status: .created, body: ListBody(data: try await prices.list(model: model)))
        }
    }

    /// `start`/`end` (ISO 8601, default: this month so far) and `group_by` (day, hour, model, key).
    static func window(_ request: Request) throws -> (Date, Date, UsageGrouping) {
        let query = request.uri.queryParameters
        func time(_ name: String) throws -> Date? {
            guard let text = query.get(name) else { return nil }
            if let date = ISO8601DateFormatter().date(from: text) { return date }
            if let seconds = Double(text) { return Date(timeIntervalSince1970: seconds) }
            throw OpenAIError.invalidRequest("\(name) must be an ISO 8601 time or a Unix timestamp", param: name)
        }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC") ?? .current
        let monthStart = calendar.date(from: calendar.dateComponents([.year, .month], from: Date())) ?? Date()
        let grouping = try query.get("group_by").map { text -> UsageGrouping in
            guard let value = UsageGrouping(rawValue: text) else {
                throw OpenAIError.invalidRequest("group_by must be one of day, hour, model, key", param: "group_by")
            }
            return value
        } ?? .day
        let (start, end) = (try time("start") ?? monthStart, try time("end") ?? Date())
        try Reports.checkWindow(start, end, names: ("start", "end"))
        return (start, end, grouping)
    }
}

struct PlanInput: Decodable, Sendable {
    var display_name: String?
    var limits: LimitSettingsInput
}

struct TenantLimitsBody: Encodable, Sendable {
    var plan: String
    var overrides: LimitSettings
    var effective: LimitSettings
}

struct PriceInput: Decodable, Sendable {
    var model: String
    var metric: String
    var unit_price: Int
    var tenant: String?
    var effective_from: Date?
}

/// Limits as a request body (missing fields: no limit).
/// One limit in a request body: a number, `"unlimited"` or `"inherit"` (`null` or absent:
/// not set here), each meaningful where `LimitSettings.Words` says.
enum LimitValue: Decodable, Sendable, Equatable {
    case number(Int)
    case unlimited
    case inherit

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let number = try? container.decode(Int.self) {
            self = .number(number)
            return
        }
        switch try? container.decode(String.self) {
        case "unlimited": self = .unlimited
        case "inherit": self = .inherit
        default:
            throw DecodingError.typeMismatch(Int.self, .init(codingPath: decoder.codingPath, debugDescription: "expected an integer, \"unlimited\" or \"inherit\""))
        }
    }
}

/// Limits as a request body, by their API names; strict like every body.
struct LimitSettingsInput: Decodable, Sendable {
    var requests_per_minute: LimitValue?
    var tokens_per_minute: LimitValue?
    var max_concurrent: LimitValue?
    var monthly_tokens: LimitValue?
    var monthly_images: LimitValue?
    var monthly_budget_micros: LimitValue?

    var values: [(LimitSettings.CodingKeys, LimitValue?)] {
        [(.requestsPerMinute, requests_per_minute), (.tokensPerMinute, tokens_per_minute), (.maxConcurrent, max_concurrent),
         (.monthlyTokens, monthly_tokens), (.monthlyImages, monthly_images), (.monthlyBudgetMicros, monthly_budget_micros)]
    }

    /// As settings for a plan (absent or `unlimited`: no limit), a tenant's override (absent
    /// or `inherit`: the plan's value; `unlimited`: none) or a key's (absent or `inherit`).
    func settings(_ words: LimitSettings.Words) throws -> LimitSettings {
        var settings = LimitSettings()
        for (key, value) in values {
            switch (value, words) {
            case (nil, _), (.inherit?, .tenantOverride), (.inherit?, .keyOverride), (.unlimited?, .plan): settings[key] = nil
            case (.unlimited?, .tenantOverride): settings[key] = LimitSettings.unlimited
            case (.number(let number)?, _):
                // The sentinel for "unlimited" is only ever written for the word, never taken as a number.
                guard number >= 0 else {
                    throw OpenAIError.invalidRequest("\(key.rawValue): must be an integer from 0, \"unlimited\" or \"inherit\"", param: key.rawValue)
                }
                settings[key] = number
            case (.inherit?, .plan):
                throw OpenAIError.invalidRequest("a plan has no value to inherit: give a number or \"unlimited\"", param: key.rawValue)
            case (.unlimited?, .keyOverride):
                throw OpenAIError.invalidRequest("a key's limit can only tighten its tenant's: give a number or \"inherit\"", param: key.rawValue)
            }
        }
        return settings
    }

    /// As a key's `limits` (names as in the API, unset ones left out).
    func keyLimits() throws -> [String: Int] { try settings(.keyOverride).keyLimits }
}

extension Optional where Wrapped == String {
    func asyncMapTenant(_ transform: (String) async throws -> UUID) async rethrows -> UUID? {
        guard let value = self else { return nil }
        return try await transform(value)
    }
}
