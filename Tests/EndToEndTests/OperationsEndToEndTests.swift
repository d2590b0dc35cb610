import Foundation
import Testing
import TestSupport

/// Operations: shutdown as a load balancer sees it (not ready, drained, gone), the access log
/// and the metrics.
@Suite struct OperationsEndToEndTests {
    @Test func onSIGTERMReadinessFailsFirstThenRequestsDrainAndUsageIsSettled() async throws {
        // A drain delay long enough for a loaded CI machine to make both requests inside it.
        let fixture = try await GatewayFixture.start(extraEnvironment: ["MODELGATE_SERVER_DRAIN_DELAY_MS": "8000"])
        try await withCleanup({ await fixture.stop() }) {
            let base = fixture.server.baseURL
            #expect(try await HTTP.send(.GET, base + "/readyz").status == 200)
            fixture.server.signal(SIGTERM)
            try await Task.sleep(for: .milliseconds(200))
            // Draining: not ready (a balancer stops sending), but requests are still served.
            let ready = try await HTTP.send(.GET, base + "/readyz")
            #expect(ready.status == 503)
            #expect(ready.body.contains("draining"), "\(ready.body)")
            let during = try await HTTP.send(
                .POST, base + "/v1/completions", key: fixture.keyA, json: ["model": "shakespeare", "prompt": "KING:", "max_tokens": 4])
            #expect(during.status == 200)
            // Then the listener closes and the process exits cleanly, its usage settled.
            let status = await fixture.server.waitForExit(timeout: .seconds(30))
            #expect(status == 0, "\(fixture.server.log.suffix(2000))")
            #expect(try await fixture.events(fixture.tenantA).count == 1)
        }
    }

