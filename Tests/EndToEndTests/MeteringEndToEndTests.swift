import Foundation
import Metering
import Postgres
import Tenancy
import TestSupport
import Testing

/// Metering through the real binary: a process killed between inference and settlement, the
/// request id that bills, and reports read back with Python's standard csv and json modules.
@Suite struct MeteringEndToEndTests {
    @Test func aProcessKilledBetweenInferenceAndSettlementLosesNoEventAndDoublesNone() async throws {
        // The fault hook makes the server SIGKILL itself after the engine ran and the usage
        // event reached the spool, before the database settlement and before the response.
        let fixture = try await GatewayFixture.start(extraEnvironment: ["MODELGATE_FAULT_CRASH_BEFORE_SETTLEMENT": "1"])
        try await withCleanup({ await fixture.stop() }) {
            let crashed = try? await HTTP.send(
                .POST, fixture.server.baseURL + "/v1/completions", key: fixture.keyA,
                json: ["model": "shakespeare", "prompt": "KING:", "max_tokens": 5, "temperature": 0])
            #expect(crashed == nil || crashed?.status != 200, "the client must not see a response")
            let exit = await fixture.server.waitForExit(timeout: .seconds(30))
            #expect(exit == 128 + SIGKILL, "serve should have been killed by the fault hook (exit \(String(describing: exit)))")
            #expect(try await fixture.events(fixture.tenantA).isEmpty)
            let pool = fixture.harness.system.pool
            let reserved = try await pool.query("SELECT count(*) AS n FROM quota_reservations WHERE tenant_id = $1", [fixture.tenantA.id])
            #expect(try reserved[0].decode("n", as: Int.self) == 1)

            // Restart on the same spool: the event is settled once, the reservation released.
            for _ in 0..<2 {
                let restarted = try await fixture.harness.server(extraEnvironment: ["MODELGATE_MODELS_DIRECTORY": fixture.models])
                var events = try await fixture.events(fixture.tenantA)
                let deadline = ContinuousClock.now + .seconds(10)  // the spool is replayed in the background
                while events.isEmpty, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(50))
                    events = try await fixture.events(fixture.tenantA)
                }
                #expect(events.count == 1)
                #expect(try events.first?.decode("completion_tokens", as: Int.self) == 5)
                #expect(try events.first?.decode("status", as: Int.self) == 200)
                let left = try await pool.query("SELECT count(*) AS n FROM quota_reservations WHERE tenant_id = $1", [fixture.tenantA.id])
                #expect(try left[0].decode("n", as: Int.self) == 0)
                let rollup = try await pool.query("SELECT coalesce(sum(requests), 0)::bigint AS n FROM usage_rollups WHERE tenant_id = $1", [fixture.tenantA.id])
                #expect(try rollup[0].decode("n", as: Int.self) == 1)
                await restarted.stopGracefully()
            }
        }
    }

    @Test func aClientCannotChooseTheRequestIdThatBills() async throws {
        let fixture = try await GatewayFixture.start()
        try await withCleanup({ await fixture.stop() }) {
            var ids: Set<String> = []
            for _ in 0..<2 {
                let response = try await HTTP.send(
                    .POST, fixture.server.baseURL + "/v1/completions", key: fixture.keyA,
                    json: ["model": "shakespeare", "prompt": "KING:", "max_tokens": 2],
                    headers: [("x-request-id", "same-every-time"), ("x-client-request-id", "mine-1")])
                #expect(response.status == 200)
                #expect(response.headers.first(name: "x-client-request-id") == "mine-1")
                ids.insert(response.headers.first(name: "x-request-id") ?? "")
            }
            #expect(ids.count == 2)
            #expect(!ids.contains("same-every-time"))
            #expect(try await fixture.events(fixture.tenantA).count == 2)
        }
    }

    @Test func csvAndJSONReportsParseWithPythonAndTotalsMatchTheEvents() async throws {
        let fixture = try await GatewayFixture.start()
        try await withCleanup({ await fixture.stop() }) {
            let slug = fixture.tenantA.slug
            // Prices that do not divide evenly: every event's cost is rounded on its own.
            for (metric, price) in [("prompt_tokens", 1_234_567), ("completion_tokens", 7_654_321)] {
                let set = try await fixture.harness.cli(["price", "set", "--model", "shakespeare", "--metric", metric, "--price", String(price)])
                #expect(set.status == 0, "\(set.output)")
            }
            try await Task.sleep(for: .milliseconds(20))
            for (index, prompt) in ["KING:", "ROMEO: What light", "A", "JULIET:\nO Romeo, Romeo"].enumerated() {
                let response = try await HTTP.send(
                    .POST, fixture.server.baseURL + "/v1/completions", key: fixture.keyA,
                    json: ["model": "shakespeare", "prompt": prompt, "max_tokens": 3 + index * 4, "temperature": 0])
                #expect(response.status == 200, "\(response.body)")
            }

            let totals = try await fixture.harness.system.pool.query(
                """
                SELECT count(*)::bigint AS requests, sum(prompt_tokens)::bigint AS prompt, sum(completion_tokens)::bigint AS completion,
                       sum(cost_micros)::bigint AS cost, to_char(min(occurred_at), 'YYYY-MM') AS month
                FROM usage_events WHERE tenant_id = $1
                """, [fixture.tenantA.id])
            let expected = [
                try totals[0].decode("requests", as: Int.self), try totals[0].decode("prompt", as: Int.self),
                try totals[0].decode("completion", as: Int.self), try totals[0].decode("cost", as: Int.self),
            ]
            #expect(expected[0] >= 4 && expected[3] > 0)
            let month: String = try totals[0].decode("month")

            var outputs: [String: String] = [:]
            for (name, arguments) in [
                ("usage.csv", ["usage", "report", "--tenant", slug, "--from", "2000-01-01", "--group-by", "model", "--format", "csv"]),
                ("usage.json", ["usage", "report", "--tenant", slug, "--from", "2000-01-01", "--group-by", "day", "--format", "json"]),
                ("invoice.csv", ["billing", "invoice", "--tenant", slug, "--month", month, "--format", "csv"]),
                ("invoice.json", ["billing", "invoice", "--tenant", slug, "--month", month, "--format", "json"]),
            ] {
                let result = try await fixture.harness.cli(arguments)
                #expect(result.status == 0, "\(arguments): \(result.output)")
                let path = fixture.harness.directory + "/" + name
                try result.output.write(toFile: path, atomically: true, encoding: .utf8)
                outputs[name] = path
            }
            // Python's csv and json modules read the files and print the totals they find.
            let script = """
                import csv, json, sys
                paths = dict(a.split("=", 1) for a in sys.argv[1:])
                rows = list(csv.DictReader(open(paths["usage.csv"], newline="")))
                usage_csv = [sum(int(r[c]) for r in rows) for c in ("requests", "prompt_tokens", "completion_tokens", "cost_micros")]
                days = json.load(open(paths["usage.json"]))
                usage_json = [sum(int(r[c]) for r in days) for c in ("requests", "prompt_tokens", "completion_tokens", "cost_micros")]
                lines = list(csv.DictReader(open(paths["invoice.csv"], newline="")))
                items = [l for l in lines if l["model"] != "subtotal"]
                subtotal = int([l for l in lines if l["model"] == "subtotal"][0]["amount_micros"])
                assert sum(int(l["amount_micros"]) for l in items) == subtotal, "invoice lines do not add up"
                invoice = json.load(open(paths["invoice.json"]))
                assert sum(l["amount_micros"] for l in invoice["lines"]) == invoice["subtotal_micros"]
                assert invoice["subtotal_micros"] == subtotal
                prompt = sum(int(l["quantity"]) for l in items if l["metric"] == "prompt_tokens")
                completion = sum(int(l["quantity"]) for l in items if l["metric"] == "completion_tokens")
                print(json.dumps({"usage_csv": usage_csv, "usage_json": usage_json, "invoice": [prompt, completion, subtotal]}))
                """
            let arguments = ["-c", script] + outputs.map { "\($0.key)=\($0.value)" }
            let (status, output) = try await onOwnThread { try ChildProcess.run("/usr/bin/env", ["python3"] + arguments) }
            try #require(status == 0, "\(output)")
            let parsed = try #require(JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: [Int]])
            #expect(parsed["usage_csv"] == expected)
            #expect(parsed["usage_json"] == expected)
            #expect(parsed["invoice"] == Array(expected[1...3]), "the invoice of \(month) should cover all events")
        }
    }
}
