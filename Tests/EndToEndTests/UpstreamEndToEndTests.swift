import Foundation
import Inference
import Metering
import NIOHTTP1
import Postgres
import Tenancy
import TestSupport
import Synchronization
import Testing

/// Models served by remote OpenAI-compatible servers (`"engine": "upstream"`), tested against
/// a fault-injecting upstream written for the tests (`Python/fake_upstream.py`) through the
/// real binary: the rewritten request, the answer under the client's model name, billing from
/// the upstream's usage bounded by the reservation, every fault as an OpenAI error, a client
/// that leaves, failover between two endpoints.
@Suite struct UpstreamEndToEndTests {
    @Test func anUpstreamModelIsServedThroughThePipeline() async throws {
        try await FakeUpstreamFixture.with { fixture in
            let base = fixture.server.baseURL
            let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            let completion = try await HTTP.send(
                .POST, base + "/v1/completions", key: fixture.key, json: ["model": "fleet", "prompt": "one two three", "max_tokens": 4],
                headers: [("traceparent", trace)])
            #expect(completion.status == 200, "\(completion.body)")
            #expect(completion.json["model"] as? String == "fleet", "responses name the model as the client did")
            #expect((completion.json["choices"] as? [[String: Any]])?.first?["text"] as? String == "w0 w1 w2 w3 ")
            #expect(completion.headers.first(name: "traceparent") == trace)
            var sent = try await fixture.upstreams[0].requests()
            #expect(sent.last?.body["model"] as? String == "fake-model", "the upstream's name for the model")
            #expect(sent.last?.body["max_tokens"] as? Int == 4)
            #expect(sent.last?.headers["traceparent"] == trace, "the trace context is passed on")
            #expect(sent.last?.headers["x-request-id"] != nil)
            #expect(sent.last?.headers["authorization"] == nil)

            // Without max_tokens the upstream is sent the model's default: what was reserved.
            let defaulted = try await HTTP.send(.POST, base + "/v1/completions", key: fixture.key, json: ["model": "fleet", "prompt": "a"])
            #expect(defaulted.status == 200)
            sent = try await fixture.upstreams[0].requests()
            #expect(sent.last?.body["max_tokens"] as? Int == 5)

            let chat = try await HTTP.send(
                .POST, base + "/v1/chat/completions", key: fixture.key,
                json: [
                    "model": "fleet", "messages": [["role": "user", "content": "hello there"]], "max_completion_tokens": 3,
                    "tools": [["type": "function", "function": ["name": "f", "parameters": ["type": "object"]]]],
                ])
            #expect(chat.status == 200, "an upstream takes OpenAI's optional parameters: \(chat.body)")
            let message = (chat.json["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any]
            #expect(message?["content"] as? String == "w0 w1 w2 ")
            sent = try await fixture.upstreams[0].requests()
            #expect(sent.last?.body["max_completion_tokens"] as? Int == 3)
            #expect(sent.last?.body["tools"] != nil)

            // Streams: usage is always asked of the upstream, passed on only when the client asked.
            let quiet = try await HTTP.send(
                .POST, base + "/v1/chat/completions", key: fixture.key,
                json: ["model": "fleet", "messages": [["role": "user", "content": "x y"]], "max_tokens": 3, "stream": true])
            #expect(quiet.status == 200)
            let deltas = sseObjects(quiet.body).compactMap {
                ((($0["choices"] as? [[String: Any]])?.first?["delta"]) as? [String: Any])?["content"] as? String
            }
            #expect(deltas == ["w0 ", "w1 ", "w2 "] && quiet.body.hasSuffix("data: [DONE]\n\n"), "\(quiet.body)")
            #expect(!quiet.body.contains("\"usage\""), "no usage chunk the client did not ask for: \(quiet.body)")
            #expect(!quiet.body.contains("fake-model"))
            sent = try await fixture.upstreams[0].requests()
            #expect((sent.last?.body["stream_options"] as? [String: Any])?["include_usage"] as? Bool == true)
            let withUsage = try await HTTP.send(
                .POST, base + "/v1/completions", key: fixture.key,
                json: ["model": "fleet", "prompt": "x y z", "max_tokens": 2, "stream": true, "stream_options": ["include_usage": true]])
            let usage = sseObjects(withUsage.body).last?["usage"] as? [String: Any]
            #expect(usage?["completion_tokens"] as? Int == 2, "\(withUsage.body)")

            let embeddings = try await HTTP.send(.POST, base + "/v1/embeddings", key: fixture.key, json: ["model": "fleet-embed", "input": ["a b", "c"]])
            #expect(embeddings.status == 200, "\(embeddings.body)")
            #expect((embeddings.json["data"] as? [Any])?.count == 2)
            #expect(embeddings.json["model"] as? String == "fleet-embed")

            // Strict as ever: an unknown field is refused before anything is sent.
            let before = try await fixture.upstreams[0].requests().count
            let unknown = try await HTTP.send(.POST, base + "/v1/completions", key: fixture.key, json: ["model": "fleet", "prompt": "a", "bogus": 1])
            #expect(unknown.status == 400)
            #expect(try await fixture.upstreams[0].requests().count == before)

            // Each request billed exactly the upstream's usage.
            let events = try await fixture.events(count: 6)
            let prompts = try events.map { try $0.decode("prompt_tokens", as: Int.self) }
            let completions = try events.map { try $0.decode("completion_tokens", as: Int.self) }
            #expect(prompts == [3, 1, 2, 2, 3, 3], "the upstream's prompt tokens")
            #expect(completions == [4, 5, 3, 3, 2, 0], "the upstream's completion tokens")
            #expect(try events.allSatisfy { try $0.decode("model", as: String.self).hasPrefix("fleet") })
            #expect(try events.allSatisfy { try $0.decode("usage_source", as: String?.self) == "upstream" })
        }
    }

    @Test func anUpstreamThatReportsNoUsageIsCountedWithTheTokenizerOrBilledItsBound() async throws {
        try await FakeUpstreamFixture.with { fixture in
            let base = fixture.server.baseURL
            for (model, stream) in [("fleet", false), ("fleet", true), ("counted", false), ("counted", true)] {
                let response = try await HTTP.send(
                    .POST, base + "/v1/completions", key: fixture.key, json: ["model": model, "prompt": "FAULT:nousage FAULT:short", "max_tokens": 40, "stream": stream])
                #expect(response.status == 200, "\(response.body)")
            }
            let events = try await fixture.events(count: 4)
            let sources = try events.map { try $0.decode("usage_source", as: String?.self) }
            let completions = try events.map { try $0.decode("completion_tokens", as: Int.self) }
            #expect(sources == ["bound", "bound", "counted", "counted"])
            // The upstream stopped after 10 of 40 words. Without a tokenizer, the reservation (40)
            // is billed; with one, its count of the words (the whole text, or chunk by chunk).
            let tokenizer = try BPETokenizer(directory: TestModels.repository.path + "/models/shakespeare")
            let text = (0..<10).map { "w\($0) " }.joined()
            let whole = tokenizer.encode(text).count
            let chunked = (0..<10).reduce(0) { $0 + tokenizer.encode("w\($1) ").count }
            #expect(whole < 40 && chunked < 40, "the fixture tells a local count from the bound")
            #expect(completions == [40, 40, whole, chunked], "\(completions)")
            // The prompt: its UTF-8 bytes as the bound, or the tokenizer's count.
            let prompts = try events.map { try $0.decode("prompt_tokens", as: Int.self) }
            let prompt = tokenizer.encode("FAULT:nousage FAULT:short").count
            #expect(prompts == [25, 25, prompt, prompt])
        }
    }

    @Test func anUpstreamThatOverReportsIsBilledAtMostItsReservation() async throws {
        try await FakeUpstreamFixture.with(monthlyTokens: 120) { fixture in
            let base = fixture.server.baseURL
            // 17 bytes of prompt bound the prompt's tokens (no tokenizer); the upstream claims 1000x.
            let response = try await HTTP.send(.POST, base + "/v1/completions", key: fixture.key, json: ["model": "fleet", "prompt": "FAULT:overreport", "max_tokens": 10])
            #expect(response.status == 200, "\(response.body)")
            let events = try await fixture.events(count: 1)
            #expect(try events[0].decode("prompt_tokens", as: Int.self) == 16)
            #expect(try events[0].decode("completion_tokens", as: Int.self) == 10)
            let metrics = try await HTTP.send(.GET, base + "/metrics", key: fixture.operatorKey)
            // Not billed, counted: (1000 - 16) prompt and (10000 - 10) completion tokens.
            #expect(metrics.body.contains("modelgate_upstream_usage_excess_tokens_total{model=\"fleet\"} 10974"), "\(metrics.body.prefix(300))")
            // Until the quota refuses: never past it.
            var refused = false
            for _ in 0..<20 where !refused {
                let next = try await HTTP.send(.POST, base + "/v1/completions", key: fixture.key, json: ["model": "fleet", "prompt": "FAULT:overreport", "max_tokens": 10])
                refused = next.status == 429
                #expect(next.status == 200 || next.status == 429, "\(next.body)")
            }
            #expect(refused)
            let total = try await fixture.harness.system.pool.query(
                "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint AS n FROM usage_events WHERE tenant_id = $1", [fixture.tenant.id])
            #expect(try total[0].decode("n", as: Int.self) <= 120)
        }
    }

    @Test func everyFaultOfAnUpstreamIsAPromptOpenAIError() async throws {
        try await FakeUpstreamFixture.with { fixture in
            let base = fixture.server.baseURL
            func complete(_ fault: String, stream: Bool = false) async throws -> HTTPResult {
                try await HTTP.send(
                    .POST, base + "/v1/completions", key: fixture.key, json: ["model": "faulty", "prompt": "FAULT:\(fault)", "max_tokens": 6, "stream": stream],
                    timeout: .seconds(20))
            }
            let expected: [(String, Int, String)] = [
                ("slow", 504, "upstream_timeout"), ("500", 502, "upstream_error"), ("garbage", 502, "upstream_error"), ("huge", 502, "upstream_error"),
                ("400", 400, "context_length_exceeded"),
            ]
            for (fault, status, code) in expected {
                let response = try await complete(fault)
                #expect(response.status == status, "\(fault): \(response.body)")
                #expect(response.errorCode == code, "\(fault): \(response.body)")
                let message = (response.json["error"] as? [String: Any])?["message"] as? String ?? ""
                #expect(!message.contains("127.0.0.1") && !message.contains("/secret/path"), "no upstream address: \(message)")
                if status >= 500 { #expect(message.contains("faulty"), "the error names the model: \(message)") }
            }
            #expect(try await complete("400").body.contains("upstream says: prompt is too long"))
            // Streams that break end with an error event; what reached the client is billed.
            for fault in ["stall", "reset", "endless"] {
                let response = try await complete(fault, stream: true)
                #expect(response.status == 200)
                #expect(response.body.contains("\"error\""), "\(fault): \(response.body.suffix(300))")
            }
            #expect(try await HTTP.send(.GET, base + "/healthz").status == 200)
            let events = try await fixture.events(count: 9)
            for event in events.prefix(6) {
                #expect(try event.decode("prompt_tokens", as: Int.self) == 0 && event.decode("completion_tokens", as: Int.self) == 0, "nothing produced, nothing billed")
            }
            let streamed = try events.suffix(3).map { try $0.decode("completion_tokens", as: Int.self) }
            #expect(streamed[0] == 1 && streamed[1] == 2, "the stalled and the reset stream are billed what they sent: \(streamed)")
            #expect(streamed[2] > 0 && streamed[2] <= 6)
        }
    }

    @Test func aClientThatLeavesAStreamClosesTheUpstreamConnection() async throws {
        try await FakeUpstreamFixture.with { fixture in
            let connection = try RawConnection(port: fixture.server.port)
            let body = #"{"model":"fleet","prompt":"FAULT:endless","max_tokens":100000,"stream":true}"#
            connection.send(
                "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(fixture.key)\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
            var received = 0
            let deadline = ContinuousClock.now + .seconds(30)
            while received < 2000, ContinuousClock.now < deadline { received += connection.receive() }
            #expect(received >= 2000, "the stream flows")
            connection.close()
            let left = Date().timeIntervalSince1970
            var disconnects: [Double] = []
            let closed = try await eventually(within: .seconds(20)) {
                disconnects = try await fixture.upstreams[0].log()["disconnects"] as? [Double] ?? []
                return !disconnects.isEmpty
            }
            #expect(closed, "the upstream connection was closed")
            let closedAfter = (disconnects.first ?? .infinity) - left
            // Left alone, the upstream would stream until the 600 s request timeout: a bound of
            // 60 s proves the close without racing a loaded CPU.
            #expect(closedAfter < 60, "the upstream saw the connection close \(closedAfter) s after the client left")
            print("upstream disconnect: the upstream saw its connection close \(closedAfter) s after the client left")
            let events = try await fixture.events(count: 1)
            #expect(try events[0].decode("status", as: Int.self) == 499)
            #expect(try events[0].decode("completion_tokens", as: Int.self) > 0)
        }
    }

    @Test func requestsFailOverToTheOtherEndpointAndAnEndpointThatReturnsGetsTrafficAgain() async throws {
        try await FakeUpstreamFixture.with(upstreamCount: 2) { fixture in
            let base = fixture.server.baseURL
            let outcomes = try await withThrowingTaskGroup(of: [Int].self) { group in
                for client in 0..<16 {
                    group.addTask {
                        var statuses: [Int] = []
                        for round in 0..<6 {
                            if client == 0 && round == 2 { fixture.upstreams[0].process.signal(SIGKILL) }
                            let response = try await HTTP.send(
                                .POST, base + "/v1/completions", key: fixture.key, json: ["model": "pair", "prompt": "p q", "max_tokens": 2])
                            statuses.append(response.status)
                        }
                        return statuses
                    }
                }
                var all: [Int] = []
                for try await statuses in group { all += statuses }
                return all
            }
            #expect(outcomes.count == 96)
            #expect(outcomes.allSatisfy { $0 == 200 }, "every request succeeded on the other endpoint: \(outcomes.filter { $0 != 200 })")
            let dead = "endpoint=\"127.0.0.1:\(fixture.upstreams[0].port)\"} 0"
            let ejected = try await eventually {
                try await HTTP.send(.GET, base + "/metrics", key: fixture.operatorKey).body.contains("modelgate_upstream_endpoint_healthy{model=\"pair\",\(dead)")
            }
            #expect(ejected, "the killed endpoint is ejected")
            // ... and `modelgate model show` says so, by host and port.
            var shown = ""
            func line(_ index: Int) -> String {
                shown.split(separator: "\n").first { $0.hasPrefix("127.0.0.1:\(fixture.upstreams[index].port) ") }.map(String.init) ?? ""
            }
            let reported = try await eventually(within: .seconds(30)) {
                shown = try await fixture.harness.cli(["model", "show", "pair"]).output
                return line(0).contains("no (ejected)")
            }
            #expect(reported, "\(shown)")
            #expect(line(1).contains(" yes "), "\(shown)")
            // Back on its port: probed healthy, then given requests again.
            try await fixture.restartUpstream(0)
            let healthy = "modelgate_upstream_endpoint_healthy{model=\"pair\",endpoint=\"127.0.0.1:\(fixture.upstreams[0].port)\"} 1"
            let back = try await eventually { try await HTTP.send(.GET, base + "/metrics", key: fixture.operatorKey).body.contains(healthy) }
            #expect(back, "the restarted endpoint is probed healthy")
            for _ in 0..<8 {
                #expect(try await HTTP.send(.POST, base + "/v1/completions", key: fixture.key, json: ["model": "pair", "prompt": "p", "max_tokens": 1]).status == 200)
            }
            #expect(try await fixture.upstreams[0].requests().count > 0)
        }
    }
}

extension UpstreamEndToEndTests {
    @Test func anUpstreamCredentialIsSentRotatedAndShownNowhere() async throws {
        try await FakeUpstreamFixture.with { fixture in
            let base = fixture.server.baseURL
            let first = "sk-first-" + UUID().uuidString.prefix(12).lowercased()
            let second = "sk-second-" + UUID().uuidString.prefix(12).lowercased()
            var shown: [String] = []
            // From stdin (never argv), through the CLI; an alias names the same model.
            let environment = ModelGateProcess.cleanEnvironment(fixture.harness.environment)
            let piped = try await onOwnThread {
                try ChildProcess.run(
                    "/bin/sh", ["-c", "printf '%s\\n' \"$SECRET\" | \"$MODELGATE\" model credential set fleet"],
                    environment: environment.merging(["SECRET": first, "MODELGATE": ModelGateProcess.binaryPath]) { $1 },
                    workingDirectory: fixture.harness.directory)
            }
            #expect(piped.status == 0, "\(piped.output)")
            #expect(piped.output.contains("hmac-sha256:"))
            shown.append(piped.output)
            let empty = try await fixture.harness.cli(["model", "credential", "set", "fleet"])
            #expect(empty.status != 0 && empty.output.contains("no credential given"), "\(empty.output)")
            let native = try await fixture.harness.cli(["model", "credential", "show", "nope"])
            #expect(native.status != 0 && native.output.contains("unknown model 'nope'"), "\(native.output)")
            shown.append(try await fixture.harness.cli(["model", "credential", "show", "fleet"]).output)
            shown.append(try await fixture.harness.cli(["model", "show", "fleet", "--json"]).output)

            func sentCredential() async throws -> String? {
                let response = try await HTTP.send(.POST, base + "/v1/completions", key: fixture.key, json: ["model": "fleet", "prompt": "hi", "max_tokens": 2])
                #expect(response.status == 200, "\(response.body)")
                shown.append(response.body)
                return try await fixture.upstreams[0].requests().last?.headers["authorization"]
            }
            #expect(try await sentCredential() == "Bearer " + first)
            // Replaced through the admin API: used without a restart.
            let put = try await HTTP.send(.PUT, base + "/admin/v1/models/fleet/credential", key: fixture.operatorKey, json: ["credential": second])
            #expect(put.status == 200, "\(put.body)")
            shown.append(put.body)
            let rotated = try await eventually(within: .seconds(20)) { try await sentCredential() == "Bearer " + second }
            #expect(rotated, "the new credential is used without a restart")
            for (method, path, body) in [
                (HTTPMethod.GET, "/admin/v1/models/fleet/credential", nil), (.GET, "/admin/v1/models/fleet", nil), (.GET, "/admin/v1/models", nil),
                (.GET, "/metrics", nil), (.GET, "/admin/v1/audit", nil),
                (.PUT, "/admin/v1/models/shakespeare-nope/credential", ["credential": second]),
                (.PUT, "/admin/v1/models/fleet/credential", ["credential": second + " x"]),
                (.PUT, "/admin/v1/models/fleet/credential", ["credential": second, "extra": 1]),
            ] as [(HTTPMethod, String, [String: Any]?)] {
                let response = try await HTTP.send(method, base + path, key: fixture.operatorKey, json: body)
                #expect(response.status < 500, "\(path): \(response.body)")
                shown.append(response.body)
            }
            // Only an operator key manages credentials.
            #expect(try await HTTP.send(.PUT, base + "/admin/v1/models/fleet/credential", key: fixture.key, json: ["credential": "stolen"]).status == 403)
            shown.append(try await fixture.harness.system.dump())
            shown.append(fixture.server.log)
            for text in shown {
                #expect(!text.contains(first) && !text.contains(second), "a credential leaked: \(text.prefix(400))")
            }
            // Cleared: the upstream gets no Authorization header.
            #expect(try await HTTP.send(.DELETE, base + "/admin/v1/models/fleet/credential", key: fixture.operatorKey).status == 200)
            let cleared = try await eventually(within: .seconds(20)) { try await sentCredential() == nil }
            #expect(cleared)
        }
    }
}

extension UpstreamEndToEndTests {
    /// A gateway in front of an inference node that is itself a ModelGate: the node bills the
    /// gateway's account exactly what the gateway bills its tenant.
    @Test func anotherModelGateServesAsAnUpstream() async throws {
        try await ServerHarness.with { harness in
            let node = try await harness.server(extraEnvironment: [
                "MODELGATE_MODELS_DIRECTORY": TestModels.repository.path + "/models",
                "MODELGATE_METERING_SPOOL_DIRECTORY": harness.directory + "/spool-node",
            ])
            let models = NSTemporaryDirectory() + "modelgate-gateway-models-" + UUID().uuidString.prefix(8)
            try FileManager.default.createDirectory(atPath: models + "/bard", withIntermediateDirectories: true)
            let manifest: [String: Any] = [
                "engine": "upstream", "task": "text-generation", "defaults": ["max_tokens": 8],
                "options": ["endpoints": [node.baseURL], "upstream_model": "shakespeare", "tokenizer": "tokenizer"],
            ]
            try JSONSerialization.data(withJSONObject: manifest).write(to: URL(fileURLWithPath: models + "/bard/model.json"))
            try FileManager.default.createDirectory(atPath: models + "/bard/tokenizer", withIntermediateDirectories: true)
            for file in ["vocab.json", "merges.txt"] {
                try FileManager.default.copyItem(atPath: TestModels.repository.path + "/models/shakespeare/" + file, toPath: models + "/bard/tokenizer/" + file)
            }
            let gateway = try await harness.server(extraEnvironment: ["MODELGATE_MODELS_DIRECTORY": models])
            try await withCleanup({
                await gateway.stopGracefully()
                await node.stopGracefully()
                try? FileManager.default.removeItem(atPath: models)
            }) {
                let system = harness.system
                let customer = try await system.tenants.create(slug: "customer", displayName: "C", actor: .init("test"))
                let account = try await system.tenants.create(slug: "gateway-account", displayName: "G", actor: .init("test"))
                let customerKey = try await system.apiKeys.create(tenant: customer.id, .init(name: "c", scopes: [.inference]), issuer: .operator(.init("test")))
                let accountKey = try await system.apiKeys.create(tenant: account.id, .init(name: "g", scopes: [.inference]), issuer: .operator(.init("test")))
                // Without the node's key, the node refuses the gateway: an error, not a hang.
                let refused = try await HTTP.send(
                    .POST, gateway.baseURL + "/v1/completions", key: customerKey.secret, json: ["model": "bard", "prompt": "ROMEO:"])
                #expect(refused.status == 401, "the node's refusal passes through: \(refused.body)")
                let put = try await HTTP.send(
                    .PUT, gateway.baseURL + "/admin/v1/models/bard/credential", key: harness.operatorKey, json: ["credential": accountKey.secret])
                #expect(put.status == 200)
                for stream in [false, true] {
                    let response = try await HTTP.send(
                        .POST, gateway.baseURL + "/v1/completions", key: customerKey.secret,
                        json: ["model": "bard", "prompt": "ROMEO:", "max_tokens": 6, "stream": stream, "seed": 7])
                    #expect(response.status == 200, "\(response.body)")
                    #expect(!response.body.contains("shakespeare"), "the client sees its own model name")
                }
                func events(_ tenant: UUID) async throws -> [(Int, Int)] {
                    let query = {
                        try await system.pool.query(
                            "SELECT prompt_tokens, completion_tokens FROM usage_events WHERE tenant_id = $1 AND status = 200 ORDER BY occurred_at", [tenant])
                    }
                    _ = try await eventually(within: .seconds(20)) { try await query().count >= 2 }
                    return try await query().map { (try $0.decode("prompt_tokens", as: Int.self), try $0.decode("completion_tokens", as: Int.self)) }
                }
                let billedByNode = try await events(account.id)
                let billedByGateway = try await events(customer.id)
                #expect(billedByNode.count == 2 && billedByNode.allSatisfy { $0.1 == 6 }, "\(billedByNode)")
                #expect(billedByGateway.map(\.0) == billedByNode.map(\.0) && billedByGateway.map(\.1) == billedByNode.map(\.1), "\(billedByGateway) vs \(billedByNode)")
            }
        }
    }
}

/// The JSON objects of a server-sent event body (not `[DONE]`).
func sseObjects(_ body: String) -> [[String: Any]] {
    body.components(separatedBy: "\n\n").compactMap { event in
        guard event.hasPrefix("data: "), !event.hasPrefix("data: [DONE]") else { return nil }
        return (try? JSONSerialization.jsonObject(with: Data(event.dropFirst(6).utf8))) as? [String: Any]
    }
}

/// A fake upstream server process (`Python/fake_upstream.py`).
final class FakeUpstream: UpstreamProcess {
    let process: ChildProcess
    let port: Int

    struct Received {
        var body: [String: Any]
        var headers: [String: String]
    }

    static func start(port: Int) async throws -> FakeUpstream { try await FakeUpstream(port: port) }

    init(port: Int) async throws {
        self.port = port
        let script = TestModels.repository.path + "/Tests/EndToEndTests/Python/fake_upstream.py"
        process = try ChildProcess(
            executable: "/usr/bin/env", arguments: ["python3", script, String(port)],
            outputPath: NSTemporaryDirectory() + "modelgate-fake-upstream-\(port).log")
        let listening = await eventually { (try? await HTTP.send(.GET, "http://127.0.0.1:\(port)/log").status) == 200 }
        guard listening else { throw HarnessError("the fake upstream did not start:\n\(process.output)") }
    }

    func log() async throws -> [String: Any] { try await HTTP.send(.GET, "http://127.0.0.1:\(port)/log").json }

    func requests() async throws -> [Received] {
        (try await log()["requests"] as? [[String: Any]] ?? []).map {
            Received(body: $0["body"] as? [String: Any] ?? [:], headers: $0["headers"] as? [String: String] ?? [:])
        }
    }

    func stop() async {
        process.signal(SIGKILL)
        _ = try? await onOwnThread { [process] in process.wait() }
    }
}

/// A server of upstream models (`with`'s `manifests`, given the upstreams' base URLs) in front
/// of `Upstream` processes, and a tenant with a key.
final class UpstreamFixture<Upstream: UpstreamProcess>: Sendable {
    let harness: ServerHarness
    let server: ModelGateProcess
    let models: String
    let tenant: Tenant
    let key: String
    let upstreamsBox: Mutex<[Upstream]>

    var upstreams: [Upstream] { upstreamsBox.withLock { $0 } }
    var operatorKey: String { harness.operatorKey }

    init(harness: ServerHarness, server: ModelGateProcess, models: String, tenant: Tenant, key: String, upstreams: [Upstream]) {
        self.harness = harness
        self.server = server
        self.models = models
        self.tenant = tenant
        self.key = key
        self.upstreamsBox = Mutex(upstreams)
    }

    /// Starts `count` upstreams, then a server whose model directory holds `manifests` (and
    /// whatever `prepare` adds to it), for a tenant on a plan with `limits`.
    static func with(
        upstreams count: Int, limits: LimitSettings, manifests: ([String]) -> [String: [String: Any]],
        prepare: (String) throws -> Void = { _ in }, _ body: (UpstreamFixture) async throws -> Void
    ) async throws {
        var upstreams: [Upstream] = []
        let harness: ServerHarness
        do {
            for _ in 0..<count { upstreams.append(try await Upstream.start(port: try FreePort.find())) }
            harness = try await ServerHarness.start()
        } catch {
            for upstream in upstreams { await upstream.stop() }
            throw error
        }
        let models = NSTemporaryDirectory() + "modelgate-upstream-models-" + UUID().uuidString.prefix(8)
        do {
            for (name, manifest) in manifests(upstreams.map { "http://127.0.0.1:\($0.port)" }) {
                try FileManager.default.createDirectory(atPath: models + "/" + name, withIntermediateDirectories: true)
                try JSONSerialization.data(withJSONObject: manifest).write(to: URL(fileURLWithPath: models + "/" + name + "/model.json"))
            }
            try prepare(models)
            _ = try await LimitService(pool: harness.system.pool).setPlan("upstream-test", displayName: nil, limits: limits, actor: .init("test"))
            let tenant = try await harness.system.tenants.create(
                slug: "up-\(UUID().uuidString.prefix(6).lowercased())", displayName: "U", plan: "upstream-test", actor: .init("test"))
            let key = try await harness.system.apiKeys.create(
                tenant: tenant.id, .init(name: "u", scopes: [.inference, .usageRead]), issuer: .operator(.init("test")))
            let server = try await harness.server(extraEnvironment: ["MODELGATE_MODELS_DIRECTORY": models])
            let fixture = UpstreamFixture(harness: harness, server: server, models: models, tenant: tenant, key: key.secret, upstreams: upstreams)
            try await withCleanup({ await fixture.stop() }) { try await body(fixture) }
        } catch {
            for upstream in upstreams { await upstream.stop() }
            try? FileManager.default.removeItem(atPath: models)
            await harness.stop()
            throw error
        }
    }

    /// Kills upstream `index` (SIGKILL).
    func killUpstream(_ index: Int) async { await upstreams[index].stop() }

    /// Starts upstream `index` again on its port.
    func restartUpstream(_ index: Int) async throws {
        let old = upstreams[index]
        await old.stop()
        let replacement = try await Upstream.start(port: old.port)
        upstreamsBox.withLock { $0[index] = replacement }
    }

    /// The tenant's usage events, oldest first, once there are `count` of them.
    func events(count: Int) async throws -> PostgresRows {
        let query = { try await self.harness.system.pool.query("SELECT * FROM usage_events WHERE tenant_id = $1 ORDER BY occurred_at", [self.tenant.id]) }
        let settled = try await eventually(within: .seconds(20)) { try await query().count >= count }
        let rows = try await query()
        guard settled else { throw HarnessError("\(rows.count) usage events, expected \(count)") }
        return rows
    }

    func stop() async {
        await server.stopGracefully()
        for upstream in upstreams { await upstream.stop() }
        try? FileManager.default.removeItem(atPath: models)
        await harness.stop()
    }
}

/// An upstream server process the tests start and kill.
protocol UpstreamProcess: Sendable {
    var port: Int { get }
    static func start(port: Int) async throws -> Self
    func stop() async
}

/// The fake upstream's models: `fleet` (completions and chat), `fleet-embed`, `faulty` (short
/// timeouts, never ejected), `counted` (with a tokenizer) and, with two upstreams, `pair`.
typealias FakeUpstreamFixture = UpstreamFixture<FakeUpstream>

extension UpstreamFixture where Upstream == FakeUpstream {
    static func with(upstreamCount: Int = 1, monthlyTokens: Int? = nil, _ body: (UpstreamFixture) async throws -> Void) async throws {
        let limits = LimitSettings(requestsPerMinute: 100_000, tokensPerMinute: 100_000_000, maxConcurrent: 1000, monthlyTokens: monthlyTokens)
        try await with(upstreams: upstreamCount, limits: limits, manifests: { endpoints in
            let first = endpoints[0]
            var manifests: [String: [String: Any]] = [
                "fleet": [
                    "engine": "upstream", "task": "text-generation", "defaults": ["max_tokens": 5],
                    "options": ["endpoints": [first], "upstream_model": "fake-model", "eject_after_failures": 1000],
                ],
                "fleet-embed": ["engine": "upstream", "task": "embeddings", "options": ["endpoints": [first + "/v1"], "upstream_model": "fake-embed"]],
                "faulty": [
                    "engine": "upstream", "task": "text-generation",
                    "options": [
                        "endpoints": [first], "first_byte_timeout": 2, "request_timeout": 6, "max_response_bytes": 1 << 20, "eject_after_failures": 1000,
                    ],
                ],
                "counted": ["engine": "upstream", "task": "text-generation", "options": ["endpoints": [first], "tokenizer": "tokenizer"]],
            ]
            if endpoints.count > 1 {
                manifests["pair"] = [
                    "engine": "upstream", "task": "text-generation",
                    "options": [
                        "endpoints": endpoints, "eject_after_failures": 1, "eject_seconds": 1, "health_interval": 0.5, "retries": 2, "connect_timeout": 2,
                    ],
                ]
            }
            return manifests
        }, prepare: { models in
            // The demo model's vocabulary counts the tokens of `counted`.
            try FileManager.default.createDirectory(atPath: models + "/counted/tokenizer", withIntermediateDirectories: true)
            for file in ["vocab.json", "merges.txt"] {
                try FileManager.default.copyItem(atPath: TestModels.repository.path + "/models/shakespeare/" + file, toPath: models + "/counted/tokenizer/" + file)
            }
        }, body)
    }
}