    @Test func everyRequestGetsOneJSONAccessLogLineWithoutSecrets() async throws {
        let fixture = try await GatewayFixture.start(extraEnvironment: ["MODELGATE_LOG_FORMAT": "json"])
        try await withCleanup({ await fixture.stop() }) {
            let base = fixture.server.baseURL
            let prompt = "SECRET-PROMPT-TEXT"
            let plain = try await HTTP.send(.POST, base + "/v1/completions", key: fixture.keyA, json: ["model": "shakespeare", "prompt": prompt, "max_tokens": 3])
            let streamed = try await HTTP.send(
                .POST, base + "/v1/completions", key: fixture.keyA, json: ["model": "shakespeare", "prompt": prompt, "max_tokens": 5, "stream": true])
            let refused = try await HTTP.send(.GET, base + "/v1/models", key: "mgk_notarealkeyatall")
            #expect(plain.status == 200 && streamed.status == 200 && refused.status == 401)
            try await Task.sleep(for: .milliseconds(200))
            let entries = fixture.server.log.split(separator: "\n").compactMap { line -> [String: Any]? in
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return nil }
                return object["logger"] as? String == "modelgate.access" ? object : nil
            }
            func entry(_ requestID: String?) -> [String: String]? {
                entries.first { $0["request_id"] as? String == requestID }?.mapValues { "\($0)" }  // numbers or strings
            }
            let first = try #require(entry(plain.headers.first(name: "x-request-id")), "\(entries)")
            #expect(first["status"] == "200")
            #expect(first["path"] == "/v1/completions")
            #expect(first["tenant_id"] == fixture.tenantA.id.uuidString.lowercased())
            #expect(first["key_prefix"]?.hasPrefix("mgk_") == true)
            #expect(first["model"] == "shakespeare")
            #expect(first["completion_tokens"] == "3")
            #expect(first["latency_ms"] != nil)
            let stream = try #require(entry(streamed.headers.first(name: "x-request-id")))
            #expect(stream["completion_tokens"] == "5", "a stream is logged once written, with its usage")
            let unauthorized = try #require(entry(refused.headers.first(name: "x-request-id")))
            #expect(unauthorized["status"] == "401")
            #expect(entries.filter { $0["path"] as? String != "/readyz" }.count == 3, "one line per request")
            #expect(!fixture.server.log.contains(prompt))
            #expect(!fixture.server.log.contains(fixture.keyA))
        }
    }

    @Test func metricsCountRequestsTokensRejectionsAndModelState() async throws {
        let fixture = try await GatewayFixture.start()
        try await withCleanup({ await fixture.stop() }) {
            let base = fixture.server.baseURL
            let limited = try await fixture.key(tenant: fixture.tenantA, limits: ["requests_per_minute": 1])
            for _ in 0..<2 {
                _ = try await HTTP.send(.POST, base + "/v1/completions", key: limited, json: ["model": "shakespeare", "prompt": "KING:", "max_tokens": 3])
            }
            _ = try await HTTP.send(.GET, base + "/v1/models/\(UUID().uuidString)", key: fixture.keyA)
            let response = try await HTTP.send(.GET, base + "/metrics")
            #expect(response.status == 200)
            #expect(response.headers.first(name: "content-type")?.hasPrefix("text/plain") == true)
            let lines = response.body.split(separator: "\n").map(String.init)
            func value(_ name: String, _ labels: [String] = []) -> Double? {
                lines.first { line in line.hasPrefix(name + (labels.isEmpty ? " " : "{")) && labels.allSatisfy { line.contains($0) } }
                    .flatMap { $0.split(separator: " ").last.flatMap { Double($0) } }
            }
            #expect(value("modelgate_http_requests_total", [#"route="/v1/completions""#, #"status="200""#]) == 1, "\(response.body)")
            #expect(value("modelgate_http_requests_total", [#"route="/v1/completions""#, #"status="429""#]) == 1)
            #expect(value("modelgate_http_requests_total", [#"route="/v1/models/{name}""#, #"status="404""#]) == 1)
            #expect(value("modelgate_tokens_total", [#"model="shakespeare""#, #"kind="completion""#]) == 3)
            #expect(value("modelgate_admission_rejections_total", [#"reason="rate_limit""#]) == 1)
            #expect(value("modelgate_model_state", [#"model="shakespeare""#, #"state="ready""#]) == 1)
            #expect(value("modelgate_model_queue_depth", [#"model="shakespeare""#]) == 0)
            #expect(value("modelgate_model_share_waiting", [#"model="shakespeare""#]) == 0)
            #expect(value("modelgate_model_share_resting", [#"model="shakespeare""#]) == 0)
            #expect((value("modelgate_db_pool_connections") ?? 0) > 0)
            #expect(value("modelgate_key_cache_hit_ratio") != nil)
            #expect(lines.contains { $0.hasPrefix("modelgate_http_request_duration_seconds_bucket{") })
            #expect(!response.body.contains("mgk_"), "no key material in metrics")
        }
    }

    @Test func metricsCanRequireAnOperatorKey() async throws {
        let fixture = try await GatewayFixture.start(extraEnvironment: ["MODELGATE_SERVER_METRICS_AUTH": "operator"])
        try await withCleanup({ await fixture.stop() }) {
            let url = fixture.server.baseURL + "/metrics"
            #expect(try await HTTP.send(.GET, url).status == 401)
            let tenantKey = try await HTTP.send(.GET, url, key: fixture.keyA)
            #expect(tenantKey.status == 403)
            #expect(tenantKey.errorCode == "insufficient_scope")
            let operatorKey = try await HTTP.send(.GET, url, key: fixture.harness.operatorKey)
            #expect(operatorKey.status == 200)
            #expect(operatorKey.body.contains("modelgate_db_pool_connections"))
            #expect(try await HTTP.send(.GET, fixture.server.baseURL + "/healthz").status == 200, "health stays open")
        }
    }

    @Test func aSecondSIGTERMExitsAtOnce() async throws {
        let fixture = try await GatewayFixture.start(extraEnvironment: ["MODELGATE_SERVER_DRAIN_DELAY_MS": "60000"])
        try await withCleanup({ await fixture.stop() }) {
            fixture.server.signal(SIGTERM)
            try await Task.sleep(for: .milliseconds(200))
            #expect(fixture.server.isRunning, "the first SIGTERM must drain, not exit")
            let started = ContinuousClock.now
            fixture.server.signal(SIGTERM)
            let status = await fixture.server.waitForExit(timeout: .seconds(10))
            #expect(status == 130)
            #expect(ContinuousClock.now - started < .seconds(5))
        }
    }
}

