import Foundation

/// JSON with every object member kept as written, in order. Foundation's parsers key objects
/// by Swift `String`, whose equality is Unicode canonical equivalence: a vocabulary with both
/// `"ά"` (U+1F71) and `"ά"` (U+03AC) — Llama 2's has — loses one of them, and the survivor
/// answers for both. Tokenizer files are read with this instead.
package enum LiteralJSON: Sendable {
    case string(String)
    case number(Double)
    case bool(Bool)
    case null
    case array([LiteralJSON])
    case object([(key: String, value: LiteralJSON)])

    package struct SyntaxError: Error, CustomStringConvertible {
        package var offset: Int
        package var reason: String
        package var description: String { "invalid JSON at byte \(offset): \(reason)" }
    }

    package static func parse(_ bytes: [UInt8]) throws -> LiteralJSON {
        try bytes.withUnsafeBufferPointer { buffer in
            var parser = Parser(bytes: buffer)
            let value = try parser.value(depth: 0)
            parser.skipSpace()
            guard parser.offset == buffer.count else { throw SyntaxError(offset: parser.offset, reason: "text after the value") }
            return value
        }
    }

    /// The first member named `key` (compared byte for byte).
    package subscript(key: String) -> LiteralJSON? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.key.utf8.elementsEqual(key.utf8) }?.value
    }

    package var string: String? { if case .string(let value) = self { value } else { nil } }
    package var bool: Bool? { if case .bool(let value) = self { value } else { nil } }
    package var array: [LiteralJSON]? { if case .array(let value) = self { value } else { nil } }
    package var members: [(key: String, value: LiteralJSON)]? { if case .object(let value) = self { value } else { nil } }
    package var isNull: Bool { if case .null = self { true } else { false } }
    /// A whole number that fits an `Int`.
    package var int: Int? { if case .number(let value) = self { Int(exactly: value) } else { nil } }

    private struct Parser {
        let bytes: UnsafeBufferPointer<UInt8>
        var offset = 0

        init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

        func fail(_ reason: String) -> SyntaxError { SyntaxError(offset: offset, reason: reason) }

        mutating func skipSpace() {
            while offset < bytes.count {
                switch bytes[offset] {
                case 0x20, 0x09, 0x0A, 0x0D: offset += 1
                default: return
                }
            }
        }

        mutating func literal(_ word: String, _ value: LiteralJSON) throws -> LiteralJSON {
            let utf8 = Array(word.utf8)
            guard bytes.count - offset >= utf8.count, bytes[offset..<(offset + utf8.count)].elementsEqual(utf8) else { throw fail("unexpected token") }
            offset += utf8.count
            return value
        }

        mutating func value(depth: Int) throws -> LiteralJSON {
            guard depth < 128 else { throw fail("nested too deeply") }
            skipSpace()
            guard offset < bytes.count else { throw fail("unexpected end") }
            switch bytes[offset] {
            case UInt8(ascii: "{"):
                offset += 1
                var members: [(key: String, value: LiteralJSON)] = []
                skipSpace()
                if offset < bytes.count, bytes[offset] == UInt8(ascii: "}") {
                    offset += 1
                    return .object(members)
                }
                while true {
                    skipSpace()
                    guard offset < bytes.count, bytes[offset] == UInt8(ascii: "\"") else { throw fail("expected a member name") }
                    let key = try string()
                    skipSpace()
                    guard offset < bytes.count, bytes[offset] == UInt8(ascii: ":") else { throw fail("expected ':'") }
                    offset += 1
                    members.append((key, try value(depth: depth + 1)))
                    skipSpace()
                    guard offset < bytes.count else { throw fail("unexpected end") }
                    if bytes[offset] == UInt8(ascii: ",") {
                        offset += 1
                    } else if bytes[offset] == UInt8(ascii: "}") {
                        offset += 1
                        return .object(members)
                    } else {
                        throw fail("expected ',' or '}'")
                    }
                }
            case UInt8(ascii: "["):
                offset += 1
                var items: [LiteralJSON] = []
                skipSpace()
                if offset < bytes.count, bytes[offset] == UInt8(ascii: "]") {
                    offset += 1
                    return .array(items)
                }
                while true {
                    items.append(try value(depth: depth + 1))
                    skipSpace()
                    guard offset < bytes.count else { throw fail("unexpected end") }
                    if bytes[offset] == UInt8(ascii: ",") {
                        offset += 1
                    } else if bytes[offset] == UInt8(ascii: "]") {
                        offset += 1
                        return .array(items)
                    } else {
                        throw fail("expected ',' or ']'")
                    }
                }
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): return try literal("true", .bool(true))
            case UInt8(ascii: "f"): return try literal("false", .bool(false))
            case UInt8(ascii: "n"): return try literal("null", .null)
            default: return try number()
            }
        }

        mutating func number() throws -> LiteralJSON {
            let start = offset
            while offset < bytes.count, "+-0123456789.eE".utf8.contains(bytes[offset]) { offset += 1 }
            guard offset > start, let value = Double(String(decoding: bytes[start..<offset], as: UTF8.self)) else {
                offset = start
                throw fail("unexpected character")
            }
            return .number(value)
        }

        mutating func hex4() throws -> UInt32 {
            guard bytes.count - offset >= 4, let value = UInt32(String(decoding: bytes[offset..<(offset + 4)], as: UTF8.self), radix: 16) else {
                throw fail("bad \\u escape")
            }
            offset += 4
            return value
        }

        /// A string at `offset` (its opening quote), unescaped; the text is kept as written
        /// (UTF-8 is checked, nothing is normalized).
        mutating func string() throws -> String {
            offset += 1
            var out: [UInt8] = []
            while true {
                guard offset < bytes.count else { throw fail("unterminated string") }
                let byte = bytes[offset]
                offset += 1
                if byte == UInt8(ascii: "\"") { break }
                guard byte == UInt8(ascii: "\\") else {
                    guard byte >= 0x20 else { throw fail("control character in a string") }
                    out.append(byte)
                    continue
                }
                guard offset < bytes.count else { throw fail("unterminated escape") }
                let escape = bytes[offset]
                offset += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(escape)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if scalar >= 0xD800, scalar < 0xDC00, bytes.count - offset >= 6, bytes[offset] == UInt8(ascii: "\\"), bytes[offset + 1] == UInt8(ascii: "u") {
                        offset += 2
                        let low = try hex4()
                        guard low >= 0xDC00, low < 0xE000 else { throw fail("unpaired surrogate") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let value = Unicode.Scalar(scalar) else { throw fail("unpaired surrogate") }
                    out += Array(String(Character(value)).utf8)
                default: throw fail("bad escape")
                }
            }
            guard let text = String(validating: out, as: UTF8.self) else { throw fail("invalid UTF-8 in a string") }
            return text
        }
    }
}
