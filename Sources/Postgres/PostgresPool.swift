import Foundation
import Logging
import Synchronization

/// A pool of PostgreSQL connections usable from async code.
///
/// Each connection is owned by a dedicated thread that runs blocking libpq calls from a shared
/// job queue; callers `await` the result, so Swift concurrency's and NIO's threads never block.
/// A connection found dead (server restarted, socket closed) is re-established before its next
/// job, so the pool heals on its own; while the server is down jobs fail fast with `.connection`.
///
/// ```swift
/// let pool = PostgresPool(configuration: .init(connectionString: "host=/tmp dbname=app"))
/// let rows = try await pool.query("SELECT id FROM tenants WHERE slug = $1", [slug])
/// try await pool.transaction { connection in
///     try connection.execute("UPDATE counters SET used = used + $1 WHERE id = $2", [n, id])
/// }
/// ```
public final class PostgresPool: Sendable {
    public let configuration: PostgresConfiguration
    let logger: Logger
    private let queue: JobQueue
    private let counters = PoolCounters()
    private let workersExited: Mutex<(remaining: Int, waiters: [CheckedContinuation<Void, Never>])>

    public init(configuration: PostgresConfiguration, logger: Logger = Logger(label: "modelgate.postgres")) {
        self.configuration = configuration
        self.logger = logger
        let size = max(1, configuration.poolSize)
        self.queue = JobQueue(acquireTimeout: configuration.acquireTimeoutSeconds)
        self.workersExited = Mutex((remaining: size, waiters: []))
        for index in 0..<size {
            let thread = Thread { [self] in self.runWorker() }
            thread.name = "pg-pool-\(index)"
            thread.start()
        }
    }

    // MARK: Public API

