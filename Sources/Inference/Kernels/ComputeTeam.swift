import Foundation
import Synchronization

/// The threads that share a matrix product: the caller plus one persistent worker per other
/// core. Workers spin briefly between products (decoding issues dozens per token, a fraction of
/// a millisecond apart) and sleep when idle, so waking them costs nothing on the hot path.
/// One product runs at a time; a caller that finds the team busy runs its product alone.
///
/// A product is finished when its chunks are, not when every worker has checked in: a worker
/// that the kernel has descheduled (a busy server shares its cores with HTTP and the database)
/// simply takes no part, and the caller runs its share instead of waiting for it to wake.
final class ComputeTeam: @unchecked Sendable {
    static let shared = ComputeTeam(workers: ComputeThreads.cores - 1)

    private let workers: Int
    private let busy = Mutex(false)
    /// The current product and its progress in one word, so a chunk is only ever claimed for
    /// the product it belongs to: generation (bits 40..<63), chunk count (bits 20..<40), next
    /// chunk (bits 0..<20).
    private let claims = Atomic<Int>(0)
    private let completed = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let condition = NSCondition()
    private var generation = 0
    // Written by the caller before `claims` is published (release); read by a thread only after
    // it claimed a chunk of that product (acquire), and not rewritten before every chunk is done.
    private var body: (@Sendable (Int) -> Void)?

    private static let indexBits = 20
    private static let chunkLimit = 1 << indexBits
    private static let mask = chunkLimit - 1

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
        let acquired = workers > 0 && chunks < Self.chunkLimit && busy.withLock { taken in
            if taken { return false }
            taken = true
            return true
        }
        guard acquired else {
            for index in 0..<chunks { body(index) }
            return
        }
        generation = (generation + 1) & 0x7F_FFFF
        self.body = body
        completed.store(0, ordering: .relaxed)
        let start = generation << (2 * Self.indexBits) | chunks << Self.indexBits
        claims.store(start, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            condition.lock()
            condition.broadcast()
            condition.unlock()
        }
        drain(start)
        // Only chunks a worker is running remain; if that worker lost its core, let it have ours.
        var spins = 0
        while completed.load(ordering: .acquiring) < chunks {
            spins += 1
            if spins > 2_000 { sched_yield() }
        }
        self.body = nil
        busy.withLock { $0 = false }
    }

    /// Claims and runs chunks of the product that `claims` held as `start` until none is left
    /// or another product has replaced it.
    private func drain(_ start: Int) {
        let product = start >> Self.indexBits
        var current = claims.load(ordering: .acquiring)
        while current >> Self.indexBits == product {
            let index = current & Self.mask
            let chunks = product & Self.mask
            if index >= chunks { return }
            let (exchanged, original) = claims.compareExchange(
                expected: current, desired: current + 1, ordering: .acquiring)
            guard exchanged else {
                current = original
                continue
            }
            body?(index)
            completed.add(1, ordering: .releasing)
            current = claims.load(ordering: .acquiring)
        }
    }

    private func work() {
        var seen = claims.load(ordering: .acquiring) >> (2 * Self.indexBits)
        while true {
            var spins = 0
            var current = claims.load(ordering: .acquiring)
            while current >> (2 * Self.indexBits) == seen {
                spins += 1
                if spins < 200_000 {
                    current = claims.load(ordering: .acquiring)
                    continue
                }
                // Idle for a while: sleep until the next product.
                condition.lock()
                sleepers.add(1, ordering: .sequentiallyConsistent)
                while claims.load(ordering: .sequentiallyConsistent) >> (2 * Self.indexBits) == seen { condition.wait() }
                sleepers.subtract(1, ordering: .sequentiallyConsistent)
                condition.unlock()
                current = claims.load(ordering: .acquiring)
            }
            seen = current >> (2 * Self.indexBits)
            drain(current & ~Self.mask)
        }
    }
}
