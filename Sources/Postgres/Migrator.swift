import Foundation
import Logging

/// One forward-only schema change: `sql/migrations/0001_init.sql` is version 1, named `init`.
public struct Migration: Sendable, Equatable {
    public var version: Int
    public var name: String
    public var sql: String

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }

    /// Parses a file name of the form `NNNN_name.sql`.
    public init?(fileName: String, sql: String) {
        guard fileName.hasSuffix(".sql") else { return nil }
        let stem = fileName.dropLast(4)
        guard let underscore = stem.firstIndex(of: "_"), let version = Int(stem[..<underscore]), version > 0 else {
            return nil
        }
        self.init(version: version, name: String(stem[stem.index(after: underscore)...]), sql: sql)
    }

    public var fileName: String { String(format: "%04d_%@.sql", version, name) }
}

public struct MigrationStatus: Sendable, Equatable {
    public enum State: String, Sendable {
        case applied, pending
        /// Applied, but the file's text changed since (checksum mismatch).
        case edited
        /// Recorded in the database but unknown to this binary (a newer release applied it).
        case unknown
    }

    public var version: Int
    public var name: String
    public var state: State
    public var appliedAt: Date?
}

/// Applies migrations in order, each in its own transaction, recording them in
/// `schema_migrations` with a SHA-256 checksum of their text. A session advisory lock makes two
/// instances starting together apply each migration exactly once; an applied migration whose
/// text changed is refused.
public struct Migrator: Sendable {
    /// Advisory lock key shared by every ModelGate instance (`hashtext('modelgate.migrations')`-like constant).
    static let lockKey: Int = 0x6D67_6D69_6772

    let pool: PostgresPool
    let migrations: [Migration]
    let logger: Logger

    public init(pool: PostgresPool, migrations: [Migration], logger: Logger = Logger(label: "modelgate.migrate")) {
        self.pool = pool
        self.migrations = migrations.sorted { $0.version < $1.version }
        self.logger = logger
    }

    /// Applies every pending migration; returns the ones this call applied.
    @discardableResult
    public func migrate() async throws -> [Migration] {
        let migrations = self.migrations
        try Self.validate(migrations)
        let applied = try await pool.withConnection { connection -> [Migration] in
            try connection.execute("SELECT pg_advisory_lock($1)", [Self.lockKey])
            defer { _ = try? connection.execute("SELECT pg_advisory_unlock($1)", [Self.lockKey]) }
            try Self.ensureTable(connection)
            let recorded = try Self.recorded(connection)
            try Self.checkEdits(migrations, recorded, connection)
            var applied: [Migration] = []
            for migration in migrations where recorded[migration.version] == nil {
                try connection.execute("BEGIN")
                do {
                    try connection.executeScript(migration.sql)
                    try connection.execute(
                        """
                        INSERT INTO schema_migrations (version, name, checksum)
                        VALUES ($1, $2, encode(sha256(convert_to($3, 'UTF8')), 'hex'))
                        """, [migration.version, migration.name, migration.sql])
                    try connection.execute("COMMIT")
                } catch let error as PostgresError {
                    _ = try? connection.execute("ROLLBACK")
                    throw PostgresError(
                        .migration, "migration \(migration.fileName) failed: \(error.message)",
                        sqlState: error.sqlState, detail: error.detail)
                }
                applied.append(migration)
            }
            return applied
        }
        for migration in applied { logger.info("applied migration \(migration.fileName)") }
        return applied
    }

    /// Every migration known here or recorded in the database, with its state.
    public func status() async throws -> [MigrationStatus] {
        let migrations = self.migrations
        return try await pool.withConnection { connection in
            let recorded = try Self.recorded(connection)
            var statuses: [MigrationStatus] = []
            for migration in migrations {
                let record = recorded[migration.version]
                let state: MigrationStatus.State
                if let record {
                    state = try record.checksum == Self.checksum(migration.sql, connection) ? .applied : .edited
                } else {
                    state = .pending
                }
                statuses.append(MigrationStatus(
                    version: migration.version, name: migration.name, state: state, appliedAt: record?.appliedAt))
            }
            let known = Set(migrations.map(\.version))
            for (version, record) in recorded where !known.contains(version) {
                statuses.append(MigrationStatus(
                    version: version, name: record.name, state: .unknown, appliedAt: record.appliedAt))
            }
            return statuses.sorted { $0.version < $1.version }
        }
    }

    /// Nil when the schema is current, else a one-line reason (for readiness checks).
    public func problem() async throws -> String? {
        let statuses = try await status()
        if let edited = statuses.first(where: { $0.state == .edited }) {
            return "migration \(edited.version) (\(edited.name)) was edited after it was applied"
        }
        let pending = statuses.filter { $0.state == .pending }
        if !pending.isEmpty {
            return "\(pending.count) migration(s) pending, first \(pending[0].version) (\(pending[0].name))"
        }
        return nil
    }

    // MARK: Helpers (run on the connection's thread)

    private struct Record {
        var name: String
        var checksum: String
        var appliedAt: Date
    }

    private static func validate(_ migrations: [Migration]) throws {
        var seen = Set<Int>()
        for migration in migrations where !seen.insert(migration.version).inserted {
            throw PostgresError(.migration, "two migrations share version \(migration.version)")
        }
    }

    private static func ensureTable(_ connection: PostgresConnection) throws {
        try connection.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """)
    }

    private static func recorded(_ connection: PostgresConnection) throws -> [Int: Record] {
        var records: [Int: Record] = [:]
        let exists = try connection.query("SELECT to_regclass('schema_migrations') IS NOT NULL AS present")
        guard try exists[0].decode("present", as: Bool.self) else { return records }
        for row in try connection.query("SELECT version, name, checksum, applied_at FROM schema_migrations") {
            records[try row.decode("version")] = Record(
                name: try row.decode("name"), checksum: try row.decode("checksum"), appliedAt: try row.decode("applied_at"))
        }
        return records
    }

    private static func checksum(_ sql: String, _ connection: PostgresConnection) throws -> String {
        let rows = try connection.query("SELECT encode(sha256(convert_to($1, 'UTF8')), 'hex') AS sum", [sql])
        return try rows[0].decode("sum")
    }

    private static func checkEdits(
        _ migrations: [Migration], _ recorded: [Int: Record], _ connection: PostgresConnection
    ) throws {
        for migration in migrations {
            guard let record = recorded[migration.version] else { continue }
            if try checksum(migration.sql, connection) != record.checksum {
                throw PostgresError(
                    .migration,
                    "migration \(migration.fileName) was edited after it was applied (checksum mismatch); "
                        + "add a new migration instead of changing an applied one")
            }
        }
    }
}