/// A model that fails to load is reported, not an outage: readiness means "this instance can
/// serve" unless the model is marked required; the CLI checks a folder before asking servers
/// to load it, and `model remove` forgets a model.
@Suite struct ModelOperationsEndToEndTests {
    static func write(_ manifest: String, to folder: String) throws {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try manifest.write(toFile: folder + "/model.json", atomically: true, encoding: .utf8)
    }

    @Test func aBrokenModelIsReportedWithoutTakingTheInstanceOutOfRotation() async throws {
        let models = try TestModels.directory(privateTo: "nobody")
        defer { try? FileManager.default.removeItem(atPath: models) }
        // A typo in the manifest is a load error naming the key, not a silently ignored setting.
        try Self.write(#"{"engine": "transformer-lm", "task": "text-generation", "visibilty": "public"}"#, to: models + "/typo")
        try Self.write(#"{"engine": "resnet", "task": "image-classification", "options": {"input_sise": 32}}"#, to: models + "/badoption")
        try await GatewayFixture.with(extraEnvironment: ["MODELGATE_MODELS_DIRECTORY": models]) { fixture in
            let base = fixture.server.baseURL
            let ready = try await HTTP.send(.GET, base + "/readyz")
            #expect(ready.status == 200, "\(ready.body)")
            let states = ready.json["models"] as? [String: String] ?? [:]
            #expect(states["shakespeare"] == "ready", "\(ready.body)")
            #expect(states["typo"]?.contains("unknown key 'visibilty'") == true, "\(ready.body)")
            #expect(states["badoption"]?.contains("options.input_sise") == true, "\(ready.body)")
            let metrics = try await HTTP.send(.GET, base + "/metrics").body
            #expect(metrics.contains(#"modelgate_model_state{model="typo",state="failed"} 1"#))
            // The CLI refuses a folder that is not there (a typo) before any server hears of it.
            let environment = ["MODELGATE_MODELS_DIRECTORY": models]
            let (missingStatus, missing) = try await fixture.harness.cli(["model", "load", "nosuch"], extraEnvironment: environment)
            #expect(missingStatus == 1, "\(missing)")
            #expect(missing.contains("nosuch") && missing.contains("no such model folder"), "\(missing)")
            #expect(missing.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").count == 1)
            let rows = try await fixture.harness.system.pool.query("SELECT name FROM models WHERE name = 'nosuch'")
            #expect(rows.isEmpty)
            let (typoStatus, typo) = try await fixture.harness.cli(["model", "load", "typo"], extraEnvironment: environment)
            #expect(typoStatus == 1)
            #expect(typo.contains("visibilty"), "\(typo)")
            // remove forgets a model everywhere (its entry, its row).
            let (removeStatus, removed) = try await fixture.harness.cli(["model", "remove", "typo"], extraEnvironment: environment)
            #expect(removeStatus == 0, "\(removed)")
            let gone = await eventually {
                let ready = try? await HTTP.send(.GET, base + "/readyz")
                return (ready?.json["models"] as? [String: String])?["typo"] == nil
            }
            #expect(gone)
            let row = try await fixture.harness.system.pool.query("SELECT name FROM models WHERE name = 'typo'")
            #expect(row.isEmpty)
        }
    }

    @Test func aRequiredModelThatFailsMakesTheInstanceNotReady() async throws {
        let models = try TestModels.directory(privateTo: "nobody")
        defer { try? FileManager.default.removeItem(atPath: models) }
        try Self.write(#"{"engine": "resnet", "task": "image-classification", "required": true}"#, to: models + "/needed")
        try await ServerHarness.with { harness in
            let server = try ModelGateProcess(in: harness.directory, environment: harness.environment.merging(["MODELGATE_MODELS_DIRECTORY": models]) { $1 })
            let answered = await eventually {
                (try? await HTTP.send(.GET, server.baseURL + "/readyz"))?.status == 503
            }
            #expect(answered, "\(server.log.suffix(2000))")
            let ready = try await HTTP.send(.GET, server.baseURL + "/readyz")
            #expect((ready.json["checks"] as? [String: String])?["model:needed"]?.contains("required model is failed") == true, "\(ready.body)")
            #expect(try await HTTP.send(.GET, server.baseURL + "/healthz").status == 200)
            await server.stopGracefully()
        }
    }
}
