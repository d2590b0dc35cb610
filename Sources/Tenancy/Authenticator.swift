import Encryption
import Foundation
import Logging
import Postgres
import Synchronization

/// Sends cache invalidations inside the transaction that changes a key, a tenant or a plan,
/// so every instance hears about the change exactly when it commits. The one place that
/// spells the `modelgate_auth` channel's payloads (`Authenticator.invalidate` reads them).
public struct AuthNotifier: Sendable {
    static let channel = "modelgate_auth"

    public init() {}

    public func keyChanged(_ key: UUID, _ connection: PostgresConnection) throws {
        try connection.execute("SELECT pg_notify($1, $2)", [Self.channel, "key:" + key.uuidString.lowercased()])
    }

    public func tenantChanged(_ tenant: UUID, _ connection: PostgresConnection) throws {
        try connection.execute("SELECT pg_notify($1, $2)", [Self.channel, "tenant:" + tenant.uuidString.lowercased()])
    }

    /// A plan's limits changed: the keys of its tenants, and what was seen of rate limits.
    public func planChanged(_ plan: String, _ connection: PostgresConnection) throws {
        try connection.execute("SELECT pg_notify($1, $2)", [Self.channel, "plan:" + plan])
    }
}

/// What changed, as an invalidation announces it: a key, a tenant, or (after the listener
/// lost its connection and may have missed some) everything.
public enum AuthInvalidation: Sendable, Equatable {
    case key(UUID)
    case tenant(UUID)
    case everything
}

/// Why a request was not authenticated. The messages are safe to show to the client.
public enum AuthenticationError: Error, Equatable, Sendable {
    case missingKey
    /// Wrong shape or checksum: rejected without touching the database.
    case malformedKey
    /// Well-formed but unknown, revoked, expired or rotated out.
    case invalidKey
    case tenantSuspended
    /// The key could not be checked (database unreachable): retry later (503).
    case unavailable

    public var message: String {
        switch self {
        case .missingKey:
            "You didn't provide an API key. Send it as 'Authorization: Bearer mgk_...' or 'x-api-key: mgk_...'."
        case .malformedKey: "Incorrect API key provided: it is not a well-formed ModelGate key (mgk_...)."
        case .invalidKey: "Incorrect API key provided: the key is unknown, revoked or expired."
        case .tenantSuspended: "This tenant is suspended. Contact your ModelGate operator."
        case .unavailable: "API keys cannot be verified right now (database unavailable); retry shortly."
        }
    }
}

/// Verifies API keys: format and checksum -> HMAC-SHA256 with the pepper -> in-memory cache
/// (bounded, TTL) -> one indexed lookup on a miss. Revocations, rotations and suspensions
/// arrive through LISTEN/NOTIFY and drop cached entries on every instance within a second.
/// Failed attempts are counted per client address and answered ever more slowly, while valid
/// keys from the same address are never delayed.
public final class Authenticator: Sendable {
    struct CacheEntry: Sendable {
        /// Nil: a negative entry (no such key).
        var principal: Principal?
        var revoked: Bool
        var cachedAt: ContinuousClock.Instant
    }

    struct Failures: Sendable {
        var count: Int
        var windowStart: ContinuousClock.Instant
    }

    let pool: PostgresPool
    let keyHasher: KeyHasher
    let logger: Logger
    let cacheTTL: Duration
    let negativeTTL: Duration
    let capacity: Int
    private let cache = Mutex<[[UInt8]: CacheEntry]>([:])
    private let failures = Mutex<[String: Failures]>([:])
    private let lastUsed = Mutex<[UUID: Date]>([:])
    private let counters = AuthCounters()
    /// Called for every invalidation this instance hears, after its own cache is updated, so
    /// that state cached elsewhere (data keys, rate-limit observations) follows.
    let onInvalidation: @Sendable (AuthInvalidation) -> Void

    public init(
        pool: PostgresPool, keyHasher: KeyHasher, logger: Logger = Logger(label: "modelgate.auth"),
        cacheTTL: Duration = .seconds(60), negativeTTL: Duration = .seconds(5), capacity: Int = 10_000,
        onInvalidation: @escaping @Sendable (AuthInvalidation) -> Void = { _ in }
    ) {
        self.pool = pool
        self.keyHasher = keyHasher
        self.logger = logger
        self.cacheTTL = cacheTTL
        self.negativeTTL = negativeTTL
        self.capacity = capacity
        self.onInvalidation = onInvalidation
    }

