import Foundation
import Metering
import NIOHTTP1
import Postgres
import Synchronization
import Tenancy
import TestSupport
import Testing

/// The defects of the outside security audit (issue "Hardening"), each through the real binary.
@Suite struct SecurityEndToEndTests {
    static func issue(_ fixture: GatewayFixture, scopes: [Scope], models: [String] = [], expiresAt: Date? = nil) async throws -> CreatedAPIKey {
        try await fixture.harness.system.apiKeys.create(
            tenant: fixture.tenantA.id, NewAPIKey(name: "k", scopes: scopes, allowedModels: models, expiresAt: expiresAt),
            issuer: .operator(.init("test")))
    }

    /// S1: every path that hands out a secret is bounded by what the caller holds: rotation
    /// refuses a key that holds more (never narrowing it), and a child key never outlives its
    /// parent.
    @Test func keyRotationAndCreationCannotEscalatePrivileges() async throws {
        try await GatewayFixture.with { fixture in
            let base = fixture.server.baseURL
            // A key holding only keys:manage rotates an inference,usage:read key.
            let manager = try await Self.issue(fixture, scopes: [.keysManage])
            let worker = try await Self.issue(fixture, scopes: [.inference, .usageRead])
            let scoped = try await HTTP.send(.POST, base + "/v1/keys/\(worker.key.id.uuidString.lowercased())/rotate", key: manager.secret)
            #expect(scoped.status == 403, "\(scoped.body)")
            #expect(scoped.errorCode == "insufficient_scope")
            #expect(scoped.json["key"] == nil, "no secret may come back: \(scoped.body)")

            // A key limited to one model rotates an unrestricted key.
            let bardManager = try await Self.issue(fixture, scopes: [.keysManage, .inference], models: ["bard"])
            let unrestricted = try await Self.issue(fixture, scopes: [.inference])
            let modelBound = try await HTTP.send(.POST, base + "/v1/keys/\(unrestricted.key.id.uuidString.lowercased())/rotate", key: bardManager.secret)
            #expect(modelBound.status == 403, "\(modelBound.body)")
            #expect(modelBound.json["key"] == nil)
            // The refused keys were not touched: they still work and were not replaced.
            for key in [worker, unrestricted] {
                let stored = try await fixture.harness.system.apiKeys.get(key.key.id, tenant: fixture.tenantA.id)
                #expect(stored.replacedBy == nil && stored.expiresAt == nil && stored.revokedAt == nil)
                #expect(try await HTTP.send(.GET, base + "/v1/models", key: key.secret).status == 200)
            }
            // What the caller holds itself it may rotate.
            let peer = try await Self.issue(fixture, scopes: [.keysManage, .inference, .usageRead])
            let allowed = try await HTTP.send(.POST, base + "/v1/keys/\(worker.key.id.uuidString.lowercased())/rotate", key: peer.secret)
            #expect(allowed.status == 201, "\(allowed.body)")

            // A parent that expires soon: its children expire with it. (20 s: with 3, a run beside
            // two CPU hogs reached the rotation below after the parent had expired, and got 401.)
            let parentExpiry = Date().addingTimeInterval(20)
            let parent = try await Self.issue(fixture, scopes: [.keysManage, .inference], expiresAt: parentExpiry)
            let later = try await HTTP.send(
                .POST, base + "/v1/keys", key: parent.secret,
                json: ["name": "child", "scopes": ["inference"], "expires_at": ISO8601DateFormatter().string(from: Date().addingTimeInterval(86_400))])
            #expect(later.status == 403, "\(later.body)")
            #expect((later.json["error"] as? [String: Any])?["param"] as? String == "expires_at")
            let child = try await HTTP.send(.POST, base + "/v1/keys", key: parent.secret, json: ["name": "child", "scopes": ["inference"]])
            #expect(child.status == 201, "\(child.body)")
            let childExpiry = (child.json["expires_at"] as? String).flatMap { ISO8601DateFormatter().date(from: $0) }
            #expect(childExpiry.map { abs($0.timeIntervalSince(parentExpiry)) < 1 } == true, "\(child.body)")
            let childKey = try #require(child.json["key"] as? String)
            #expect(try await HTTP.send(.GET, base + "/v1/models", key: childKey).status == 200)
            // Rotating a key that outlives the parent is refused too.
            let outliving = try await HTTP.send(.POST, base + "/v1/keys/\(unrestricted.key.id.uuidString.lowercased())/rotate", key: parent.secret)
            #expect(outliving.status == 403, "\(outliving.body)")
            // Once the parent has expired, so has the child.
            let refused = await eventually(within: .seconds(90)) { (try? await HTTP.send(.GET, base + "/v1/models", key: childKey).status) == 401 }
            #expect(refused, "the child key outlived its parent")
        }
    }

