import Foundation

/// JSON decoding that refuses what it does not understand: every member of every object in
/// the body must be read by the type it decodes into, or the body is refused naming the
/// member (`messages[0].nmae`). `JSONDecoder` alone ignores unknown members, and a request
/// that is silently half-understood is worse than one refused — `"models"` instead of
/// `"allowed_models"` once created a key that could use every model.
///
/// It works for any `Decodable`, synthesised or hand-written: the decoder is wrapped, each
/// object's members are noted as it is opened, and each member read is ticked off.
enum StrictJSON {
    /// Object members of a decoded body that its type did not read, as paths (`a.b[0].c`).
    struct UnknownMembers: Error, Equatable {
        var paths: [String]
    }

    static func decode<Value: Decodable>(_ type: Value.Type, from data: Data, decoder: JSONDecoder = JSONDecoder()) throws -> Value {
        let ledger = Ledger()
        decoder.userInfo[Ledger.userInfoKey] = ledger
        let value = try decoder.decode(Root<Value>.self, from: data).value
        let unknown = ledger.unread
        if !unknown.isEmpty { throw UnknownMembers(paths: unknown) }
        return value
    }

    /// The type JSONDecoder decodes, so that the value's own decoding sees a wrapped decoder.
    private struct Root<Wrapped: Decodable>: Decodable {
        var value: Wrapped
        init(from decoder: any Decoder) throws {
            guard let ledger = decoder.userInfo[Ledger.userInfoKey] as? Ledger else {
                value = try Wrapped(from: decoder)
                return
            }
            value = try Wrapped(from: Strict(base: decoder, ledger: ledger))
        }
    }

    /// Members seen and members read, per object path. Used by one decode on one thread.
    final class Ledger: @unchecked Sendable {
        static let userInfoKey = CodingUserInfoKey(rawValue: "modelgate.strict-json")!  // safe: constant, non-empty
        private var present: [String: Set<String>] = [:]
        private var read: [String: Set<String>] = [:]

        func opened(_ path: String, members: @autoclosure () throws -> [String]) rethrows {
            if present[path] == nil { present[path] = Set(try members()) }
        }

        func read(_ member: String, at path: String) { read[path, default: []].insert(member) }

        var unread: [String] {
            present.flatMap { path, members in
                members.subtracting(read[path] ?? []).map { path.isEmpty ? $0 : path + "." + $0 }
            }.sorted()
        }
    }

    static func path(_ codingPath: [any CodingKey]) -> String {
        var text = ""
        for key in codingPath {
            if let index = key.intValue, key.stringValue == "Index \(index)" || key.stringValue == String(index) {
                text += "[\(index)]"
            } else {
                text += (text.isEmpty ? "" : ".") + key.stringValue
            }
        }
        return text
    }

    struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int?
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) {
            self.stringValue = String(intValue)
            self.intValue = intValue
        }
    }

    /// Values decoded by the base decoder as they are: scalars, and the types whose decoding
    /// strategy (dates, data) lives inside JSONDecoder.
    static func isLeaf<T>(_ type: T.Type) -> Bool {
        type is any StrictJSONLeaf.Type
    }

    struct Strict: Decoder {
        let base: any Decoder
        let ledger: Ledger

        var codingPath: [any CodingKey] { base.codingPath }
        var userInfo: [CodingUserInfoKey: Any] { base.userInfo }

        func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
            let container = try base.container(keyedBy: type)
            let path = StrictJSON.path(codingPath)
            try ledger.opened(path, members: try base.container(keyedBy: AnyKey.self).allKeys.map(\.stringValue))
            return KeyedDecodingContainer(Keyed(base: container, ledger: ledger, path: path))
        }

        func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
            Unkeyed(base: try base.unkeyedContainer(), ledger: ledger)
        }

        func singleValueContainer() throws -> any SingleValueDecodingContainer {
            Single(base: try base.singleValueContainer(), decoder: self)
        }
    }

    struct Keyed<Key: CodingKey>: KeyedDecodingContainerProtocol {
        let base: KeyedDecodingContainer<Key>
        let ledger: Ledger
        let path: String

        var codingPath: [any CodingKey] { base.codingPath }
        var allKeys: [Key] { base.allKeys }

        func contains(_ key: Key) -> Bool { base.contains(key) }

        private func note(_ key: Key) { ledger.read(key.stringValue, at: path) }

        func decodeNil(forKey key: Key) throws -> Bool {
            note(key)
            return try base.decodeNil(forKey: key)
        }

        func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { note(key); return try base.decode(type, forKey: key) }
        func decode(_ type: String.Type, forKey key: Key) throws -> String { note(key); return try base.decode(type, forKey: key) }
        func decode(_ type: Double.Type, forKey key: Key) throws -> Double { note(key); return try base.decode(type, forKey: key) }
        func decode(_ type: Float.Type, forKey key: Key) throws -> Float { note(key); return try base.decode(type, forKey: key) }
        func decode(_ type: Int.Type, forKey key: Key) throws -> Int { note(key); return try base.decode(type, forKey: key) }
        func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { note(key); return try base.decode(type, forKey: key) }
        func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { note(key); return try base.decode(type, forKey: key) }
        func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { note(key); return try base.decode(type, forKey: key) }
        func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { note(key); return try base.decode(type, forKey: key) }
        func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { note(key); return try base.decode(type, forKey: key) }
        func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { note(key); return try base.decode(type, forKey: key) }
        func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { note(key); return try base.decode(type, forKey: key) }
        func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { note(key); return try base.decode(type, forKey: key) }
        func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { note(key); return try base.decode(type, forKey: key) }

        func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
            note(key)
            if StrictJSON.isLeaf(type) { return try base.decode(type, forKey: key) }
            guard base.contains(key) else {
                throw DecodingError.keyNotFound(key, .init(codingPath: codingPath, debugDescription: "No value associated with key \(key.stringValue)."))
            }
            return try T(from: Strict(base: try base.superDecoder(forKey: key), ledger: ledger))
        }

        func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
            note(key)
            return try Strict(base: try base.superDecoder(forKey: key), ledger: ledger).container(keyedBy: type)
        }

        func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
            note(key)
            return Unkeyed(base: try base.nestedUnkeyedContainer(forKey: key), ledger: ledger)
        }

        func superDecoder() throws -> any Decoder { Strict(base: try base.superDecoder(), ledger: ledger) }

        func superDecoder(forKey key: Key) throws -> any Decoder {
            note(key)
            return Strict(base: try base.superDecoder(forKey: key), ledger: ledger)
        }
    }

    struct Unkeyed: UnkeyedDecodingContainer {
        var base: any UnkeyedDecodingContainer
        let ledger: Ledger

        var codingPath: [any CodingKey] { base.codingPath }
        var count: Int? { base.count }
        var isAtEnd: Bool { base.isAtEnd }
        var currentIndex: Int { base.currentIndex }

        mutating func decodeNil() throws -> Bool { try base.decodeNil() }
        mutating func decode(_ type: Bool.Type) throws -> Bool { try base.decode(type) }
        mutating func decode(_ type: String.Type) throws -> String { try base.decode(type) }
        mutating func decode(_ type: Double.Type) throws -> Double { try base.decode(type) }
        mutating func decode(_ type: Float.Type) throws -> Float { try base.decode(type) }
        mutating func decode(_ type: Int.Type) throws -> Int { try base.decode(type) }
        mutating func decode(_ type: Int8.Type) throws -> Int8 { try base.decode(type) }
        mutating func decode(_ type: Int16.Type) throws -> Int16 { try base.decode(type) }
        mutating func decode(_ type: Int32.Type) throws -> Int32 { try base.decode(type) }
        mutating func decode(_ type: Int64.Type) throws -> Int64 { try base.decode(type) }
        mutating func decode(_ type: UInt.Type) throws -> UInt { try base.decode(type) }
        mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try base.decode(type) }
        mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try base.decode(type) }
        mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try base.decode(type) }
        mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try base.decode(type) }

        mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
            if StrictJSON.isLeaf(type) { return try base.decode(type) }
            return try T(from: Strict(base: try base.superDecoder(), ledger: ledger))
        }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
            try Strict(base: try base.superDecoder(), ledger: ledger).container(keyedBy: type)
        }

        mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
            Unkeyed(base: try base.nestedUnkeyedContainer(), ledger: ledger)
        }

        mutating func superDecoder() throws -> any Decoder { Strict(base: try base.superDecoder(), ledger: ledger) }
    }

    struct Single: SingleValueDecodingContainer {
        let base: any SingleValueDecodingContainer
        let decoder: Strict

        var codingPath: [any CodingKey] { base.codingPath }

        func decodeNil() -> Bool { base.decodeNil() }
        func decode(_ type: Bool.Type) throws -> Bool { try base.decode(type) }
        func decode(_ type: String.Type) throws -> String { try base.decode(type) }
        func decode(_ type: Double.Type) throws -> Double { try base.decode(type) }
        func decode(_ type: Float.Type) throws -> Float { try base.decode(type) }
        func decode(_ type: Int.Type) throws -> Int { try base.decode(type) }
        func decode(_ type: Int8.Type) throws -> Int8 { try base.decode(type) }
        func decode(_ type: Int16.Type) throws -> Int16 { try base.decode(type) }
        func decode(_ type: Int32.Type) throws -> Int32 { try base.decode(type) }
        func decode(_ type: Int64.Type) throws -> Int64 { try base.decode(type) }
        func decode(_ type: UInt.Type) throws -> UInt { try base.decode(type) }
        func decode(_ type: UInt8.Type) throws -> UInt8 { try base.decode(type) }
        func decode(_ type: UInt16.Type) throws -> UInt16 { try base.decode(type) }
        func decode(_ type: UInt32.Type) throws -> UInt32 { try base.decode(type) }
        func decode(_ type: UInt64.Type) throws -> UInt64 { try base.decode(type) }

        func decode<T: Decodable>(_ type: T.Type) throws -> T {
            if StrictJSON.isLeaf(type) { return try base.decode(type) }
            return try T(from: decoder)
        }
    }
}

/// Types the strict decoder hands to JSONDecoder unwrapped.
protocol StrictJSONLeaf {}
extension Bool: StrictJSONLeaf {}
extension String: StrictJSONLeaf {}
extension Double: StrictJSONLeaf {}
extension Float: StrictJSONLeaf {}
extension Int: StrictJSONLeaf {}
extension Int8: StrictJSONLeaf {}
extension Int16: StrictJSONLeaf {}
extension Int32: StrictJSONLeaf {}
extension Int64: StrictJSONLeaf {}
extension UInt: StrictJSONLeaf {}
extension UInt8: StrictJSONLeaf {}
extension UInt16: StrictJSONLeaf {}
extension UInt32: StrictJSONLeaf {}
extension UInt64: StrictJSONLeaf {}
extension Date: StrictJSONLeaf {}
extension Data: StrictJSONLeaf {}
extension URL: StrictJSONLeaf {}
extension Decimal: StrictJSONLeaf {}
