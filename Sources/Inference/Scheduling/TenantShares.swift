import Synchronization

/// A model's requests in flight, shared fairly among tenants while more than one is using it.
///
/// A tenant alone may have as many requests in flight as the engine's queue takes. Once
/// another tenant has used the model within `window`, each tenant holds at most
/// `slots / active tenants` requests in flight, or `slots / (active tenants + 1)` while some
/// other tenant is a light user under that (one share stays free for its next request), never
/// less than one; counted over the whole request (admission, run, settlement). The rest wait,
/// served round-robin across tenants, at most `capacity` of them in all. Beyond that a waiter
/// of the tenant waiting most is refused (`GenerationError.overloaded`), never another tenant's.
///
/// A tenant over its share (requests of it waiting) also rests each slot it frees while a light
/// tenant has a request in flight: the slot stays taken for `rest` times as long as the request
/// held it (at most `window`), so with the default of 2 the flood has its share a third of the
/// time while the other tenant's requests run. A share of slots alone is not enough: each
/// request is a chain of steps on different threads and processes (HTTP, PostgreSQL, the
/// engine), and with the flood's chain always running the light tenant's steps wait for a core
/// at each hop. Measured on two cores with the flood at its share, the light tenant's median
/// was 1.5-1.6x idle; with rests of 2, 1.1-1.25x.
///
/// The cap is deliberately not work-conserving. Every request costs CPU outside the engine
/// (HTTP, metering in PostgreSQL, settlement), so a flooding tenant left to fill an engine that
/// has room would take the whole machine, and a quiet tenant's request would wait for CPU
/// behind it at every step. Capped at its share, the flood leaves the quiet tenant near its
/// idle latency and gets the machine back once the other tenant has been gone for `window`.
public final class TenantShares: Sendable {
    package let slots: Int
    package let capacity: Int
    public let window: Duration
    public let rest: Double

    private struct Waiter {
        let id: UInt64
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var inFlight: [String: Int] = [:]
        /// Every tenant seen within `window`, in flight or waiting (pruned every `window / 8`).
        var lastActive: [String: ContinuousClock.Instant] = [:]
        var nextPrune = ContinuousClock.now
        var waiting = FairQueue<Waiter>()
        var cancelledBeforeWaiting: Set<UInt64> = []
        var nextID: UInt64 = 0
        /// Slots resting after a flooding tenant's request (counted in `inFlight` too).
        var resting = 0
    }

    private let state = Mutex(State())

    public init(slots: Int, capacity: Int, window: Duration = .seconds(1), rest: Double = 2) {
        self.slots = max(1, slots)
        self.capacity = max(0, capacity)
        self.window = window
        self.rest = max(0, rest)
    }

    /// One request's place; released once, by `release()` or when the permit goes away.
    public final class Permit: Sendable {
        let shares: TenantShares
        let key: String
        let granted = ContinuousClock.now
        private let released = Atomic<Bool>(false)

        init(shares: TenantShares, key: String) {
            self.shares = shares
            self.key = key
        }

        public func release() {
            guard !released.exchange(true, ordering: .acquiringAndReleasing) else { return }
            shares.release(key, held: ContinuousClock.now - granted)
        }

        deinit { release() }
    }

