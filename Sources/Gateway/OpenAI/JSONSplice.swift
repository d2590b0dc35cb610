/// Edits the top-level members of a JSON object in its bytes, leaving every other byte as it
/// came: what passes an upstream's answers on (the model's name replaced, a usage member
/// dropped) without decoding and re-encoding the whole document, which on Linux costs more than
/// everything else the relay does (Foundation formats every number through printf).
///
/// The bytes must already be known to hold one valid JSON object (the caller parsed them);
/// anything the scanner does not recognise makes it return nil, and the caller re-encodes.
struct JSONSplice {
    /// Each top-level member: its key (as written, without escapes decoded), the range of the
    /// whole member (`"key": value`) and of its value.
    struct Member {
        var key: [UInt8]
        var member: Range<Int>
        var value: Range<Int>
    }

    let bytes: [UInt8]
    let members: [Member]
    /// The index of the object's closing brace.
    let end: Int

    init?(_ bytes: [UInt8]) {
        self.bytes = bytes
        var index = 0
        func skipSpace() {
            while index < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[index]) { index += 1 }
        }
        /// Moves past the string starting at `index` (its opening quote).
        func skipString() -> Bool {
            index += 1
            while index < bytes.count {
                switch bytes[index] {
                case UInt8(ascii: "\\"): index += 2
                case UInt8(ascii: "\""):
                    index += 1
                    return true
                default: index += 1
                }
            }
            return false
        }
        /// Moves past the value starting at `index`.
        func skipValue() -> Bool {
            guard index < bytes.count else { return false }
            switch bytes[index] {
            case UInt8(ascii: "\""):
                return skipString()
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                var depth = 0
                while index < bytes.count {
                    switch bytes[index] {
                    case UInt8(ascii: "\""):
                        guard skipString() else { return false }
                        continue
                    case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                    case UInt8(ascii: "}"), UInt8(ascii: "]"):
                        depth -= 1
                        if depth == 0 {
                            index += 1
                            return true
                        }
                    default: break
                    }
                    index += 1
                }
                return false
            default:
                // A number, true, false or null: up to the next delimiter.
                let start = index
                while index < bytes.count, ![UInt8(ascii: ","), UInt8(ascii: "}"), UInt8(ascii: "]"), 0x20, 0x09, 0x0A, 0x0D].contains(bytes[index]) {
                    index += 1
                }
                return index > start
            }
        }
        skipSpace()
        guard index < bytes.count, bytes[index] == UInt8(ascii: "{") else { return nil }
        index += 1
        var members: [Member] = []
        skipSpace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
            self.members = []
            end = index
            return
        }
        while true {
            skipSpace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { return nil }
            let keyStart = index
            guard skipString() else { return nil }
            let key = Array(bytes[(keyStart + 1)..<(index - 1)])
            skipSpace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { return nil }
            index += 1
            skipSpace()
            let valueStart = index
            guard skipValue() else { return nil }
            members.append(Member(key: key, member: keyStart..<index, value: valueStart..<index))
            skipSpace()
            guard index < bytes.count else { return nil }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
                continue
            }
            guard bytes[index] == UInt8(ascii: "}") else { return nil }
            end = index
            self.members = members
            return
        }
    }

    /// The bytes with `set`'s members' values replaced (or added at the end when absent) and
    /// `remove`'s members taken out (a member in both is set); what separates the members that
    /// stay is kept as it was.
    /// Values are JSON text.
    func edited(set: [(key: String, json: [UInt8])] = [], remove: Set<String> = []) -> [UInt8] {
        var out = Array(bytes[..<(members.first?.member.lowerBound ?? end)])
        out.reserveCapacity(bytes.count + set.reduce(0) { $0 + $1.json.count + $1.key.utf8.count + 4 })
        var previous: Int?
        var present = Set<String>()
        for (index, member) in members.enumerated() {
            let key = String(decoding: member.key, as: UTF8.self)
            present.insert(key)
            guard !remove.contains(key) || set.contains(where: { $0.key == key }) else { continue }
            if let previous {
                // The original comma and spacing between neighbours; a plain comma across a gap.
                if previous == index - 1 { out += bytes[members[previous].member.upperBound..<member.member.lowerBound] } else { out.append(UInt8(ascii: ",")) }
            }
            if let replacement = set.last(where: { $0.key == key }) {
                out += bytes[member.member.lowerBound..<member.value.lowerBound]
                out += replacement.json
            } else {
                out += bytes[member.member]
            }
            previous = index
        }
        var trailing: ArraySlice<UInt8> = []
        if let previous, previous == members.count - 1 { trailing = bytes[members[previous].member.upperBound..<end] }
        for (key, json) in set where !present.contains(key) {
            if previous != nil { out.append(UInt8(ascii: ",")) }
            out += Self.string(key) + [UInt8(ascii: ":")] + json
            previous = previous ?? -1
        }
        out += trailing
        out += bytes[end...]
        return out
    }

    /// `text` as the inside of a JSON string.
    static func escaped(_ text: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out += Array("\\\"".utf8)
            case UInt8(ascii: "\\"): out += Array("\\\\".utf8)
            case 0x0A: out += Array("\\n".utf8)
            case 0x0D: out += Array("\\r".utf8)
            case 0x09: out += Array("\\t".utf8)
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out += Array("\\u00".utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
            default: out.append(byte)
            }
        }
        return out
    }

    /// `text` as a JSON string.
    static func string(_ text: String) -> [UInt8] { [UInt8(ascii: "\"")] + escaped(text) + [UInt8(ascii: "\"")] }
}
