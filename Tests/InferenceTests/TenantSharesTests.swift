import Foundation
import Inference
import Testing

@Suite struct TenantSharesTests {
    /// Polls until `condition` holds (at most 10 s): waiters park on another task.
    func eventually(_ condition: () -> Bool) async {
        let deadline = ContinuousClock.now + .seconds(10)
        while !condition(), ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(2)) }
    }

    /// A task waiting for a permit, and the permit once granted.
    final class Pending: Sendable {
        let task: Task<TenantShares.Permit, any Error>
        init(_ shares: TenantShares, _ key: String) { task = Task { try await shares.acquire(key: key) } }
    }

    @Test func aTenantAloneIsNotCapped() async throws {
        let shares = TenantShares(slots: 4, capacity: 8)
        var permits: [TenantShares.Permit] = []
        for _ in 0..<10 { permits.append(try await shares.acquire(key: "a")) }
        #expect(shares.snapshot.inFlight == ["a": 10])
        permits.removeAll()
        #expect(shares.snapshot.inFlight.isEmpty)
    }

    @Test func aLightTenantCapsTheFloodAndIsServedAtOnce() async throws {
        let shares = TenantShares(slots: 4, capacity: 8, rest: 0)
        var flood = [try await shares.acquire(key: "a"), try await shares.acquire(key: "a"), try await shares.acquire(key: "a")]
        // b is under its share: it never waits, however much a has in flight.
        let quiet = try await shares.acquire(key: "b")
        // a (3 in flight) is over 4 / (2 tenants + 1 kept free) = 1 while b is light: it waits.
        let next = Pending(shares, "a")
        await eventually { shares.snapshot.waiting == 1 }
        #expect(shares.snapshot.waiting == 1)
        flood.removeLast()
        flood.removeLast()
        try await Task.sleep(for: .milliseconds(20))
        #expect(shares.snapshot.inFlight == ["a": 1, "b": 1])
        #expect(shares.snapshot.waiting == 1)
        flood.removeLast()
        let granted = try await next.task.value
        #expect(shares.snapshot.inFlight == ["a": 1, "b": 1])
        #expect(shares.snapshot.waiting == 0)
        withExtendedLifetime((granted, quiet)) {}
    }

    @Test func tenantsThatBothFloodSplitTheSlotsEvenly() async throws {
        let shares = TenantShares(slots: 4, capacity: 8)
        var held = [try await shares.acquire(key: "a"), try await shares.acquire(key: "a")]
        held.append(try await shares.acquire(key: "b"))
        held.append(try await shares.acquire(key: "b"))
        // Both at 2 = 4 / 2: neither is light, nothing is kept free, and a third waits.
        let a = Pending(shares, "a")
        let b = Pending(shares, "b")
        await eventually { shares.snapshot.waiting == 2 }
        #expect(shares.snapshot.inFlight == ["a": 2, "b": 2])
        #expect(shares.snapshot.waiting == 2)
        // A released slot of a goes to a's waiter, not b's (b is at its share), without a
        // rest: no tenant is light.
        held.remove(at: 0)
        #expect(shares.snapshot.resting == 0)
        let grantedA = try await a.task.value
        #expect(shares.snapshot.inFlight == ["a": 2, "b": 2])
        #expect(shares.snapshot.waiting == 1)
        held.removeAll()
        let grantedB = try await b.task.value
        withExtendedLifetime((grantedA, grantedB)) {}
    }

    @Test func aFullWaitingRoomRefusesTheFloodNotTheOthers() async throws {
        let shares = TenantShares(slots: 2, capacity: 2)
        let held = [try await shares.acquire(key: "a"), try await shares.acquire(key: "b"), try await shares.acquire(key: "c")]
        // Three tenants on two slots: each may hold one; a's next two wait and fill the room.
        let first = Pending(shares, "a")
        await eventually { shares.snapshot.waiting == 1 }
        let second = Pending(shares, "a")
        await eventually { shares.snapshot.waiting == 2 }
        // a's third is refused outright.
        await #expect(throws: GenerationError.self) { _ = try await shares.acquire(key: "a") }
        // b's waiter takes the room of a's newest waiter, which is refused.
        let quiet = Pending(shares, "b")
        await #expect(throws: GenerationError.self) { _ = try await second.task.value }
        #expect(shares.snapshot.waiting == 2)
        withExtendedLifetime(held) {}
        first.task.cancel()
        quiet.task.cancel()
        await #expect(throws: CancellationError.self) { _ = try await first.task.value }
        await #expect(throws: CancellationError.self) { _ = try await quiet.task.value }
    }

    @Test func aCancelledWaiterLeavesTheRoom() async throws {
        let shares = TenantShares(slots: 2, capacity: 4)
        let held = [try await shares.acquire(key: "a"), try await shares.acquire(key: "b")]
        let waiter = Pending(shares, "a")
        await eventually { shares.snapshot.waiting == 1 }
        waiter.task.cancel()
        await #expect(throws: CancellationError.self) { _ = try await waiter.task.value }
        #expect(shares.snapshot.waiting == 0)
        #expect(shares.snapshot.inFlight == ["a": 1, "b": 1])
        withExtendedLifetime(held) {}
    }

    @Test func theCapLiftsOnceTheOtherTenantIsGoneForTheWindow() async throws {
        let shares = TenantShares(slots: 4, capacity: 8, window: .seconds(1), rest: 0)
        var flood: [TenantShares.Permit] = []
        for _ in 0..<3 { flood.append(try await shares.acquire(key: "a")) }
        var quiet = [try await shares.acquire(key: "b")]
        let capped = Pending(shares, "a")
        await eventually { shares.snapshot.waiting == 1 }
        // b leaves. Within the window a stays capped at one: releasing one of its three does
        // not let its waiter in.
        quiet.removeAll()
        flood.removeLast()
        try await Task.sleep(for: .milliseconds(20))
        #expect(shares.snapshot.waiting == 1)
        #expect(shares.snapshot.inFlight == ["a": 2])
        // Once b has been gone for the window, a is alone and uncapped: its next release lets
        // the waiter in although a still has one in flight.
        try await Task.sleep(for: .milliseconds(1300))
        flood.removeLast()
        let granted = try await capped.task.value
        #expect(shares.snapshot.inFlight == ["a": 2])
        withExtendedLifetime((flood, granted, quiet)) {}
    }

    @Test func aFloodingTenantsSlotRestsWhileAnotherIsLight() async throws {
        let shares = TenantShares(slots: 4, capacity: 8, rest: 1)
        var flood = [try await shares.acquire(key: "a")]
        let quiet = try await shares.acquire(key: "b")
        // a is at 4 / (2 + 1) = 1 while b is light: its next request waits.
        let next = Pending(shares, "a")
        await eventually { shares.snapshot.waiting == 1 }
        try await Task.sleep(for: .milliseconds(300))
        // a's request held its slot at least 300 ms, so the slot rests at least as long.
        let released = ContinuousClock.now
        flood.removeAll()
        #expect(shares.snapshot.resting == 1)
        #expect(shares.snapshot.inFlight == ["a": 1, "b": 1])
        #expect(shares.snapshot.waiting == 1)
        let granted = try await next.task.value
        #expect(ContinuousClock.now - released >= .milliseconds(300))
        #expect(shares.snapshot.resting == 0)
        #expect(shares.snapshot.inFlight == ["a": 1, "b": 1])
        withExtendedLifetime((granted, quiet)) {}
    }

    @Test func aLightTenantWithNothingInFlightCostsTheFloodNoRest() async throws {
        let shares = TenantShares(slots: 4, capacity: 8, rest: 2)
        var flood = [try await shares.acquire(key: "a")]
        // b has used the model (it is active and light) but has nothing in flight now.
        try await shares.acquire(key: "b").release()
        let next = Pending(shares, "a")
        await eventually { shares.snapshot.waiting == 1 }
        try await Task.sleep(for: .milliseconds(100))
        flood.removeAll()
        #expect(shares.snapshot.resting == 0)
        let granted = try await next.task.value
        #expect(shares.snapshot.inFlight == ["a": 1])
        withExtendedLifetime(granted) {}
    }

    @Test func theManifestSetsTheRest() throws {
        func manifest(_ options: String) throws -> ModelManifest {
            try JSONDecoder().decode(ModelManifest.self, from: Data(#"{"engine": "transformer-lm", "task": "text-generation", "options": \#(options)}"#.utf8))
        }
        #expect(try manifest("{}").floodRest(in: "/m") == 2)
        #expect(try manifest(#"{"flood_rest": 0.5}"#).floodRest(in: "/m") == 0.5)
        #expect(try manifest(#"{"flood_rest": 0}"#).floodRest(in: "/m") == 0)
        for bad in ["-1", #""2""#, "null"] {
            #expect(throws: ModelLoadError(file: "/m/model.json", reason: "options.flood_rest must be a number of at least 0")) {
                try manifest(#"{"flood_rest": \#(bad)}"#).floodRest(in: "/m")
            }
        }
    }
}
