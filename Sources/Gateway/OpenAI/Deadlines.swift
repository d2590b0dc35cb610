import Synchronization

/// Request deadlines kept by one sleeper, not one sleeping task per request.
///
/// A cancelled `Task.sleep` keeps its task and its dispatch timer until the time it was asked
/// to sleep has passed (swiftlang/swift#60441). Racing every request against its own sleep
/// therefore held about 450 bytes and a timer per request for the whole timeout after the
/// request had finished: at 1,000 requests/s and the default 120 s, 120,000 timers and some
/// 50 MB. Here a request registers its deadline and removes it when done; one sleeper, started
/// when the first deadline is registered, wakes at the earliest pending deadline, expires what
/// is due and stops when nothing is pending.
///
/// Every deadline is the same `timeout` after its registration, so a new one never falls
/// before those pending: the sleeper's wake-up time is never too late.
final class Deadlines: Sendable {
    let timeout: Duration

    private struct Entry {
        let deadline: ContinuousClock.Instant
        let expire: @Sendable () -> Void
    }

    private struct State {
        var pending: [UInt64: Entry] = [:]
        var lastTicket: UInt64 = 0
        var sleeping = false
        var sleepersStarted = 0
    }

    private let state = Mutex(State())

    init(timeout: Duration) {
        self.timeout = timeout
    }

    /// A registered deadline; `finish` it when the work ends.
    struct Ticket: Sendable {
        fileprivate let id: UInt64
    }

    /// Calls `expire` once, when `timeout` has passed, unless the ticket is finished first.
    func start(expire: @escaping @Sendable () -> Void) -> Ticket {
        let deadline = ContinuousClock.now + timeout
        let (ticket, wake) = state.withLock { state -> (UInt64, Bool) in
            state.lastTicket += 1
            state.pending[state.lastTicket] = Entry(deadline: deadline, expire: expire)
            guard !state.sleeping else { return (state.lastTicket, false) }
            state.sleeping = true
            state.sleepersStarted += 1
            return (state.lastTicket, true)
        }
        if wake { Task.detached { await self.keep() } }
        return Ticket(id: ticket)
    }

    /// Ends the ticket's deadline: true when it had not expired yet.
    @discardableResult
    func finish(_ ticket: Ticket) -> Bool {
        state.withLock { $0.pending.removeValue(forKey: ticket.id) != nil }
    }

    /// How many sleepers have been started so far (each one lives while deadlines are pending).
    package var sleepersStarted: Int { state.withLock { $0.sleepersStarted } }

    /// The sleeper: expires what is due, then sleeps until the earliest pending deadline. Its
    /// sleep is never cancelled, so it never leaves a timer behind.
    private func keep() async {
        while true {
            let now = ContinuousClock.now
            let (due, next) = state.withLock { state -> ([@Sendable () -> Void], ContinuousClock.Instant?) in
                var dueTickets: [UInt64] = []
                var next: ContinuousClock.Instant?
                for (id, entry) in state.pending {
                    if entry.deadline <= now {
                        dueTickets.append(id)
                    } else {
                        next = min(next ?? entry.deadline, entry.deadline)
                    }
                }
                let due = dueTickets.compactMap { state.pending.removeValue(forKey: $0)?.expire }
                if next == nil { state.sleeping = false }
                return (due, next)
            }
            for expire in due { expire() }
            guard let next else { return }
            try? await Task.sleep(until: next, clock: .continuous)
        }
    }
}