    /// S2: metric labels come from route templates, never from what a client sent; a key in the
    /// path reaches neither a label nor the access log; methods outside HTTP's standard ones
    /// share one label.
    @Test func clientPathsCannotGrowTheMetricsOrLeakKeysIntoThem() async throws {
        try await GatewayFixture.with(extraEnvironment: ["MODELGATE_LOG_FORMAT": "json"]) { fixture in
            let base = fixture.server.baseURL
            let leaked = try await Self.issue(fixture, scopes: [.inference])
            // Authenticated, so that the failed-attempt slowdown stays out of the way; a few
            // unauthenticated ones (401s) below.
            func shapes(_ index: Int) -> [(HTTPMethod, String)] {
                let random = UUID().uuidString.lowercased() + "-\(index)"
                return [
                    (.GET, "/v1/\(random)"), (.DELETE, "/v1/keys/\(random)"), (.GET, "/\(random)"), (.POST, "/admin/v1/\(random)/x"),
                    (.GET, "/v1/models/\(random)"), (.PUT, "/v1/keys/\(random)"), (.DELETE, "/v1/keys/\(leaked.secret)"),
                    (.GET, "/v1/keys/\(leaked.secret)/\(random)"),
                ]
            }
            func series() async throws -> [String] {
                let metrics = try await HTTP.send(.GET, base + "/metrics")
                #expect(metrics.status == 200)
                return metrics.body.split(separator: "\n").map(String.init).filter { $0.hasPrefix("modelgate_http_") }
            }
            func unauthenticated(_ index: Int) async throws {
                _ = try await HTTP.send(.DELETE, base + "/v1/keys/\(UUID().uuidString)-\(index)")
                _ = try await HTTP.send(.GET, base + "/v1/keys/\(leaked.secret)")
            }
            // Every shape once (its series appear), then 5,000 distinct paths of those shapes.
            _ = try await series()
            for (method, path) in shapes(0) { _ = try await HTTP.send(method, base + path, key: fixture.keyA) }
            try await unauthenticated(0)
            let before = try await series()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<8 {
                    group.addTask {
                        for index in stride(from: worker, to: 625, by: 8) {
                            for (method, path) in shapes(index + 1) { _ = try await HTTP.send(method, base + path, key: fixture.keyA) }
                        }
                    }
                }
                try await group.waitForAll()
            }
            for index in 1...4 { try await unauthenticated(index) }
            let after = try await series()
            let beforeNames = Set(before.map { $0.split(separator: " ").first.map(String.init) ?? $0 })
            let afterNames = Set(after.map { $0.split(separator: " ").first.map(String.init) ?? $0 })
            #expect(afterNames == beforeNames, "new series: \(afterNames.subtracting(beforeNames).sorted().prefix(10))")
            #expect(after.allSatisfy { !$0.contains("mgk_") }, "a key in a label")
            #expect(after.contains { $0.contains("route=\"unmatched\"") })
            #expect(after.contains { $0.contains("route=\"/v1/keys/{id}\"") })
            // The key sent as a path segment: not in the log, though its display prefix may be.
            let body = String(leaked.secret.dropFirst(4))
            #expect(!fixture.server.log.contains(body), "the key reached the log")
            #expect(fixture.server.log.contains(leaked.key.prefix + "…"), "the redacted path is logged")
            // Every family has HELP and TYPE, counters end in _total.
            let exposition = try await HTTP.send(.GET, base + "/metrics").body
            var families: [String: (help: Bool, type: String?)] = [:]
            for line in exposition.split(separator: "\n") {
                let parts = line.split(separator: " ", maxSplits: 3).map(String.init)
                if parts.count >= 3, parts[0] == "#", parts[1] == "HELP" { families[parts[2], default: (false, nil)].help = true }
                if parts.count >= 4, parts[0] == "#", parts[1] == "TYPE" { families[parts[2], default: (false, nil)].type = parts[3] }
            }
            #expect(!families.isEmpty)
            for (name, family) in families {
                #expect(family.help, "\(name) has no HELP")
                if family.type == "counter" { #expect(name.hasSuffix("_total"), "counter \(name) lacks _total") }
            }
            for name in ["process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds", "process_start_time_seconds",
                         "modelgate_db_queries_total", "modelgate_auth_failures_total"] {
                #expect(families[name] != nil, "\(name) missing")
            }
        }
    }