    /// Extracts the key from `Authorization: Bearer` or `x-api-key` header values.
    /// (Byte-level: this runs on every request.)
    public static func key(authorization: String?, apiKeyHeader: String?) -> String? {
        if let authorization {
            var bytes = Substring(authorization).utf8[...]
            while bytes.first == 32 { bytes = bytes.dropFirst() }
            while bytes.last == 32 { bytes = bytes.dropLast() }
            let scheme = Array("bearer".utf8)
            guard bytes.count > 7, zip(bytes.prefix(6), scheme).allSatisfy({ $0 | 0x20 == $1 }),
                bytes[bytes.index(bytes.startIndex, offsetBy: 6)] == 32
            else { return nil }
            var token = bytes.dropFirst(7)
            while token.first == 32 { token = token.dropFirst() }
            return String(Substring(token))
        }
        guard let apiKeyHeader else { return nil }
        var bytes = Substring(apiKeyHeader).utf8[...]
        while bytes.first == 32 { bytes = bytes.dropFirst() }
        while bytes.last == 32 { bytes = bytes.dropLast() }
        return String(Substring(bytes))
    }

    /// Authenticates `key` for a client at `clientAddress`.
    public func authenticate(_ key: String?, clientAddress: String) async throws(AuthenticationError) -> Principal {
        do {
            let principal = try await verify(key)
            recordUse(principal.keyID)
            return principal
        } catch .unavailable {
            throw .unavailable
        } catch .tenantSuspended {
            // The key is genuine: only failed authentication (guessing) is slowed down.
            throw .tenantSuspended
        } catch {
            counters.failures.add(1, ordering: .relaxed)
            await slowDown(clientAddress)
            throw error
        }
    }

    private func verify(_ key: String?) async throws(AuthenticationError) -> Principal {
        guard let key, !key.isEmpty else { throw .missingKey }
        guard APIKeyFormat.isWellFormed(key) else { throw .malformedKey }
        let digest = keyHasher.digest(key)
        let now = ContinuousClock.now
        if let entry = cache.withLock({ $0[digest] }) {
            let ttl = entry.principal == nil ? negativeTTL : cacheTTL
            if now - entry.cachedAt < ttl {
                counters.hits.add(1, ordering: .relaxed)
                return try check(entry)
            }
        }
        counters.misses.add(1, ordering: .relaxed)
        let entry: CacheEntry
        do {
            entry = try await lookup(digest, now: now)
        } catch {
            // The database is unreachable: a key cannot be verified; callers map this to 503.
            logger.warning("key lookup failed", metadata: ["error": "\(error)"])
            throw .unavailable
        }
        store(digest, entry)
        return try check(entry)
    }

    private func check(_ entry: CacheEntry) throws(AuthenticationError) -> Principal {
        guard let principal = entry.principal, !entry.revoked else { throw .invalidKey }
        if let expiresAt = principal.expiresAt, expiresAt <= Date() { throw .invalidKey }
        switch principal.tenantStatus {
        case .deleted: throw .invalidKey
        case .suspended: throw .tenantSuspended
        case .active, nil: return principal
        }
    }

    private func lookup(_ digest: [UInt8], now: ContinuousClock.Instant) async throws -> CacheEntry {
        let rows = try await pool.query(
            """
            SELECT k.id, k.prefix, k.tenant_id, k.scopes, k.allowed_models, k.limits, k.expires_at, k.revoked_at,
                   t.slug, t.status, t.plan, t.payload_logging
            FROM api_keys k LEFT JOIN tenants t ON t.id = k.tenant_id
            WHERE k.key_hash = $1
            """, [PostgresBytes(digest)])
        guard let row = rows.first else { return CacheEntry(principal: nil, revoked: false, cachedAt: now) }
        let scopes: [String] = try row.decode("scopes")
        let status: String? = try row.decode("status")
        let principal = Principal(
            keyID: try row.decode("id"), keyPrefix: try row.decode("prefix"), tenantID: try row.decode("tenant_id"),
            tenantSlug: try row.decode("slug"), tenantStatus: status.flatMap(TenantStatus.init(rawValue:)),
            tenantPlan: try row.decode("plan"), scopes: Set(scopes.compactMap(Scope.init(rawValue:))),
            allowedModels: try row.decode("allowed_models"),
            limits: (try? row.decodeJSON("limits", as: [String: Int].self)) ?? [:], expiresAt: try row.decode("expires_at"),
            payloadLogging: try row.decode("payload_logging", as: Bool?.self) ?? false)
        let revoked = try row.decode("revoked_at", as: Date?.self) != nil
        return CacheEntry(principal: principal, revoked: revoked, cachedAt: now)
    }

