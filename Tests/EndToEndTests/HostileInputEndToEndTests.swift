import Foundation
import Metering
import NIOHTTP1
import Postgres
import TestSupport
import Testing

/// Targeted abuse in the spirit of OWASP API4 (unrestricted resource consumption) and API8
/// (malformed input): every hostile request gets a 4xx OpenAI-shaped error naming the problem,
/// the server stays healthy, and nothing is billed. (Cross-tenant id guessing and scope
/// escalation — API1/API5 — are in TenancyEndToEndTests.)
@Suite struct HostileInputEndToEndTests {
    @Test func hostileRequestsGetClearClientErrorsAndCostNothing() async throws {
        let fixture = try await GatewayFixture.start()
        try await withCleanup({ await fixture.stop() }) {
            let base = fixture.server.baseURL
            let nested = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
            var invalidUTF8 = Data(#"{"model": "shakespeare", "prompt": "KING"#.utf8)
            invalidUTF8.append(contentsOf: [0xC3, 0x28, 0xFF])
            invalidUTF8.append(contentsOf: Data(#"", "max_tokens": 2}"#.utf8))
            let oversized = #"{"model": "shakespeare", "prompt": ""# + String(repeating: "a", count: 12 << 20) + #""}"#
            let cases: [(name: String, path: String, body: Any, status: Int, param: String?)] = [
                ("nested JSON", "/v1/completions", nested, 400, nil),
                ("nested object in a field", "/v1/completions",
                 #"{"model": "shakespeare", "prompt": "#+String(repeating: #"{"a":"#, count: 5000)+"1"+String(repeating: "}", count: 5000)+"}", 400, nil),
                ("invalid UTF-8", "/v1/completions", invalidUTF8, 400, nil),
                ("oversized body", "/v1/completions", oversized, 413, nil),
                ("huge max_tokens", "/v1/completions", ["model": "shakespeare", "prompt": "KING:", "max_tokens": 1_000_000_000_000], 400, "max_tokens"),
                // Int.max overflowed the context check and killed the server once.
                ("max_tokens of Int.max", "/v1/completions", ["model": "shakespeare", "prompt": "KING:", "max_tokens": Int.max], 400, "max_tokens"),
                ("max_completion_tokens of Int.max", "/v1/chat/completions", ["model": "shakespeare", "messages": [["role": "user", "content": "hi"]], "max_completion_tokens": Int.max], 400, "max_tokens"),
                ("negative max_tokens", "/v1/completions", ["model": "shakespeare", "prompt": "KING:", "max_tokens": -1], 400, "max_tokens"),
                ("huge n", "/v1/completions", ["model": "shakespeare", "prompt": "KING:", "n": 1_000_000, "max_tokens": 1], 400, "n"),
                ("huge logprobs", "/v1/completions", ["model": "shakespeare", "prompt": "KING:", "logprobs": 1_000_000, "max_tokens": 1], 400, "logprobs"),
                ("NUL in a stop string", "/v1/completions", ["model": "shakespeare", "prompt": "KING:", "stop": ["\u{0}"], "max_tokens": 2], 200, nil),
                ("too many prompts", "/v1/completions", ["model": "shakespeare", "prompt": Array(repeating: "a", count: 100_000), "max_tokens": 1], 400, "prompt"),
                ("number as model", "/v1/chat/completions", ["model": 7, "messages": [["role": "user", "content": "hi"]]], 400, "model"),
                ("empty messages", "/v1/chat/completions", ["model": "shakespeare", "messages": [] as [Any]], 400, "messages"),
                ("unknown role", "/v1/chat/completions", ["model": "shakespeare", "messages": [["role": "root", "content": "hi"]]], 400, "messages[0].role"),
                ("malformed base64", "/v1/images/classifications", ["model": "cifar", "image": "%%%not base64%%%"], 400, "image"),
                ("base64 of garbage", "/v1/images/classifications", ["model": "cifar", "image": Data(repeating: 0x42, count: 300).base64EncodedString()], 415, "image"),
                ("truncated PNG", "/v1/images/classifications", ["model": "cifar", "image": Data(TestModels.image.prefix(60)).base64EncodedString()], 400, "image"),
                ("too many images", "/v1/images/classifications", ["model": "cifar", "images": Array(repeating: Data(TestModels.image).base64EncodedString(), count: 100)], 400, "images"),
            ]
            for hostile in cases {
                let result = try await HTTP.send(.POST, base + hostile.path, key: fixture.keyA, json: hostile.body)
                #expect(result.status == hostile.status, "\(hostile.name): \(result.status) \(result.body.prefix(300))")
                guard hostile.status != 200 else { continue }
                let error = result.json["error"] as? [String: Any]
                #expect(error?["message"] is String, "\(hostile.name): not an OpenAI-shaped error: \(result.body.prefix(300))")
                #expect(error?["type"] as? String == "invalid_request_error", "\(hostile.name): \(result.body.prefix(300))")
                if let param = hostile.param { #expect(error?["param"] as? String == param, "\(hostile.name): \(result.body.prefix(300))") }
            }
            // Report windows no database time can hold (start=1e300 trapped and killed the server).
            for query in ["start=1e300", "start=nan", "end=-inf", "start=0001-01-01T00:00:00Z", "start=2030-01-01T00:00:00Z&end=2020-01-01T00:00:00Z"] {
                let result = try await HTTP.send(.GET, base + "/v1/usage?" + query, key: fixture.keyA)
                #expect(result.status == 400, "\(query): \(result.status) \(result.body.prefix(300))")
                let param = (result.json["error"] as? [String: Any])?["param"] as? String
                #expect(param == "start" || param == "end", "\(query): \(result.body.prefix(300))")
            }
            // Still healthy; the only billed request is the one that ran.
            #expect(fixture.server.isRunning)
            #expect(try await HTTP.send(.GET, base + "/healthz").status == 200)
            #expect(try await fixture.events(fixture.tenantA).count == 1)
            #expect(!fixture.server.log.contains("unhandled error"), "\(fixture.server.log.suffix(2000))")
        }
    }

    /// Values found by the Schemathesis run (bench/schemathesis.sh) that used to be 500s.
    @Test func operatorInputsTheDatabaseCannotHoldAreClientErrors() async throws {
        let fixture = try await GatewayFixture.start()
        try await withCleanup({ await fixture.stop() }) {
            let base = fixture.server.baseURL
            let key = fixture.harness.operatorKey
            let tenant = fixture.tenantA.id.uuidString.lowercased()
            let cases: [(method: HTTPMethod, path: String, body: Any?, status: Int, param: String?)] = [
                (.PUT, "/admin/v1/tenants/\(tenant)/limits", ["requests_per_minute": 60, "monthly_budget_micros": -1], 400, "monthly_budget_micros"),
                (.PUT, "/admin/v1/tenants/\(tenant)/limits", ["requests_per_minute": 1 << 40], 400, "requests_per_minute"),
                (.PUT, "/admin/v1/plans/fuzz", ["limits": ["tokens_per_minute": -5]], 400, "tokens_per_minute"),
                (.GET, "/admin/v1/invoices?month=2026-11&tenant=%00abc", nil, 400, nil),
                (.GET, "/admin/v1/usage?tenant=a%00b", nil, 400, nil),
                (.POST, "/admin/v1/tenants", ["slug": "nul\u{0}slug", "display_name": "x"], 400, nil),
                (.POST, "/admin/v1/tenants", ["slug": "ok-slug", "display_name": "with \u{0} NUL"], 400, nil),
            ]
            for hostile in cases {
                let result = try await HTTP.send(hostile.method, base + hostile.path, key: key, json: hostile.body)
                #expect(result.status == hostile.status, "\(hostile.method) \(hostile.path): \(result.status) \(result.body)")
                let error = result.json["error"] as? [String: Any]
                #expect(error?["type"] as? String == "invalid_request_error", "\(hostile.path): \(result.body)")
                if let param = hostile.param { #expect(error?["param"] as? String == param, "\(hostile.path): \(result.body)") }
            }
            // Nothing changed: the limits are still the plan's.
            let limits = try await HTTP.send(.GET, base + "/admin/v1/tenants/\(tenant)/limits", key: key)
            #expect((limits.json["overrides"] as? [String: Any])?["monthly_budget_micros"] is NSNull, "\(limits.body)")
            // A deleted tenant's id comes back in the same (lower-case) form as everywhere else.
            let deleted = try await HTTP.send(.DELETE, base + "/admin/v1/tenants/\(fixture.tenantB.id.uuidString.uppercased())", key: key)
            #expect(deleted.status == 200, "\(deleted.body)")
            #expect(deleted.json["id"] as? String == fixture.tenantB.id.uuidString.lowercased())
            #expect(!fixture.server.log.contains("unhandled error"), "\(fixture.server.log.suffix(2000))")
        }
    }

    /// A short Schemathesis run (bench/schemathesis.sh, a few examples per operation) against the
    /// real binary: no 5xx, and every status, content type, header and body as documented. The
    /// full run (100 examples per operation, thousands of requests) is the same script.
    @Test(.enabled(if: Schemathesis.binDirectory != nil, "schemathesis could not be installed; skipping"), .timeLimit(.minutes(8)))
    func schemathesisFindsNoServerErrorAndNoSchemaViolation() async throws {
        let script = TestModels.repository.path + "/bench/schemathesis.sh"
        let binary = ModelGateProcess.binaryPath
        let path = (Schemathesis.binDirectory ?? "") + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        let (status, output) = try await onOwnThread {
            try ChildProcess.run(script, ["4", binary], environment: ModelGateProcess.cleanEnvironment(["PATH": path]))
        }
        #expect(status == 0, "\(output.suffix(6000))")
        #expect(output.contains("generated requests"), "\(output.suffix(2000))")
    }
}
