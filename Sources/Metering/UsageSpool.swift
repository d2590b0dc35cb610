import Encryption
import Foundation
import Synchronization

/// What is billed for one request: written to the spool before settlement, replayed until the
/// database has it.
public struct SettlementRecord: Codable, Sendable, Equatable {
    public var requestID: String
    public var tenantID: UUID
    public var keyID: UUID?
    public var model: String
    public var route: String
    public var promptTokens: Int
    public var completionTokens: Int
    public var images: Int
    public var status: Int
    public var latencyMs: Int
    /// Microseconds since 1970 (exact through JSON).
    public var occurredAtMicros: Int64
    /// Who counted the tokens when it was not ModelGate's own engine (absent from records an
    /// older version spooled: decoded as nil).
    public var usageSource: UsageSource?

    public init(
        requestID: String, tenantID: UUID, keyID: UUID?, model: String, route: String, promptTokens: Int, completionTokens: Int,
        images: Int, status: Int, latencyMs: Int, occurredAt: Date = Date(), usageSource: UsageSource? = nil
    ) {
        self.usageSource = usageSource
        self.requestID = requestID
        self.tenantID = tenantID
        self.keyID = keyID
        self.model = model
        self.route = route
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.images = images
        self.status = status
        self.latencyMs = latencyMs
        self.occurredAtMicros = Int64((occurredAt.timeIntervalSince1970 * 1_000_000).rounded())
    }

    public var occurredAt: Date { Date(timeIntervalSince1970: Double(occurredAtMicros) / 1_000_000) }
}

/// Where the tokens of a usage event come from, for an engine ModelGate does not run itself
/// (`usage_events.usage_source`; NULL: ModelGate's own engine counted them).
public enum UsageSource: String, Codable, Sendable {
    /// The upstream server's `usage`, at most the reservation.
    case upstream
    /// Counted by ModelGate: with the model's tokenizer, or one per streamed chunk.
    case counted
    /// Neither: the reservation's upper bound.
    case bound
}

/// An append-only, fsync'd log of settlement records (length, CRC-32, JSON), so that no usage is
/// lost when the process dies or PostgreSQL is away: a record is written before the database
/// settlement, and every record still in the file is replayed (idempotently) until settled.
/// A torn last record (a crash mid-write) is ignored.
///
/// Writes are group-committed by a writer thread of its own: every record that arrived while
/// the previous `fdatasync` ran goes out in one write and one sync, and no Swift concurrency
/// thread ever waits for the disk.
public final class UsageSpool: Sendable {
    public let path: String
    private let shared: Shared

    final class Shared: Sendable {
        let state: Mutex<State>
        let wake = DispatchSemaphore(value: 0)
        init(_ state: State) { self.state = Mutex(state) }
    }

    struct Waiting {
        var frame: [UInt8]
        var requestID: String
        var continuation: CheckedContinuation<Void, any Error>
    }

    struct State {
        var descriptor: Int32
        var pending: Set<String> = []
        var bytes = 0
        var queue: [Waiting] = []
        /// A batch is being written: the file must not be truncated under it.
        var writing = false
        var closed = false
    }

    /// The directory's lock, held as long as this spool is open.
    private let lock: SpoolLock

    public init(directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        lock = try SpoolLock(directory: directory)
        path = directory + "/usage.spool"
        let descriptor = open(path, O_CREAT | O_RDWR | O_APPEND | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw MeteringError.unavailable("cannot open usage spool \(path): \(String(cString: strerror(errno)))")
        }
        var info = stat()
        fstat(descriptor, &info)
        shared = Shared(State(descriptor: descriptor, bytes: Int(info.st_size)))
        let (shared, path) = (shared, path)
        let writer = Thread { Self.writerLoop(shared, path: path) }
        writer.name = "usage-spool"
        writer.start()
    }

    deinit {
        shared.state.withLock { $0.closed = true }
        shared.wake.signal()
    }

