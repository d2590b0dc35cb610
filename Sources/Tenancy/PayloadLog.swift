import Encryption
import Foundation
import Postgres

/// One logged request and its response, as the tenant reads it back.
public struct PayloadLogEntry: Sendable, Equatable, Encodable {
    public var id: UUID
    public var requestID: String
    public var model: String?
    public var route: String?
    public var status: Int?
    public var createdAt: Date
    /// The request body as sent (UTF-8; bytes that are not UTF-8, such as images, as base64).
    public var request: String
    /// The response body as sent (a stream's server-sent events, in order); nil when none was.
    public var response: String?

    enum CodingKeys: String, CodingKey {
        case id, model, route, status, request, response
        case requestID = "request_id"
        case createdAt = "created_at"
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id.uuidString.lowercased(), forKey: .id)
        try container.encode(requestID, forKey: .requestID)
        try container.encode(model, forKey: .model)
        try container.encode(route, forKey: .route)
        try container.encode(status, forKey: .status)
        try container.encode(createdAt, forKey: .createdAt)
        try container.encode(request, forKey: .request)
        try container.encode(response, forKey: .response)
    }
}

/// Payload logging for tenants that opted in (`payload_logging`): each inference request's
/// body and response, sealed with the tenant's data key (so they die with the tenant, and a
/// copied ciphertext opens nowhere else), kept `metering.payloadRetentionDays`, and readable
/// by the tenant itself (`GET /v1/payload_logs`, scope `logs:read`).
public struct PayloadLog: Sendable {
    let pool: PostgresPool
    let keyRing: KeyRing

    public init(pool: PostgresPool, keyRing: KeyRing) {
        self.pool = pool
        self.keyRing = keyRing
    }

    static func context(_ column: String, _ id: UUID) -> SealContext {
        SealContext(table: "payload_logs", column: column, rowID: id.uuidString.lowercased())
    }

    public func record(
        tenant: UUID, requestID: String, model: String, route: String, status: Int, request: [UInt8], response: [UInt8]?
    ) async throws {
        let cipher = try await keyRing.cipher(for: tenant)
        let id = UUID()
        let sealedRequest = try cipher.seal(request, Self.context("request", id))
        let sealedResponse = try response.map { try cipher.seal($0, Self.context("response", id)) }
        try await pool.execute(
            """
            INSERT INTO payload_logs (id, tenant_id, request_id, request, response, model, route, status)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            """, [id, tenant, requestID, sealedRequest, sealedResponse, model, route, status])
    }

    /// The tenant's newest entries first, up to `limit`, older than `before` when given.
    public func list(tenant: UUID, limit: Int = 20, before: Date? = nil, requestID: String? = nil) async throws -> [PayloadLogEntry] {
        let rows = try await pool.query(
            """
            SELECT id, request_id, model, route, status, created_at, request, response FROM payload_logs
            WHERE tenant_id = $1 AND ($2::timestamptz IS NULL OR created_at < $2) AND ($3::text IS NULL OR request_id = $3)
            ORDER BY created_at DESC, id LIMIT $4
            """, [tenant, before, requestID, max(1, min(limit, 100))])
        guard !rows.isEmpty else { return [] }
        let cipher = try await keyRing.cipher(for: tenant)
        return try rows.map { row in
            let id: UUID = try row.decode("id")
            let request = try cipher.open(
                SealedValue(stored: try row.decode("request", as: PostgresBytes.self).bytes), Self.context("request", id))
            let response = try row.decode("response", as: PostgresBytes?.self).map {
                try cipher.open(SealedValue(stored: $0.bytes), Self.context("response", id))
            }
            return PayloadLogEntry(
                id: id, requestID: try row.decode("request_id"), model: try row.decode("model"), route: try row.decode("route"),
                status: try row.decode("status"), createdAt: try row.decode("created_at"), request: Self.text(request),
                response: response.map(Self.text))
        }
    }

    /// Deletes entries older than `days`.
    @discardableResult
    public func expire(days: Int) async throws -> Int {
        try await pool.execute("DELETE FROM payload_logs WHERE created_at < now() - make_interval(days => $1)", [days])
    }

    static func text(_ bytes: [UInt8]) -> String {
        if let text = String(validating: bytes, as: UTF8.self) { return text }
        return "base64:" + Data(bytes).base64EncodedString()
    }
}
