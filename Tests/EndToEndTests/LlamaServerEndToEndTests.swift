import Foundation
import Metering
import Postgres
import Synchronization
import Testing
import TestSupport

/// Upstream models served by real llama.cpp `llama-server` processes (built from the pinned
/// llama-cpp-python sdist by scripts/llama-cpp; `scripts/test` builds it beside the Swift
/// build), each serving the demo model written as GGUF: completions, chat, streams with usage
/// and embeddings billed exactly as the upstream counted them, the quota holding, and fail-over
/// between two servers under load when one is killed.
@Suite(
    .enabled(
        if: LlamaServer.binDirectory != nil,
        "llama-server is not built: run scripts/llama-cpp llama-server (scripts/test builds it; when that fails it names the build log)"))
struct LlamaServerEndToEndTests {
    static let quota = 400

    /// `llama` (completions and chat) and `llama-embed` on the given llama-servers.
    static func manifests(_ endpoints: [String]) -> [String: [String: Any]] {
        [
            "llama": [
                "engine": "upstream", "task": "text-generation", "defaults": ["max_tokens": 8], "aliases": ["text-davinci-002"],
                "options": [
                    // Three failures in a row eject (a killed server refuses at once); one slow
                    // answer of the live server on a loaded machine must not (a loaded CI run
                    // ejected both with 1 and a 2 s connect timeout, and answered 503).
                    "endpoints": endpoints, "eject_after_failures": 3, "eject_seconds": 1, "health_interval": 0.5, "retries": 2,
                    "connect_timeout": 10,
                    // The demo vocabulary has no chat markers: the default template's spell out.
                    "message_overhead_tokens": 32,
                ],
            ],
            "llama-embed": ["engine": "upstream", "task": "embeddings", "options": ["endpoints": endpoints]],
        ]
    }