    /// S3: idempotent responses (which echo prompts and completions) are sealed, and gone with
    /// the tenant.
    @Test func idempotentResponsesAreSealedAndDieWithTheTenant() async throws {
        try await GatewayFixture.with { fixture in
            let base = fixture.server.baseURL
            let marker = "MARKER\(UUID().uuidString.prefix(12).replacingOccurrences(of: "-", with: ""))"
            let body: [String: Any] = ["model": "shakespeare", "prompt": "KING \(marker):", "echo": true, "max_tokens": 3]
            let first = try await HTTP.send(.POST, base + "/v1/completions", key: fixture.keyA, json: body, headers: [("Idempotency-Key", "retry-1")])
            #expect(first.status == 200, "\(first.body)")
            #expect(first.body.contains(marker))
            let replay = try await HTTP.send(.POST, base + "/v1/completions", key: fixture.keyA, json: body, headers: [("Idempotency-Key", "retry-1")])
            #expect(replay.headers.first(name: "Idempotent-Replayed") == "true")
            #expect(replay.body == first.body)
            let different = try await HTTP.send(
                .POST, base + "/v1/completions", key: fixture.keyA, json: body.merging(["max_tokens": 4]) { $1 }, headers: [("Idempotency-Key", "retry-1")])
            #expect(different.status == 409)
            func markerInDump() async throws -> Bool {
                let dump = try await fixture.harness.system.dump()
                return dump.contains(marker) || dump.contains(Array(marker.utf8).hexString)
            }
            #expect(try await markerInDump() == false, "the stored response is plaintext in the database")
            let deleted = try await HTTP.send(.DELETE, base + "/admin/v1/tenants/\(fixture.tenantA.id.uuidString.lowercased())", key: fixture.harness.operatorKey)
            #expect(deleted.status == 200)
            let left = try await fixture.harness.system.pool.query("SELECT count(*) AS n FROM idempotency_keys WHERE tenant_id = $1", [fixture.tenantA.id])
            #expect(try left.first?.decode("n", as: Int.self) == 0)
            #expect(try await markerInDump() == false)
        }
    }

    /// S4: a tenant that opts in gets its payloads logged — sealed, readable by itself only (scope
    /// logs:read), gone with the tenant.
    @Test func payloadLoggingKeepsSealedPayloadsTheTenantCanRead() async throws {
        try await GatewayFixture.with { fixture in
            let base = fixture.server.baseURL
            let tenant = fixture.tenantA.id.uuidString.lowercased()
            let optIn = try await HTTP.send(.PATCH, base + "/admin/v1/tenants/\(tenant)", key: fixture.harness.operatorKey, json: ["payload_logging": true])
            #expect(optIn.status == 200, "\(optIn.body)")
            let reader = try await Self.issue(fixture, scopes: [.inference, .logsRead])
            let marker = "PAYLOAD\(UUID().uuidString.prefix(8))"
            // The opt-in reaches every instance's key cache at once (NOTIFY), so the next request is logged.
            let logged = await eventually {
                _ = try? await HTTP.send(.POST, base + "/v1/completions", key: reader.secret, json: ["model": "shakespeare", "prompt": "\(marker) 1", "max_tokens": 2])
                let list = try? await HTTP.send(.GET, base + "/v1/payload_logs", key: reader.secret)
                return (list?.json["data"] as? [[String: Any]])?.isEmpty == false
            }
            #expect(logged)
            let stream = try await HTTP.send(
                .POST, base + "/v1/chat/completions", key: reader.secret,
                json: ["model": "shakespeare", "messages": [["role": "user", "content": "\(marker) 2"]], "max_tokens": 2, "stream": true])
            #expect(stream.status == 200)
            let list = try await HTTP.send(.GET, base + "/v1/payload_logs?limit=100", key: reader.secret)
            #expect(list.status == 200, "\(list.body)")
            let entries = list.json["data"] as? [[String: Any]] ?? []
            let streamed = entries.first { ($0["request"] as? String)?.contains("\(marker) 2") == true }
            #expect(streamed?["route"] as? String == "/v1/chat/completions")
            #expect((streamed?["response"] as? String)?.contains("data: [DONE]") == true, "\(streamed ?? [:])")
            #expect(entries.contains { ($0["request"] as? String)?.contains("\(marker) 1") == true && ($0["response"] as? String)?.contains("text_completion") == true })
            // Another tenant's reader sees nothing of it; a key without logs:read may not read.
            let other = try await fixture.harness.system.apiKeys.create(
                tenant: fixture.tenantB.id, NewAPIKey(name: "r", scopes: [.logsRead]), issuer: .operator(.init("test")))
            let foreign = try await HTTP.send(.GET, base + "/v1/payload_logs", key: other.secret)
            #expect((foreign.json["data"] as? [Any])?.isEmpty == true, "\(foreign.body)")
            #expect(try await HTTP.send(.GET, base + "/v1/payload_logs", key: fixture.keyA).status == 403)
            let unknown = try await HTTP.send(.GET, base + "/v1/payload_logs?limt=3", key: reader.secret)
            #expect(unknown.status == 400)
            // Sealed at rest, gone with the tenant.
            let dump = try await fixture.harness.system.dump()
            #expect(!dump.contains(marker))
            #expect(try await HTTP.send(.DELETE, base + "/admin/v1/tenants/\(tenant)", key: fixture.harness.operatorKey).status == 200)
            let left = try await fixture.harness.system.pool.query("SELECT count(*) AS n FROM payload_logs WHERE tenant_id = $1", [fixture.tenantA.id])
            #expect(try left.first?.decode("n", as: Int.self) == 0)
        }
    }

