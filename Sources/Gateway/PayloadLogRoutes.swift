import Foundation
import Hummingbird
import Tenancy

/// `GET /v1/payload_logs` (scope `logs:read`): the tenant's own logged requests and responses,
/// newest first, when it opted in to payload logging. `limit` (1-100, default 20), `before`
/// (an ISO 8601 time: older entries, for paging) and `request_id` narrow it.
struct PayloadLogRoutes {
    let payloadLog: PayloadLog

    func register(on group: RouterGroup<GatewayRequestContext>) {
        group.get("payload_logs") { request, context in
            let (_, tenant) = try context.requireTenant(.logsRead)
            let query = request.uri.queryParameters
            for name in query.map({ String($0.key) }) where !["limit", "before", "request_id"].contains(name) {
                throw OpenAIError.invalidRequest("Unknown parameter: '\(name)'.", param: name, code: "unknown_parameter")
            }
            let limit = try query.get("limit").map { text -> Int in
                guard let value = Int(text), (1...100).contains(value) else {
                    throw OpenAIError.invalidRequest("limit must be an integer from 1 to 100", param: "limit")
                }
                return value
            } ?? 20
            let before = try query.get("before").map { text -> Date in
                guard let date = ISO8601DateFormatter().date(from: text) else {
                    throw OpenAIError.invalidRequest("before must be an ISO 8601 time", param: "before")
                }
                return date
            }
            let entries = try await payloadLog.list(tenant: tenant, limit: limit, before: before, requestID: query.get("request_id"))
            return JSONResponse(status: .ok, body: ListBody(data: entries))
        }
    }
}
