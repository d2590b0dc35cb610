import Foundation

/// A statement parameter as libpq receives it: a type OID, a wire format and bytes (nil is NULL).
public struct PostgresBind: Sendable {
    public var oid: UInt32
    /// 0 = text, 1 = binary.
    public var format: Int32
    public var bytes: [UInt8]?

    public static func text(_ string: String, oid: UInt32) -> PostgresBind {
        PostgresBind(oid: oid, format: 0, bytes: Array(string.utf8))
    }

    public static let null = PostgresBind(oid: 0, format: 0, bytes: nil)
}

/// Well-known type OIDs (pg_type.oid).
public enum PostgresType {
    public static let unknown: UInt32 = 0
    public static let bool: UInt32 = 16
    public static let bytea: UInt32 = 17
    public static let int8: UInt32 = 20
    public static let int2: UInt32 = 21
    public static let int4: UInt32 = 23
    public static let text: UInt32 = 25
    public static let json: UInt32 = 114
    public static let float4: UInt32 = 700
    public static let float8: UInt32 = 701
    public static let varchar: UInt32 = 1043
    public static let timestamp: UInt32 = 1114
    public static let timestamptz: UInt32 = 1184
    public static let numeric: UInt32 = 1700
    public static let uuid: UInt32 = 2950
    public static let jsonb: UInt32 = 3802
    public static let textArray: UInt32 = 1009
    public static let int8Array: UInt32 = 1016
    public static let uuidArray: UInt32 = 2951
}

/// A Swift value that can be sent as a statement parameter.
///
/// Queries are always parameterized: values never become part of the SQL text.
public protocol PostgresEncodable: Sendable {
    func postgresBind() -> PostgresBind
}

extension Optional: PostgresEncodable where Wrapped: PostgresEncodable {
    public func postgresBind() -> PostgresBind {
        switch self {
        case .none: return .null
        case .some(let value): return value.postgresBind()
        }
    }
}

extension String: PostgresEncodable {
    /// Strings are sent untyped so the server infers the column's type (text, varchar, enum, inet...).
    public func postgresBind() -> PostgresBind { .text(self, oid: PostgresType.unknown) }
}

extension Substring: PostgresEncodable {
    public func postgresBind() -> PostgresBind { String(self).postgresBind() }
}

extension Int: PostgresEncodable {
    public func postgresBind() -> PostgresBind { .text(String(self), oid: PostgresType.int8) }
}

extension Int64: PostgresEncodable {
    public func postgresBind() -> PostgresBind { .text(String(self), oid: PostgresType.int8) }
}

extension Int32: PostgresEncodable {
    public func postgresBind() -> PostgresBind { .text(String(self), oid: PostgresType.int4) }
}

extension Bool: PostgresEncodable {
    public func postgresBind() -> PostgresBind { .text(self ? "t" : "f", oid: PostgresType.bool) }
}

extension Double: PostgresEncodable {
    public func postgresBind() -> PostgresBind {
        let text: String
        if isNaN {
            text = "NaN"
        } else if isInfinite {
            text = self > 0 ? "Infinity" : "-Infinity"
        } else {
            text = "\(self)"  // shortest representation that round-trips
        }
        return .text(text, oid: PostgresType.float8)
    }
}

extension UUID: PostgresEncodable {
    public func postgresBind() -> PostgresBind { .text(uuidString.lowercased(), oid: PostgresType.uuid) }
}

extension Date: PostgresEncodable {
    public func postgresBind() -> PostgresBind {
        .text(PostgresTimestamp.format(self), oid: PostgresType.timestamptz)
    }
}

/// Raw bytes (`bytea`), sent in binary format.
public struct PostgresBytes: PostgresEncodable, Hashable {
    public var bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public init(_ data: Data) { self.bytes = Array(data) }
    public func postgresBind() -> PostgresBind { PostgresBind(oid: PostgresType.bytea, format: 1, bytes: bytes) }
}

extension Data: PostgresEncodable {
    public func postgresBind() -> PostgresBind { PostgresBytes(self).postgresBind() }
}

extension Array: PostgresEncodable where Element: PostgresArrayElement {
    public func postgresBind() -> PostgresBind {
        let body = map { PostgresArrayLiteral.quote($0.postgresArrayText) }.joined(separator: ",")
        return .text("{" + body + "}", oid: Element.postgresArrayOID)
    }
}

/// An element of a one-dimensional array parameter (`text[]`, `uuid[]`, `int8[]`).
public protocol PostgresArrayElement: Sendable {
    static var postgresArrayOID: UInt32 { get }
    var postgresArrayText: String { get }
}

extension String: PostgresArrayElement {
    public static var postgresArrayOID: UInt32 { PostgresType.textArray }
    public var postgresArrayText: String { self }
}

extension UUID: PostgresArrayElement {
    public static var postgresArrayOID: UInt32 { PostgresType.uuidArray }
    public var postgresArrayText: String { uuidString.lowercased() }
}

extension Int: PostgresArrayElement {
    public static var postgresArrayOID: UInt32 { PostgresType.int8Array }
    public var postgresArrayText: String { String(self) }
}

/// A JSON document parameter (`jsonb`), from any `Encodable` value or from JSON text.
public struct PostgresJSON: PostgresEncodable {
    public let text: String

    public init(text: String) { self.text = text }

    public init<Value: Encodable>(_ value: Value) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(value)
        self.text = String(decoding: data, as: UTF8.self)
    }

    public func postgresBind() -> PostgresBind { .text(text, oid: PostgresType.jsonb) }
}
