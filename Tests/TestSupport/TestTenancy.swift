import Encryption
import Foundation
import Postgres
import Tenancy

/// The tenancy services over a fresh test database, with generated master keys in a key file.
public struct TestTenancy: Sendable {
    public let database: TestDatabase
    public let keyFile: String
    public let keyRing: KeyRing
    public let tenants: TenantService
    public let apiKeys: APIKeyService
    public let authenticator: Authenticator
    public let keyring: KeyringAdministration

    /// On a fresh database of the shared cluster, or on `database` when given.
    public static func create(poolSize: Int = 4, database: TestDatabase? = nil) async throws -> TestTenancy {
        let database = if let database { database } else { try await TestDatabase.create(poolSize: poolSize) }
        let keyFile = NSTemporaryDirectory() + "mg-keyring-\(UUID().uuidString)/keyring.json"
        let keys = try MasterKeys.generate()
        try keys.save(file: keyFile)
        let keyRing = KeyRing(masterKeys: keys, store: PostgresDataKeyStore(pool: database.pool)) {
            try MasterKeys.load(file: keyFile)
        }
        return TestTenancy(
            database: database, keyFile: keyFile, keyRing: keyRing,
            tenants: TenantService(pool: database.pool, keyRing: keyRing),
            apiKeys: APIKeyService(pool: database.pool, keyHasher: keys.keyHasher),
            authenticator: Authenticator(pool: database.pool, keyHasher: keys.keyHasher) { change in
                if case .tenant(let tenant) = change { keyRing.dropCache(tenant: tenant) }
            },
            keyring: KeyringAdministration(pool: database.pool, keyRing: keyRing, keyFile: keyFile))
    }

    /// The key file's JSON, for `MODELGATE_KEYRING` of a `modelgate` child process.
    public var keyringJSON: String {
        (try? String(contentsOfFile: keyFile, encoding: .utf8)) ?? ""
    }

    public var pool: PostgresPool { database.pool }

    public func drop() async {
        await database.drop()
        try? FileManager.default.removeItem(atPath: (keyFile as NSString).deletingLastPathComponent)
    }

    /// A plain-text dump of the whole database (`pg_dump`), for scanning for plaintext.
    public func dump() async throws -> String {
        let cluster = try await TestDatabase.cluster()
        let bin = try LocalPostgresCluster.findBinDirectory()
        let arguments = ["-h", cluster.socketDirectory, "-p", String(cluster.options.port), "-U", "postgres", database.name]
        let (status, output) = try await onOwnThread { try ChildProcess.run(bin + "/pg_dump", arguments) }
        guard status == 0 else { throw PostgresError(.localCluster, "pg_dump failed: \(output)") }
        return output
    }
}

extension TestTenancy {
    /// Runs `body` on fresh tenancy services and drops the database afterwards — awaited, also
    /// when `body` throws, so no later test sees the leftovers.
    public static func with<Result>(
        poolSize: Int = 4, _ body: (TestTenancy) async throws -> Result
    ) async throws -> Result {
        let system = try await create(poolSize: poolSize)
        do {
            let result = try await body(system)
            await system.drop()
            return result
        } catch {
            await system.drop()
            throw error
        }
    }
}

/// Runs `body`, then `cleanup` — awaited, also when `body` throws — so that no later test sees
/// what this one started (a database, a server). `defer { Task { ... } }` would not wait.
///
/// ```swift
/// let database = try await TestDatabase.create()
/// try await withCleanup({ await database.drop() }) {
///     ...
/// }
/// ```
@discardableResult
public func withCleanup<Result>(_ cleanup: () async -> Void, run body: () async throws -> Result) async rethrows -> Result {
    do {
        let result = try await body()
        await cleanup()
        return result
    } catch {
        await cleanup()
        throw error
    }
}

/// Polls `condition` every `interval` until it holds or `deadline` passes: true when it held.
/// A poll without a deadline hangs instead of failing.
public func eventually(
    within deadline: Duration = .seconds(30), every interval: Duration = .milliseconds(50), _ condition: () async throws -> Bool
) async rethrows -> Bool {
    let end = ContinuousClock.now + deadline
    while ContinuousClock.now < end {
        if try await condition() { return true }
        try? await Task.sleep(for: interval)
    }
    return try await condition()
}
