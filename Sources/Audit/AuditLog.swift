import Encryption
import Foundation
import Postgres

/// Who performed an administrative action: `cli:<os user>` or `key:<display prefix>`.
public struct AuditActor: Sendable, Equatable, CustomStringConvertible {
    public let description: String

    public init(_ description: String) { self.description = description }

    public static func cli() -> AuditActor {
        let user = ProcessInfo.processInfo.environment["USER"] ?? getpwuid(getuid()).map { String(cString: $0.pointee.pw_name) } ?? "unknown"
        return AuditActor("cli:\(user)")
    }
}

public struct AuditEntry: Sendable, Equatable, Encodable {
    public var id: Int
    public var at: Date
    public var actor: String
    public var tenantID: UUID?
    public var action: String
    public var target: String
    /// Canonical JSON (sorted keys). Never holds secrets.
    public var details: String

    enum CodingKeys: String, CodingKey {
        case id, at, actor, action, target, details
        case tenantID = "tenant_id"
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(at, forKey: .at)
        try container.encode(actor, forKey: .actor)
        try container.encode(tenantID?.uuidString.lowercased(), forKey: .tenantID)
        try container.encode(action, forKey: .action)
        try container.encode(target, forKey: .target)
        try container.encode(details, forKey: .details)
    }
}

public struct AuditVerification: Sendable, Equatable {
    public var entries: Int
    /// The first entry whose hash does not match (edited, reordered, or its predecessor deleted).
    public var firstBrokenEntry: Int?
    public var reason: String?

    public var isIntact: Bool { firstBrokenEntry == nil }
}

/// The tamper-evident audit log: each entry stores the SHA-256 of its predecessor's hash and its
/// own canonical content, so editing, deleting or reordering any row breaks the chain from there.
public enum AuditLog {
    static let lockKey = 0x6D67_6175_6474  // advisory lock serialising appends

    /// Appends an entry inside the caller's transaction (the entry commits with the action).
    @discardableResult
    public static func append(
        _ connection: PostgresConnection, actor: AuditActor, tenant: UUID?, action: String, target: String,
        details: [String: String] = [:]
    ) throws -> AuditEntry {
        try connection.execute("SELECT pg_advisory_xact_lock($1)", [lockKey])
        let last = try connection.query("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")
        let previousID = try last.first.map { try $0.decode("id", as: Int.self) } ?? 0
        let previousHash = try last.first.map { try $0.decode("hash", as: PostgresBytes.self).bytes } ?? genesis
        let micros = Int((Date().timeIntervalSince1970 * 1_000_000).rounded())
        let entry = AuditEntry(
            id: previousID + 1, at: Date(timeIntervalSince1970: Double(micros) / 1_000_000), actor: actor.description,
            tenantID: tenant, action: action, target: target, details: canonicalJSON(details))
        let hash = self.hash(entry, micros: micros, previous: previousHash)
        try connection.execute(
            """
            INSERT INTO audit_log (id, at, actor, tenant_id, action, target, details, prev_hash, hash)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            """,
            [entry.id, entry.at, entry.actor, entry.tenantID, entry.action, entry.target, entry.details,
             PostgresBytes(previousHash), PostgresBytes(hash)])
        return entry
    }

    /// Recomputes the chain from the first entry and names the first one that does not match.
    public static func verify(_ pool: PostgresPool) async throws -> AuditVerification {
        try await pool.withConnection { connection in
            var previous = genesis
            var expectedID = 1
            var count = 0
            var lastID = 0
            while true {
                let rows = try connection.query(
                    "SELECT * FROM audit_log WHERE id > $1 ORDER BY id LIMIT 1000", [lastID])
                if rows.isEmpty { break }
                for row in rows {
                    let entry = try decode(row)
                    let storedPrevious = try row.decode("prev_hash", as: PostgresBytes.self).bytes
                    let storedHash = try row.decode("hash", as: PostgresBytes.self).bytes
                    count += 1
                    if entry.id != expectedID {
                        return AuditVerification(entries: count, firstBrokenEntry: entry.id, reason: "entry \(expectedID) is missing")
                    }
                    if storedPrevious != previous {
                        return AuditVerification(entries: count, firstBrokenEntry: entry.id, reason: "does not follow its predecessor")
                    }
                    let micros = Int((entry.at.timeIntervalSince1970 * 1_000_000).rounded())
                    if hash(entry, micros: micros, previous: previous) != storedHash {
                        return AuditVerification(entries: count, firstBrokenEntry: entry.id, reason: "content does not match its hash")
                    }
                    previous = storedHash
                    expectedID += 1
                    lastID = entry.id
                }
            }
            return AuditVerification(entries: count, firstBrokenEntry: nil, reason: nil)
        }
    }

    public static func list(_ pool: PostgresPool, tenant: UUID? = nil, since: Date? = nil, limit: Int = 1000) async throws -> [AuditEntry] {
        let rows = try await pool.query(
            """
            SELECT * FROM audit_log
            WHERE ($1::uuid IS NULL OR tenant_id = $1) AND ($2::timestamptz IS NULL OR at >= $2)
            ORDER BY id LIMIT $3
            """, [tenant, since, limit])
        return try rows.map(decode)
    }

    static func decode(_ row: PostgresRow) throws -> AuditEntry {
        AuditEntry(
            id: try row.decode("id"), at: try row.decode("at"), actor: try row.decode("actor"),
            tenantID: try row.decode("tenant_id"), action: try row.decode("action"), target: try row.decode("target"),
            details: try row.decode("details"))
    }

    static let genesis = [UInt8](repeating: 0, count: 32)

    /// SHA-256(previous hash || length-prefixed fields).
    static func hash(_ entry: AuditEntry, micros: Int, previous: [UInt8]) -> [UInt8] {
        var input = previous
        for field in [
            String(entry.id), String(micros), entry.actor, entry.tenantID?.uuidString.lowercased() ?? "", entry.action,
            entry.target, entry.details,
        ] {
            let bytes = Array(field.utf8)
            let count = UInt32(bytes.count)
            input += [UInt8(count >> 24), UInt8(count >> 16 & 0xff), UInt8(count >> 8 & 0xff), UInt8(count & 0xff)]
            input += bytes
        }
        return SHA256.hash(input)
    }

    static func canonicalJSON(_ details: [String: String]) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(details) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }
}
