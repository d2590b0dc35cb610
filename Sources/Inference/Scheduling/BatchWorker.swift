import Foundation

/// A dedicated thread that serves one model's requests in batches: waiting jobs are taken
/// round-robin across keys (tenants), up to `maxBatch` items at a time, and handed to `run` in
/// one call (one forward pass). The queue is bounded: `submit` fails with `.overloaded` when
/// it is full, instead of letting latency grow without bound.
package final class BatchWorker<Input: Sendable, Output: Sendable>: @unchecked Sendable {
    struct Job {
        let items: [Input]
        let continuation: CheckedContinuation<[Output], any Error>
        let cancelled: CancelFlag
    }

    final class CancelFlag: @unchecked Sendable {
        private let lock = NSLock()
        private var value = false
        func set() { lock.lock(); value = true; lock.unlock() }
        var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
    }

    private let condition = NSCondition()
    private var queue = FairQueue<Job>()
    private var stopped = false
    private var processed = 0
    private let maxBatch: Int
    private let capacity: Int
    private let run: @Sendable ([Input]) throws -> [Output]

    /// `run` maps a batch of inputs to outputs, one per input, in order.
    package init(name: String, maxBatch: Int, capacity: Int, run: @escaping @Sendable ([Input]) throws -> [Output]) {
        self.maxBatch = max(1, maxBatch)
        self.capacity = capacity
        self.run = run
        let thread = Thread { [self] in self.loop() }
        thread.name = name
        thread.start()
    }

    /// Runs `items` (possibly batched with other callers' items); throws `GenerationError.overloaded`
    /// when the queue is full, or `CancellationError` when the caller is cancelled while waiting.
    package func submit(_ items: [Input], key: String) async throws -> [Output] {
        guard !items.isEmpty else { return [] }
        let flag = CancelFlag()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                condition.lock()
                var evicted: Job?
                if stopped || queue.count >= capacity {
                    evicted = stopped ? nil : queue.evictForFairness(incoming: key)
                    guard evicted != nil else {
                        condition.unlock()
                        continuation.resume(throwing: GenerationError.overloaded("the model's queue is full; retry shortly"))
                        return
                    }
                }
                defer { evicted?.continuation.resume(throwing: GenerationError.overloaded("the model's queue is full; retry shortly")) }
                queue.append(Job(items: items, continuation: continuation, cancelled: flag), key: key)
                condition.signal()
                condition.unlock()
            }
        } onCancel: {
            flag.set()
        }
    }

    /// Whether items of this key would be queued now (a cheap check before admission).
    package func accepts(key: String) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        return !stopped && queue.accepts(key: key, capacity: capacity)
    }

    package var waiting: Int {
        condition.lock()
        defer { condition.unlock() }
        return queue.count
    }

    package var completed: Int {
        condition.lock()
        defer { condition.unlock() }
        return processed
    }

    package func shutdown() {
        condition.lock()
        stopped = true
        condition.broadcast()
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            while queue.isEmpty && !stopped { condition.wait() }
            if stopped {
                while let job = queue.popFirst() { job.continuation.resume(throwing: CancellationError()) }
                condition.unlock()
                return
            }
            var jobs: [Job] = []
            var count = 0
            while let next = queue.peek(), jobs.isEmpty || count + next.items.count <= maxBatch {
                _ = queue.popFirst()
                if next.cancelled.isSet {
                    next.continuation.resume(throwing: CancellationError())
                    continue
                }
                jobs.append(next)
                count += next.items.count
            }
            condition.unlock()
            guard !jobs.isEmpty else { continue }
            do {
                let outputs = try run(jobs.flatMap(\.items))
                var offset = 0
                for job in jobs {
                    job.continuation.resume(returning: Array(outputs[offset..<(offset + job.items.count)]))
                    offset += job.items.count
                }
            } catch {
                for job in jobs { job.continuation.resume(throwing: error) }
            }
            condition.lock()
            processed += jobs.count
            condition.unlock()
        }
    }
}