    /// Waits for `key`'s share to have room (at once when it does). Throws `.overloaded` when
    /// the waiting room is full, and `CancellationError` when the calling task is cancelled.
    public func acquire(key: String) async throws -> Permit {
        // The usual case, without suspending: nobody of this tenant waits and it is under its
        // share. Otherwise an id for the waiter.
        let waiter = state.withLock { state -> UInt64? in
            if enter(&state, key) { return nil }
            state.nextID += 1
            return state.nextID
        }
        guard let id = waiter else { return Permit(shares: self, key: key) }
        // A cancellation that came after the waiter left (granted or refused) leaves its mark.
        defer { state.withLock { _ = $0.cancelledBeforeWaiting.remove(id) } }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let (outcome, evicted) = state.withLock { state -> (Result<Void, any Error>?, Waiter?) in
                    if state.cancelledBeforeWaiting.remove(id) != nil { return (.failure(CancellationError()), nil) }
                    if enter(&state, key) { return (.success(()), nil) }
                    var evicted: Waiter?
                    if state.waiting.count >= capacity {
                        evicted = state.waiting.evictForFairness(incoming: key)
                        guard evicted != nil else { return (.failure(Self.overloaded), nil) }
                    }
                    state.waiting.append(Waiter(id: id, continuation: continuation), key: key)
                    return (nil, evicted)
                }
                evicted?.continuation.resume(throwing: Self.overloaded)
                if let outcome { continuation.resume(with: outcome) }
            }
        } onCancel: {
            let cancelled = state.withLock { state -> Waiter? in
                var found: Waiter?
                state.waiting.removeAll { waiter in
                    guard waiter.id == id else { return false }
                    found = waiter
                    return true
                }
                if found == nil { state.cancelledBeforeWaiting.insert(id) }
                return found
            }
            cancelled?.continuation.resume(throwing: CancellationError())
        }
        return Permit(shares: self, key: key)
    }

    /// In flight (resting slots included) and waiting, per tenant, and the slots resting (for
    /// tests and statistics).
    public var snapshot: (inFlight: [String: Int], waiting: Int, resting: Int) {
        state.withLock { state in (state.inFlight.filter { $0.value > 0 }, state.waiting.count, state.resting) }
    }

    private static var overloaded: GenerationError {
        .overloaded("the model is shared with other tenants and this tenant's share of it is full; retry shortly")
    }

    /// Counts `key` in flight if nobody of it waits and it is under its share.
    private func enter(_ state: inout State, _ key: String) -> Bool {
        let now = ContinuousClock.now
        state.lastActive[key] = now
        guard state.waiting.peek(whereKey: { $0 == key }) == nil, state.inFlight[key, default: 0] < share(&state, including: key, now: now) else {
            return false
        }
        state.inFlight[key, default: 0] += 1
        return true
    }

    /// Frees `key`'s slot, after a rest while it floods and another tenant is light.
    private func release(_ key: String, held: Duration) {
        let resting = state.withLock { state -> Duration? in
            guard rest > 0, state.waiting.hasElements(forKey: key) else { return nil }
            let even = max(1, slots / max(1, state.lastActive.count))
            guard lightTenant(besides: key, in: state, even: even, running: true) else { return nil }
            state.resting += 1
            return min(held * rest, window)
        }
        guard let resting else { return free(key) }
        Task {
            try? await Task.sleep(for: resting)
            state.withLock { $0.resting -= 1 }
            free(key)
        }
    }

    private func free(_ key: String) {
        let granted = state.withLock { state -> [Waiter] in
            let now = ContinuousClock.now
            state.inFlight[key, default: 1] -= 1
            if state.inFlight[key] == 0 { state.inFlight[key] = nil }
            state.lastActive[key] = now
            let share = share(&state, including: key, now: now)
            var granted: [Waiter] = []
            while let (next, waiter) = state.waiting.peek(whereKey: { [inFlight = state.inFlight] in inFlight[$0, default: 0] < share }) {
                state.waiting.removeFirst(ofKey: next)
                state.inFlight[next, default: 0] += 1
                granted.append(waiter)
            }
            return granted
        }
        for waiter in granted { waiter.continuation.resume() }
    }

    /// Requests in flight allowed per tenant now: unlimited for a tenant alone (forgetting,
    /// within an eighth of `window`, tenants not seen for `window`); otherwise `slots / active tenants`, or, while some
    /// other active tenant is under that and not waiting (a light user, whose next request
    /// must not wait), `slots / (active tenants + 1)`, which keeps one share free. Never less
    /// than one.
    private func share(_ state: inout State, including key: String, now: ContinuousClock.Instant) -> Int {
        // Pruning now and then, not per request: a model many tenants use stays cheap to admit to.
        if now >= state.nextPrune {
            state.lastActive = state.lastActive.filter { [inFlight = state.inFlight, waiting = state.waiting] in
                now - $0.value < window || inFlight[$0.key] != nil || waiting.hasElements(forKey: $0.key)
            }
            state.nextPrune = now + window / 8
        }
        state.lastActive[key] = state.lastActive[key] ?? now
        let active = state.lastActive.count
        guard active > 1 else { return Int.max }
        let even = max(1, slots / active)
        return lightTenant(besides: key, in: state, even: even, running: false) ? max(1, slots / (active + 1)) : even
    }

    /// Whether another active tenant is under `even` and not waiting (and, when `running`, has
    /// a request in flight).
    private func lightTenant(besides key: String, in state: State, even: Int, running: Bool) -> Bool {
        state.lastActive.keys.contains {
            let inFlight = state.inFlight[$0, default: 0]
            return $0 != key && inFlight < even && (!running || inFlight > 0) && !state.waiting.hasElements(forKey: $0)
        }
    }
}