    /// Runs `body` on a pooled connection's thread. The closure may run several statements;
    /// an open transaction left behind is rolled back before the connection is reused.
    public func withConnection<Result: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection) throws -> Result
    ) async throws -> Result {
        let job = Job<Result>(body)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                job.attach(continuation)
                if !queue.enqueue(job) {
                    job.finish(.failure(PostgresError(.poolClosed, "the connection pool is shut down")))
                }
            }
        } onCancel: {
            job.cancelIfWaiting()
        }
    }

    /// Runs one parameterized statement and returns its rows.
    @discardableResult
    public func query(_ sql: String, _ parameters: [any PostgresEncodable] = []) async throws -> PostgresRows {
        try await withConnection { connection in try connection.query(sql, parameters) }
    }

    /// Runs one statement and returns the number of rows it changed.
    @discardableResult
    public func execute(_ sql: String, _ parameters: [any PostgresEncodable] = []) async throws -> Int {
        try await withConnection { connection in try connection.execute(sql, parameters) }
    }

    /// Runs `body` inside `BEGIN ... COMMIT`; any thrown error rolls the transaction back.
    @discardableResult
    public func transaction<Result: Sendable>(
        isolation: IsolationLevel = .readCommitted,
        _ body: @escaping @Sendable (PostgresConnection) throws -> Result
    ) async throws -> Result {
        try await withConnection { connection in
            try connection.execute("BEGIN ISOLATION LEVEL \(isolation.sql)")
            do {
                let result = try body(connection)
                try connection.execute("COMMIT")
                return result
            } catch {
                if connection.isOpen { _ = try? connection.execute("ROLLBACK") }
                throw error
            }
        }
    }

    /// A SERIALIZABLE transaction retried (with jittered backoff) when the server reports a
    /// serialization failure or deadlock, up to `maxAttempts` times.
    @discardableResult
    public func serializableTransaction<Result: Sendable>(
        maxAttempts: Int = 8,
        _ body: @escaping @Sendable (PostgresConnection) throws -> Result
    ) async throws -> Result {
        var attempt = 1
        while true {
            do {
                return try await transaction(isolation: .serializable, body)
            } catch let error as PostgresError where error.isSerializationFailure && attempt < maxAttempts {
                counters.retries.add(1, ordering: .relaxed)
                let ceiling = min(200, 2 << attempt)
                try await Task.sleep(for: .milliseconds(Int.random(in: 1...ceiling)))
                attempt += 1
            }
        }
    }

    /// Subscribes to `LISTEN` channels on a dedicated connection. The stream yields `.listening`
    /// once the subscription is active, each notification, and `.reconnected` after the
    /// connection was lost and restored (notifications may have been missed: drop caches).
    /// Ending iteration (or cancelling the task) stops the listener.
    public func notifications(channels: [String]) -> AsyncStream<PostgresNotificationEvent> {
        PostgresListener.start(configuration: configuration, channels: channels, logger: logger)
    }

    /// Sends a notification (delivered when the surrounding transaction, if any, commits).
    public func notify(channel: String, payload: String) async throws {
        try await execute("SELECT pg_notify($1, $2)", [channel, payload])
    }

    /// A snapshot of the pool's counters.
    public var statistics: PoolStatistics {
        PoolStatistics(
            size: max(1, configuration.poolSize),
            inUse: counters.inUse.load(ordering: .relaxed),
            waiting: queue.count,
            queries: counters.queries.load(ordering: .relaxed),
            connectionErrors: counters.connectionErrors.load(ordering: .relaxed),
            serializationRetries: counters.retries.load(ordering: .relaxed))
    }

    /// Stops accepting work, fails queued jobs with `.poolClosed`, lets running jobs finish and
    /// closes every connection.
    public func shutdown() async {
        queue.close()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = workersExited.withLock { state -> Bool in
                if state.remaining == 0 { return true }
                state.waiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    // MARK: Worker threads

    private func runWorker() {
        var connection: PostgresConnection?
        let counters = self.counters
        while let job = queue.next() {
            counters.inUse.add(1, ordering: .relaxed)
            if connection == nil || connection?.isAliveWhenIdle() == false {
                do {
                    if let existing = connection {
                        try existing.reconnect()
                    } else {
                        connection = try PostgresConnection(configuration: configuration) {
                            counters.queries.add(1, ordering: .relaxed)
                        }
                    }
                } catch {
                    counters.connectionErrors.add(1, ordering: .relaxed)
                    job.fail(error)
                    counters.inUse.subtract(1, ordering: .relaxed)
                    continue
                }
            }
            if let connection {
                let failedOnConnection = job.run(connection) {
                    // Clean up before the caller resumes, so it never sees a half-released connection.
                    if connection.isInTransaction { _ = try? connection.execute("ROLLBACK") }
                    counters.inUse.subtract(1, ordering: .relaxed)
                }
                if failedOnConnection { counters.connectionErrors.add(1, ordering: .relaxed) }
            } else {
                counters.inUse.subtract(1, ordering: .relaxed)
            }
        }
        connection?.close()
        let waiters = workersExited.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.remaining -= 1
            guard state.remaining == 0 else { return [] }
            defer { state.waiters = [] }
            return state.waiters
        }
        waiters.forEach { $0.resume() }
    }
}

public enum IsolationLevel: Sendable {
    case readCommitted, repeatableRead, serializable

    var sql: String {
        switch self {
        case .readCommitted: "READ COMMITTED"
        case .repeatableRead: "REPEATABLE READ"
        case .serializable: "SERIALIZABLE"
        }
    }
}

public struct PoolStatistics: Sendable {
    public var size: Int
    public var inUse: Int
    public var waiting: Int
    public var queries: Int
    public var connectionErrors: Int
    public var serializationRetries: Int
}

final class PoolCounters: Sendable {
    let inUse = Atomic<Int>(0)
    let queries = Atomic<Int>(0)
    let connectionErrors = Atomic<Int>(0)
    let retries = Atomic<Int>(0)
}

// MARK: - Jobs

