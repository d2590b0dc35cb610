import Foundation
import Testing
import TestSupport

/// Shutdown as a load balancer sees it: not ready first, then drained, then gone.
@Suite struct LifecycleEndToEndTests {
    @Test func onSIGTERMReadinessFailsFirstThenRequestsDrainAndUsageIsSettled() async throws {
        let fixture = try await GatewayFixture.start(extraEnvironment: ["MODELGATE_SERVER_DRAINDELAYMS": "1500"])
        defer { Task { await fixture.stop() } }
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

    @Test func aSecondSIGTERMExitsAtOnce() async throws {
        let fixture = try await GatewayFixture.start(extraEnvironment: ["MODELGATE_SERVER_DRAINDELAYMS": "60000"])
        defer { Task { await fixture.stop() } }
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