    /// Appends a record durably: returns once it is written and synced to disk.
    public func append(_ record: SettlementRecord) async throws {
        let json = try JSONEncoder().encode(record)
        var frame = [UInt8]()
        frame.reserveCapacity(json.count + 8)
        let length = UInt32(json.count)
        let checksum = CRC32.checksum(Array(json))
        for shift in stride(from: 24, through: 0, by: -8) { frame.append(UInt8(truncatingIfNeeded: length >> UInt32(shift))) }
        for shift in stride(from: 24, through: 0, by: -8) { frame.append(UInt8(truncatingIfNeeded: checksum >> UInt32(shift))) }
        frame += json
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            shared.state.withLock { $0.queue.append(Waiting(frame: frame, requestID: record.requestID, continuation: continuation)) }
            shared.wake.signal()
        }
    }

    /// The writer thread: takes everything queued, writes it at once, syncs, answers everyone.
    private static func writerLoop(_ shared: Shared, path: String) {
        while true {
            shared.wake.wait()
            let (batch, descriptor, closed) = shared.state.withLock { state in
                defer { state.queue.removeAll(keepingCapacity: true) }
                state.writing = !state.queue.isEmpty
                return (state.queue, state.descriptor, state.closed)
            }
            if !batch.isEmpty {
                let bytes = batch.flatMap(\.frame)
                let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
                let failure: (any Error)? =
                    written == bytes.count && fdatasync(descriptor) == 0
                    ? nil : MeteringError.unavailable("cannot write usage spool \(path): \(String(cString: strerror(errno)))")
                shared.state.withLock { state in
                    if failure == nil {
                        for waiting in batch { state.pending.insert(waiting.requestID) }
                        state.bytes += bytes.count
                    }
                    state.writing = false
                }
                for waiting in batch {
                    if let failure { waiting.continuation.resume(throwing: failure) } else { waiting.continuation.resume() }
                }
            }
            if closed {
                // Anyone who queued after the last batch is still answered (the file is gone).
                let late = shared.state.withLock { state in
                    defer { state.queue.removeAll() }
                    close(state.descriptor)
                    return state.queue
                }
                for waiting in late { waiting.continuation.resume(throwing: MeteringError.unavailable("usage spool closed")) }
                return
            }
        }
    }

    /// Marks a record settled; when nothing is pending the file is emptied.
    public func settled(_ requestID: String) {
        shared.state.withLock { state in
            state.pending.remove(requestID)
            if state.pending.isEmpty && state.bytes > 0 && state.queue.isEmpty && !state.writing {
                if ftruncate(state.descriptor, 0) == 0 {
                    state.bytes = 0
                }
            }
        }
    }

    /// Records in the file not yet marked settled in this process (after a restart: all of them).
    public func unsettled() -> [SettlementRecord] {
        let pending = shared.state.withLock { $0.pending }
        return Self.read(path).filter { pending.isEmpty || pending.contains($0.requestID) }
    }

    /// Every complete, intact record of a spool file.
    static func read(_ path: String) -> [SettlementRecord] {
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        let bytes = [UInt8](data)
        var records: [SettlementRecord] = []
        var offset = 0
        while offset + 8 <= bytes.count {
            let length = Int(bytes[offset]) << 24 | Int(bytes[offset + 1]) << 16 | Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
            let checksum = UInt32(bytes[offset + 4]) << 24 | UInt32(bytes[offset + 5]) << 16 | UInt32(bytes[offset + 6]) << 8 | UInt32(bytes[offset + 7])
            guard offset + 8 + length <= bytes.count else { break }  // torn tail
            let payload = Array(bytes[(offset + 8)..<(offset + 8 + length)])
            if CRC32.checksum(payload) == checksum, let record = try? JSONDecoder().decode(SettlementRecord.self, from: Data(payload)) {
                records.append(record)
            }
            offset += 8 + length
        }
        return records
    }

    public var pendingCount: Int { shared.state.withLock { $0.pending.count } }
}

/// One process per spool directory: two instances sharing one would truncate each other's
/// records when they compact the file. An advisory `flock` on `lock` in the directory, taken
/// once per process (the same process may open the spool again, as tests do) and released with
/// the last spool — or by the kernel when the process dies, even by SIGKILL.
final class SpoolLock: Sendable {
    private let key: String
    private static let held = Mutex<[String: (descriptor: Int32, users: Int)]>([:])

    init(directory: String) throws {
        let lockPath = directory + "/lock"
        key = URL(fileURLWithPath: directory).resolvingSymlinksInPath().path
        try Self.held.withLock { held in
            if let entry = held[key] {
                held[key] = (entry.descriptor, entry.users + 1)
                return
            }
            let descriptor = open(lockPath, O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
            guard descriptor >= 0 else {
                throw MeteringError.unavailable("cannot open \(lockPath): \(String(cString: strerror(errno)))")
            }
            guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
                var buffer = [UInt8](repeating: 0, count: 32)
                let count = pread(descriptor, &buffer, buffer.count, 0)
                let owner = count > 0 ? String(decoding: buffer.prefix(count), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : "?"
                close(descriptor)
                throw MeteringError.unavailable(
                    "the usage spool \(directory) is in use by another modelgate process (pid \(owner)); give each instance its own metering.spoolDirectory")
            }
            let pid = Array("\(getpid())\n".utf8)
            _ = ftruncate(descriptor, 0)
            _ = pwrite(descriptor, pid, pid.count, 0)
            held[key] = (descriptor, 1)
        }
    }

    deinit { release() }

    private func release() {
        Self.held.withLock { held in
            guard let entry = held[key] else { return }
            if entry.users > 1 {
                held[key] = (entry.descriptor, entry.users - 1)
            } else {
                close(entry.descriptor)  // releases the flock
                held[key] = nil
            }
        }
    }
}