    /// S5: a key over its rate limit is refused before its body is read or an image decoded;
    /// images are sized from their headers and bounded per request before decoding.
    @Test func expensiveWorkWaitsForAdmission() async throws {
        try await GatewayFixture.with(extraEnvironment: ["MODELGATE_LIMITS_MAX_IMAGE_PIXELS_PER_REQUEST": "15000"]) { fixture in
            let base = fixture.server.baseURL
            let limited = try await fixture.key(tenant: fixture.tenantA, limits: ["requests_per_minute": 1])
            let first = try await HTTP.send(.POST, base + "/v1/completions", key: limited, json: ["model": "shakespeare", "prompt": "A", "max_tokens": 1])
            #expect(first.status == 200, "\(first.body)")
            // A body that could not even be parsed: refused for the rate, not for the body.
            let unparsed = try await HTTP.send(.POST, base + "/v1/completions", key: limited, json: "{not json")
            #expect(unparsed.status == 429, "\(unparsed.status) \(unparsed.body)")
            #expect(unparsed.headers.first(name: "x-ratelimit-remaining-requests") == "0", "\(unparsed.headers)")
            // A PNG whose header promises 6000 x 6000 pixels and whose data is garbage: decoding
            // it would answer 400 or 413; the rate limit answers first.
            var bomb = Array(TestModels.image.prefix(33))
            bomb.replaceSubrange(16..<24, with: [0, 0, 0x17, 0x70, 0, 0, 0x17, 0x70])
            bomb += [UInt8](repeating: 0x41, count: 64)
            let image = Data(bomb).base64EncodedString()
            let rated = try await HTTP.send(.POST, base + "/v1/images/classifications", key: limited, json: ["model": "cifar", "images": Array(repeating: image, count: 16)])
            #expect(rated.status == 429, "\(rated.status) \(rated.body)")
            // Without the rate limit, the header alone refuses it: no pixel is decoded.
            let sized = try await HTTP.send(.POST, base + "/v1/images/classifications", key: fixture.keyA, json: ["model": "cifar", "image": image])
            #expect(sized.status == 413, "\(sized.body)")
            // Five 50x70 images hold 17,500 pixels: more than this server's 15,000 per request.
            let png = Data(TestModels.image).base64EncodedString()
            let many = try await HTTP.send(.POST, base + "/v1/images/classifications", key: fixture.keyA, json: ["model": "cifar", "images": Array(repeating: png, count: 5)])
            #expect(many.status == 413, "\(many.body)")
            #expect((many.json["error"] as? [String: Any])?["param"] as? String == "images")
            let four = try await HTTP.send(.POST, base + "/v1/images/classifications", key: fixture.keyA, json: ["model": "cifar", "images": Array(repeating: png, count: 4)])  // 14,000
            #expect(four.status == 200, "\(four.body)")
        }
    }

    /// S6: the failed-attempt slowdown is for guessing keys; a suspended tenant's genuine key is
    /// answered 403 at once and counts as no failed attempt.
    @Test func aSuspendedTenantIsNotSlowedDownLikeAGuesser() async throws {
        try await GatewayFixture.with { fixture in
            let base = fixture.server.baseURL
            for _ in 0..<12 { _ = try await HTTP.send(.GET, base + "/v1/models", key: "mgk_" + String(repeating: "a", count: 46)) }
            let suspended = try await HTTP.send(.POST, base + "/admin/v1/tenants/\(fixture.tenantB.slug)/suspend", key: fixture.harness.operatorKey)
            #expect(suspended.status == 200, "\(suspended.body)")
            func failures() async throws -> Int {
                let body = try await HTTP.send(.GET, base + "/metrics").body
                let line = body.split(separator: "\n").first { $0.hasPrefix("modelgate_auth_failures_total ") }
                return line.flatMap { Int($0.split(separator: " ")[1]) } ?? -1
            }
            let before = try await failures()
            #expect(await eventually { (try? await HTTP.send(.GET, base + "/v1/models", key: fixture.keyB).status) == 403 })
            for _ in 0..<5 {
                let refused = try await HTTP.send(.GET, base + "/v1/models", key: fixture.keyB)
                #expect(refused.status == 403)
                #expect(refused.errorCode == "tenant_suspended")
            }
            // The slowdown is taken on the failed-attempt path only, which counts each attempt:
            // a count that did not move is no delay, whatever the machine's speed.
            #expect(try await failures() == before, "a suspended tenant's key counted as a failed attempt")
        }
    }
}