    private func store(_ digest: [UInt8], _ entry: CacheEntry) {
        cache.withLock { cache in
            if cache.count >= capacity {
                // Evict expired entries first, then an arbitrary half: bounded memory under floods.
                let now = ContinuousClock.now
                cache = cache.filter { now - $0.value.cachedAt < ($0.value.principal == nil ? negativeTTL : cacheTTL) }
                if cache.count >= capacity {
                    var kept = 0
                    cache = cache.filter { _ in
                        kept += 1
                        return kept <= capacity / 2
                    }
                }
            }
            cache[digest] = entry
        }
    }

    // MARK: Invalidation

    /// Listens for key and tenant changes and drops matching cache entries; flushes everything
    /// when the listener had to reconnect (notifications may have been missed). Runs until cancelled.
    public func runInvalidationListener(ready: (@Sendable () -> Void)? = nil) async {
        for await event in pool.notifications(channels: [AuthNotifier.channel]) {
            switch event {
            case .listening:
                ready?()
            case .reconnected:
                logger.info("auth invalidation listener reconnected; flushing the key cache")
                flush()
                onInvalidation(.everything)
            case .notification(let notification):
                invalidate(notification.payload)
            }
            if Task.isCancelled { break }
        }
    }

    func invalidate(_ payload: String) {
        let parts = payload.split(separator: ":", maxSplits: 1)
        if parts.count == 2, parts[0] == "plan" {
            // A plan's limits changed: keys of its tenants, and everything seen of rate limits.
            let plan = String(parts[1])
            cache.withLock { cache in cache = cache.filter { $0.value.principal?.tenantPlan != plan } }
            onInvalidation(.everything)
            return
        }
        guard parts.count == 2, let id = UUID(uuidString: String(parts[1])) else { return }
        switch parts[0] {
        case "key":
            cache.withLock { cache in cache = cache.filter { $0.value.principal?.keyID != id } }
            onInvalidation(.key(id))
        case "tenant":
            cache.withLock { cache in cache = cache.filter { $0.value.principal?.tenantID != id } }
            onInvalidation(.tenant(id))
        default:
            break
        }
    }

    /// Drops every cached verification.
    public func flush() {
        cache.withLock { $0.removeAll() }
    }

    // MARK: Failed attempts

    static let freeFailuresPerMinute = 10
    static let maximumDelay = Duration.seconds(2)

    private func slowDown(_ clientAddress: String) async {
        let now = ContinuousClock.now
        let count = failures.withLock { failures -> Int in
            if failures.count > 50_000 { failures = failures.filter { now - $0.value.windowStart < .seconds(60) } }
            var entry = failures[clientAddress] ?? Failures(count: 0, windowStart: now)
            if now - entry.windowStart > .seconds(60) { entry = Failures(count: 0, windowStart: now) }
            entry.count += 1
            failures[clientAddress] = entry
            return entry.count
        }
        guard count > Self.freeFailuresPerMinute else { return }
        let exponent = min(count - Self.freeFailuresPerMinute, 10)
        let delay = min(Duration.milliseconds(25 << exponent), Self.maximumDelay)
        try? await Task.sleep(for: delay)
    }

    // MARK: Last used

    private func recordUse(_ key: UUID) {
        lastUsed.withLock { $0[key] = Date() }
    }

    /// Writes the batched `last_used_at` timestamps in one statement.
    public func flushLastUsed() async {
        let batch = lastUsed.withLock { pending -> [UUID: Date] in
            defer { pending.removeAll() }
            return pending
        }
        guard !batch.isEmpty else { return }
        let ids = Array(batch.keys)
        let times = ids.map { PostgresTimestampText.format(batch[$0] ?? Date()) }
        do {
            try await pool.execute(
                """
                UPDATE api_keys SET last_used_at = v.t
                FROM unnest($1::uuid[], $2::text[]::timestamptz[]) AS v(id, t)
                WHERE api_keys.id = v.id AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at < v.t)
                """, [ids, times])
        } catch {
            // Not worth failing anything over; keep the newest timestamps for the next flush.
            lastUsed.withLock { pending in
                for (id, time) in batch where (pending[id] ?? .distantPast) < time { pending[id] = time }
            }
        }
    }

    /// Flushes `last_used_at` every `interval` until cancelled.
    public func runLastUsedFlusher(interval: Duration = .seconds(5)) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            await flushLastUsed()
        }
        await flushLastUsed()
    }

    public var statistics: (hits: Int, misses: Int, failures: Int) {
        (counters.hits.load(ordering: .relaxed), counters.misses.load(ordering: .relaxed), counters.failures.load(ordering: .relaxed))
    }
}

final class AuthCounters: Sendable {
    let hits = Atomic<Int>(0)
    let misses = Atomic<Int>(0)
    let failures = Atomic<Int>(0)
}

enum PostgresTimestampText {
    static func format(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: date)
    }
}
