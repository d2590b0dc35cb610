/// Turns generated token bytes into text deltas that never split a UTF-8 character and never
/// show any part of a stop sequence: text that could still become a stop match is held back.
struct TextAssembler {
    private let stops: [[UInt8]]
    private var incomplete: [UInt8] = []
    private var held: [UInt8] = []

    init(stops: [String]) {
        self.stops = stops.map { Array($0.utf8) }
    }

    /// Adds a token's bytes; returns the text that may be shown now, and whether a stop
    /// sequence was completed (generation must end; the stop text itself is never shown).
    mutating func append(_ bytes: [UInt8]) -> (text: String, stopped: Bool) {
        incomplete += bytes
        let complete = Self.completePrefixLength(incomplete)
        held += incomplete[..<complete]
        incomplete.removeFirst(complete)

        var earliest: Int?
        for stop in stops {
            if let position = Self.find(stop, in: held), position < (earliest ?? .max) { earliest = position }
        }
        if let earliest {
            let text = String(decoding: held[..<earliest], as: UTF8.self)
            held = []
            incomplete = []
            return (text, true)
        }
        var keep = 0
        for stop in stops {
            var length = min(stop.count - 1, held.count)
            while length > 0 {
                if held.suffix(length).elementsEqual(stop.prefix(length)) { break }
                length -= 1
            }
            keep = max(keep, length)
        }
        let shown = held.count - keep
        let text = String(decoding: held[..<shown], as: UTF8.self)
        held.removeFirst(shown)
        return (text, false)
    }

    /// Everything still held (at the end of generation). Dangling partial characters become U+FFFD.
    mutating func flush() -> String {
        let text = String(decoding: held + incomplete, as: UTF8.self)
        held = []
        incomplete = []
        return text
    }

    /// Length of the longest prefix that does not end inside a multi-byte character.
    static func completePrefixLength(_ bytes: [UInt8]) -> Int {
        var index = bytes.count - 1
        var steps = 0
        while index >= 0, steps < 4 {
            let byte = bytes[index]
            if byte & 0xC0 != 0x80 {
                let needed: Int
                if byte & 0x80 == 0 { needed = 1 }
                else if byte & 0xE0 == 0xC0 { needed = 2 }
                else if byte & 0xF0 == 0xE0 { needed = 3 }
                else if byte & 0xF8 == 0xF0 { needed = 4 }
                else { needed = 1 }  // invalid lead byte: let the decoder replace it
                return bytes.count - index >= needed ? bytes.count : index
            }
            index -= 1
            steps += 1
        }
        return bytes.count  // only continuation bytes: invalid, pass through
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard !needle.isEmpty, haystack.count >= needle.count else { return nil }
        for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
            if haystack[start..<(start + needle.count)].elementsEqual(needle) { return start }
        }
        return nil
    }
}