    @Test func aRealLlamaServerIsServedWithItsOwnUsageBilledAndTheQuotaHeld() async throws {
        let limits = LimitSettings(requestsPerMinute: 100_000, tokensPerMinute: 100_000_000, maxConcurrent: 1000, monthlyTokens: Self.quota)
        try await UpstreamFixture<LlamaServer>.with(upstreams: 1, limits: limits, manifests: Self.manifests) { fixture in
            let base = fixture.server.baseURL
            var usages: [(Int, Int)] = []
            func usage(_ object: [String: Any]) -> (Int, Int) {
                let usage = object["usage"] as? [String: Any] ?? [:]
                return (usage["prompt_tokens"] as? Int ?? -1, usage["completion_tokens"] as? Int ?? -1)
            }
            let completion = try await HTTP.send(
                .POST, base + "/v1/completions", key: fixture.key, json: ["model": "text-davinci-002", "prompt": "ROMEO:", "max_tokens": 8])
            #expect(completion.status == 200, "\(completion.body)")
            #expect(completion.json["model"] as? String == "text-davinci-002")
            #expect(((completion.json["choices"] as? [[String: Any]])?.first?["text"] as? String ?? "").isEmpty == false)
            usages.append(usage(completion.json))
            #expect(usages[0].1 == 8)

            let chat = try await HTTP.send(
                .POST, base + "/v1/chat/completions", key: fixture.key,
                json: ["model": "llama", "messages": [["role": "user", "content": "Speak, Juliet."]], "max_tokens": 6])
            #expect(chat.status == 200, "\(chat.body)")
            #expect((chat.json["choices"] as? [[String: Any]])?.first?["message"] != nil)
            usages.append(usage(chat.json))

            let stream = try await HTTP.send(
                .POST, base + "/v1/completions", key: fixture.key,
                json: ["model": "llama", "prompt": "JULIET:", "max_tokens": 5, "stream": true, "stream_options": ["include_usage": true]])
            #expect(stream.status == 200)
            let chunks = sseObjects(stream.body)
            #expect(stream.body.hasSuffix("data: [DONE]\n\n"), "\(stream.body.suffix(200))")
            let reported = try #require(chunks.last { $0["usage"] != nil }, "the upstream's usage is passed on when asked for")
            usages.append(usage(reported))
            #expect(chunks.allSatisfy { $0["model"] as? String == "llama" })

            let embeddings = try await HTTP.send(.POST, base + "/v1/embeddings", key: fixture.key, json: ["model": "llama-embed", "input": ["hi there", "b"]])
            #expect(embeddings.status == 200, "\(embeddings.body)")
            let vectors = (embeddings.json["data"] as? [[String: Any]])?.compactMap { $0["embedding"] as? [Double] } ?? []
            #expect(vectors.count == 2 && vectors.allSatisfy { $0.count == 128 })
            usages.append((usage(embeddings.json).0, 0))

            // Each usage event is the upstream's own count.
            let events = try await fixture.events(count: 4)
            for (event, expected) in zip(events, usages) {
                let billed = (try event.decode("prompt_tokens", as: Int.self), try event.decode("completion_tokens", as: Int.self))
                #expect(billed == expected, "billed \(billed), the upstream counted \(expected)")
                #expect(try event.decode("usage_source", as: String?.self) == "upstream")
            }
            #expect(try events[0].decode("model", as: String.self) == "llama", "usage is under the model's own name")

            // Until the monthly quota refuses: never past it.
            var refused = false
            for _ in 0..<100 where !refused {
                let next = try await HTTP.send(.POST, base + "/v1/completions", key: fixture.key, json: ["model": "llama", "prompt": "KING:", "max_tokens": 24])
                #expect(next.status == 200 || next.status == 429, "\(next.body)")
                refused = next.status == 429
                if refused { #expect(next.errorCode == "insufficient_quota", "\(next.body)") }
            }
            #expect(refused)
            let total = try await fixture.harness.system.pool.query(
                "SELECT sum(prompt_tokens + completion_tokens)::bigint AS n FROM usage_events WHERE tenant_id = $1", [fixture.tenant.id])
            #expect(try total[0].decode("n", as: Int.self) <= Self.quota)

            // A tenant allowed 3 requests a minute gets 3, then 429 with the rate-limit headers.
            let system = fixture.harness.system
            let tenant = try await system.tenants.create(slug: "llama-rate", displayName: "R", actor: .init("test"))
            try await LimitService(pool: system.pool).setTenantOverrides(tenant.id, LimitSettings(requestsPerMinute: 3), actor: .init("test"))
            let key = try await system.apiKeys.create(tenant: tenant.id, .init(name: "r", scopes: [.inference]), issuer: .operator(.init("test")))
            var statuses: [Int] = []
            for _ in 0..<5 {
                let response = try await HTTP.send(.POST, base + "/v1/completions", key: key.secret, json: ["model": "llama", "prompt": "KING:", "max_tokens": 2])
                statuses.append(response.status)
                if response.status == 429 {
                    #expect(response.errorCode == "rate_limit_exceeded" && response.headers.first(name: "x-ratelimit-limit-requests") != nil, "\(response.body)")
                }
            }
            #expect(statuses == [200, 200, 200, 429, 429])
            let rateEvents = try await system.pool.query("SELECT count(*)::bigint AS n FROM usage_events WHERE tenant_id = $1", [tenant.id])
            #expect(try rateEvents[0].decode("n", as: Int.self) == 3, "only answered requests are metered")
        }
    }

    @Test func sixteenClientsFailOverWhenOneOfTwoServersIsKilledAndItGetsTrafficAgainAfterARestart() async throws {
        let limits = LimitSettings(requestsPerMinute: 100_000, tokensPerMinute: 100_000_000, maxConcurrent: 1000, monthlyTokens: nil)
        try await UpstreamFixture<LlamaServer>.with(upstreams: 2, limits: limits, manifests: Self.manifests) { fixture in
            let base = fixture.server.baseURL
            let progress = LoadProgress()
            // 16 clients, 8 requests each, every other one a long stream; the first endpoint is
            // killed once 24 requests have finished (while it serves some: which streams it
            // cuts is up to the moment).
            let results = try await withThrowingTaskGroup(of: [Outcome].self) { group in
                for client in 0..<16 {
                    group.addTask {
                        var outcomes: [Outcome] = []
                        for request in 0..<8 {
                            let stream = (client + request) % 2 == 0
                            let response = try await HTTP.send(
                                .POST, base + "/v1/completions", key: fixture.key,
                                json: ["model": "llama", "prompt": "CLIENT \(client):", "max_tokens": stream ? 100 : 24, "stream": stream],
                                timeout: .seconds(60))
                            outcomes.append(Outcome(
                                stream: stream, status: response.status, body: response.body,
                                requestID: response.headers.first(name: "x-request-id") ?? ""))
                            if progress.finished.add(1, ordering: .relaxed).newValue == 24 {
                                await fixture.killUpstream(0)
                                progress.killed.store(true, ordering: .releasing)
                            }
                        }
                        return outcomes
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            #expect(results.count == 128)
            let wasKilled = progress.killed.load(ordering: .acquiring)
            #expect(wasKilled)
            // Whole answers: every one succeeded (retried on the other server when its first
            // one died). Streams: complete, or cut mid-stream by the kill and ended with an
            // error event, billed exactly the chunks the client received.
            var cut = 0
            for outcome in results {
                #expect(outcome.status == 200, "\(outcome.body.prefix(300))")
                guard outcome.stream else { continue }
                if outcome.body.hasSuffix("data: [DONE]\n\n") { continue }
                cut += 1
                #expect(outcome.body.contains("\"error\""), "a broken stream ends with an error event: \(outcome.body.suffix(300))")
                let received = sseObjects(outcome.body).filter { !Self.text($0).isEmpty }.count
                let rows = try await fixture.harness.system.pool.query("SELECT completion_tokens FROM usage_events WHERE request_id = $1", [outcome.requestID])
                #expect(try rows.first?.decode("completion_tokens", as: Int.self) == received, "billed what the client received")
            }
            let events = try await fixture.events(count: 128)
            #expect(events.count == 128, "one usage event per request")
            // Restarted on its port: probed healthy, then given requests again.
            let port = fixture.upstreams[0].port
            try await fixture.restartUpstream(0)
            let restartedAt = ContinuousClock.now
            let healthy = "modelgate_upstream_endpoint_healthy{model=\"llama\",endpoint=\"127.0.0.1:\(port)\"} 1"
            #expect(try await eventually(within: .seconds(60)) { try await HTTP.send(.GET, base + "/metrics").body.contains(healthy) })
            let probedAfter = ContinuousClock.now - restartedAt
            let served = try await eventually(within: .seconds(60)) {
                _ = try await HTTP.send(.POST, base + "/v1/completions", key: fixture.key, json: ["model": "llama", "prompt": "again", "max_tokens": 2])
                return try await fixture.upstreams[0].requestsProcessed() > 0
            }
            #expect(served, "the restarted server receives traffic again")
            print("llama-server fail-over: \(cut) of 64 streams cut by the kill; the restarted server was probed healthy \(probedAfter) after its restart")
        }
    }

    struct Outcome: Sendable {
        var stream: Bool
        var status: Int
        var body: String
        var requestID: String
    }

    final class LoadProgress: Sendable {
        let finished = Atomic<Int>(0)
        let killed = Atomic<Bool>(false)
    }

    static func text(_ chunk: [String: Any]) -> String {
        ((chunk["choices"] as? [[String: Any]])?.first?["text"] as? String) ?? ""
    }
}

/// A real llama.cpp `llama-server` on the demo model (as GGUF), with embeddings (mean pooling).
final class LlamaServer: UpstreamProcess {
    let process: ChildProcess
    let port: Int

    /// Where scripts/llama-cpp put `llama-server` (`MODELGATE_LLAMA_BIN`, else its default cache).
    static let binDirectory: String? = {
        let environment = ProcessInfo.processInfo.environment
        guard environment["MODELGATE_LLAMA_SKIP_REASON"] == nil else { return nil }
        let candidates = [environment["MODELGATE_LLAMA_BIN"], "/var/tmp/modelgate-llama/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin"]
        return candidates.compactMap { $0 }.first { FileManager.default.isExecutableFile(atPath: $0 + "/llama-server") }
    }()

    /// The demo model as a GGUF file, written once per test run with bench/gguf_gpt2.py.
    static let gguf: Result<String, HarnessError> = {
        guard let binDirectory else { return .failure(HarnessError("llama-server is not built")) }
        let path = NSTemporaryDirectory() + "modelgate-demo-\(getpid()).gguf"
        let models = TestModels.repository.path + "/models/shakespeare"
        do {
            let (status, output) = try ChildProcess.run(
                binDirectory + "/python-gguf", [TestModels.repository.path + "/bench/gguf_gpt2.py", models, models, path])
            return status == 0 ? .success(path) : .failure(HarnessError("writing the demo GGUF failed: \(output)"))
        } catch {
            return .failure(HarnessError("writing the demo GGUF failed: \(error)"))
        }
    }()

    static func start(port: Int) async throws -> LlamaServer {
        let model = try await onOwnThread { try LlamaServer.gguf.get() }
        let server = try LlamaServer(port: port, model: model)
        let ready = await eventually(within: .seconds(60)) { (try? await HTTP.send(.GET, "http://127.0.0.1:\(port)/health").status) == 200 }
        guard ready else {
            await server.stop()
            throw HarnessError("llama-server did not become ready:\n\(server.process.output.suffix(2000))")
        }
        return server
    }

    private init(port: Int, model: String) throws {
        self.port = port
        // Four slots of 128 positions (the demo model's context), one thread each.
        process = try ChildProcess(
            executable: (Self.binDirectory ?? "") + "/llama-server",
            arguments: [
                "-m", model, "--host", "127.0.0.1", "--port", String(port), "-c", "512", "-np", "4", "-t", "1", "--embeddings", "--pooling", "mean",
                "--metrics",
            ],
            outputPath: NSTemporaryDirectory() + "modelgate-llama-server-\(port).log")
    }

    /// Requests this server has answered (its own `/metrics`).
    func requestsProcessed() async throws -> Int {
        let metrics = try await HTTP.send(.GET, "http://127.0.0.1:\(port)/metrics").body
        let line = metrics.split(separator: "\n").first { $0.hasPrefix("llamacpp:n_decode_total ") || $0.hasPrefix("llamacpp:prompt_tokens_total ") }
        return line.flatMap { Double($0.split(separator: " ").last ?? "") }.map { Int($0) } ?? 0
    }

    func stop() async {
        process.signal(SIGKILL)
        _ = try? await onOwnThread { [process] in process.wait() }
    }
}