/// Type-erased unit of work for a worker thread.
protocol PoolJob: AnyObject, Sendable {
    var enqueuedAt: ContinuousClock.Instant { get }
    /// Runs on the worker thread, calls `release` before resuming the caller, and returns true
    /// when it failed with a connection error.
    func run(_ connection: PostgresConnection, release: () -> Void) -> Bool
    func fail(_ error: any Error)
    /// False when the caller already went away (cancelled); the job is then skipped.
    var isWaiting: Bool { get }
}

final class Job<Result: Sendable>: PoolJob, @unchecked Sendable {
    private let body: @Sendable (PostgresConnection) throws -> Result
    private let state = Mutex<(continuation: CheckedContinuation<Result, any Error>?, started: Bool, cancelled: Bool)>(
        (nil, false, false))
    let enqueuedAt = ContinuousClock.now

    init(_ body: @escaping @Sendable (PostgresConnection) throws -> Result) {
        self.body = body
    }

    func attach(_ continuation: CheckedContinuation<Result, any Error>) {
        let cancelled = state.withLock { state -> Bool in
            if state.cancelled { return true }
            state.continuation = continuation
            return false
        }
        if cancelled { continuation.resume(throwing: CancellationError()) }
    }

    var isWaiting: Bool { state.withLock { !$0.cancelled } }

    func cancelIfWaiting() {
        let continuation = state.withLock { state -> CheckedContinuation<Result, any Error>? in
            guard !state.started else { return nil }
            state.cancelled = true
            defer { state.continuation = nil }
            return state.continuation
        }
        continuation?.resume(throwing: CancellationError())
    }

    func run(_ connection: PostgresConnection, release: () -> Void) -> Bool {
        let proceed = state.withLock { state -> Bool in
            guard !state.cancelled else { return false }
            state.started = true
            return true
        }
        guard proceed else {
            release()
            return false
        }
        let outcome: Swift.Result<Result, any Error>
        do {
            outcome = .success(try body(connection))
        } catch {
            outcome = .failure(error)
        }
        release()
        finish(outcome)
        if case .failure(let error as PostgresError) = outcome, error.isConnectionError { return true }
        return false
    }

    func fail(_ error: any Error) {
        finish(.failure(error))
    }

    func finish(_ outcome: Swift.Result<Result, any Error>) {
        let continuation = state.withLock { state -> CheckedContinuation<Result, any Error>? in
            state.started = true
            defer { state.continuation = nil }
            return state.continuation
        }
        continuation?.resume(with: outcome)
    }
}

/// FIFO of jobs shared by the worker threads; blocks idle workers on a condition variable.
final class JobQueue: @unchecked Sendable {
    private let condition = NSCondition()
    private var jobs: [any PoolJob] = []
    private var head = 0
    private var closed = false
    private let acquireTimeout: Duration

    init(acquireTimeout: Double) {
        self.acquireTimeout = .milliseconds(Int(acquireTimeout * 1000))
    }

    var count: Int {
        condition.lock()
        defer { condition.unlock() }
        return jobs.count - head
    }

    func enqueue(_ job: any PoolJob) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard !closed else { return false }
        jobs.append(job)
        condition.signal()
        return true
    }

    /// The next job to run, or nil once the queue is closed. Jobs whose caller gave up, or that
    /// waited longer than the acquire timeout, are failed here rather than run.
    func next() -> (any PoolJob)? {
        while true {
            condition.lock()
            while head == jobs.count && !closed { condition.wait() }
            if closed {
                let abandoned = jobs[head...]
                jobs = []
                head = 0
                condition.unlock()
                for job in abandoned { job.fail(PostgresError(.poolClosed, "the connection pool is shut down")) }
                return nil
            }
            let job = jobs[head]
            head += 1
            if head > 64 && head * 2 > jobs.count {
                jobs.removeFirst(head)
                head = 0
            }
            condition.unlock()
            guard job.isWaiting else { continue }
            if ContinuousClock.now - job.enqueuedAt > acquireTimeout {
                job.fail(PostgresError(.poolTimeout, "no database connection became free in time"))
                continue
            }
            return job
        }
    }

    func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }
}
