import Foundation
import Synchronization

/// The threads that share a matrix product: the caller plus one persistent worker per other
/// core. Workers spin briefly between products (decoding issues dozens per token, a fraction of
/// a millisecond apart) and sleep when idle, so waking them costs nothing on the hot path.
/// One product runs at a time; a caller that finds the team busy runs its product alone.
final class ComputeTeam: @unchecked Sendable {
    static let shared = ComputeTeam(workers: ComputeThreads.cores - 1)

    private let workers: Int
    private let busy = Mutex(false)
    private let generation = Atomic<Int>(0)
    private let unfinished = Atomic<Int>(0)
    private let nextChunk = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let condition = NSCondition()
    // Written by the caller before `generation` is bumped (release), read by workers after
    // they observe the new generation (acquire).
    private var body: (@Sendable (Int) -> Void)?
    private var chunks = 0

    init(workers: Int) {
        self.workers = max(0, workers)
        for index in 0..<self.workers {
            let thread = Thread { [self] in self.work() }
            thread.name = "compute-\(index + 1)"
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    /// Runs `body(0..<chunks)` across the team; returns when every chunk is done.
    func run(chunks: Int, _ body: @escaping @Sendable (Int) -> Void) {
        let acquired = workers > 0 && busy.withLock { taken in
            if taken { return false }
            taken = true
            return true
        }
        guard acquired else {
            for index in 0..<chunks { body(index) }
            return
        }
        self.body = body
        self.chunks = chunks
        nextChunk.store(0, ordering: .relaxed)
        unfinished.store(workers, ordering: .relaxed)
        generation.add(1, ordering: .releasing)
        if sleepers.load(ordering: .acquiring) > 0 {
            condition.lock()
            condition.broadcast()
            condition.unlock()
        }
        drain(body, chunks)
        while unfinished.load(ordering: .acquiring) > 0 { spinPause() }
        self.body = nil
        busy.withLock { $0 = false }
    }

    private func drain(_ body: @Sendable (Int) -> Void, _ chunks: Int) {
        while true {
            let index = nextChunk.add(1, ordering: .relaxed).oldValue
            if index >= chunks { return }
            body(index)
        }
    }

    private func work() {
        var seen = 0
        while true {
            var spins = 0
            while generation.load(ordering: .acquiring) == seen {
                spins += 1
                if spins < 200_000 {
                    spinPause()
                    continue
                }
                // Idle for a while: sleep until the next product.
                condition.lock()
                sleepers.add(1, ordering: .releasing)
                while generation.load(ordering: .acquiring) == seen { condition.wait() }
                sleepers.subtract(1, ordering: .releasing)
                condition.unlock()
            }
            seen = generation.load(ordering: .acquiring)
            if let body { drain(body, chunks) }
            unfinished.subtract(1, ordering: .releasing)
        }
    }

    @inline(__always)
    private func spinPause() {
        #if arch(x86_64)
        _mm_pause_compat()
        #endif
    }
}

@inline(__always)
func _mm_pause_compat() {
    // A compiler barrier that keeps the spin loop from being optimised away; sched_yield would
    // give the core away, which is what the spin tries to avoid.
    withExtendedLifetime(0) {}
}
