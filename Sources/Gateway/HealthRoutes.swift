import Foundation
import Hummingbird

/// What `/readyz` checks; each named check is either fine (nil) or a one-line reason.
public struct ReadinessReport: Sendable, Encodable {
    public var checks: [String: String]
    public var problems: [String: String]
    /// Each model's state (`ready`, `loading`, `unloaded`, `failed: why`): reported, not a
    /// problem, unless its manifest says it is required (then it is among `checks`).
    public var models: [String: String] = [:]

    public init(checks: [String: String?], models: [String: String] = [:]) {
        self.models = models
        var fine: [String: String] = [:]
        var problems: [String: String] = [:]
        for (name, problem) in checks {
            if let problem { problems[name] = problem } else { fine[name] = "ok" }
        }
        self.checks = fine
        self.problems = problems
    }

    public var isReady: Bool { problems.isEmpty }
}

/// `GET /healthz`: the process is alive. `GET /readyz`: it can serve (database reachable,
/// migrations current, required models ready); 503 with the reasons otherwise. One model that
/// failed to load does not take an instance out of rotation unless it is required.
struct HealthRoutes {
    let readiness: @Sendable () async -> ReadinessReport
    static let healthy = ByteBuffer(string: #"{"status":"ok"}"#)

    func register(on router: Router<GatewayRequestContext>) {
        router.get("/healthz") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: Self.healthy))
        }
        router.get("/readyz") { _, _ in
            let report = await readiness()
            var checks = report.checks
            for (name, problem) in report.problems { checks[name] = problem }
            return JSONResponse(
                status: report.isReady ? .ok : .serviceUnavailable,
                body: ReadinessBody(status: report.isReady ? "ready" : "not_ready", checks: checks, models: report.models))
        }
    }
}

struct ReadinessBody: Encodable, Sendable {
    var status: String
    var checks: [String: String]
    var models: [String: String]
}

/// A JSON body with an explicit status.
struct JSONResponse<Body: Encodable & Sendable>: ResponseGenerator {
    var status: HTTPResponse.Status
    var body: Body

    func response(from request: Request, context: some RequestContext) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        let data = try encoder.encode(body)
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
