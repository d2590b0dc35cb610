import Foundation

/// `timestamptz` in PostgreSQL's ISO text form. Connections run with `TimeZone=UTC` and
/// `DateStyle=ISO`, so the server writes `2026-11-29 02:36:11.123456+00`.
enum PostgresTimestamp {
    /// Within PostgreSQL's range (4714 BC to the end of 294276), in seconds from 1970: a time
    /// past it, or not finite, is sent as `infinity` or `-infinity` (it trapped on the
    /// conversion to whole seconds).
    static let range = -210_000_000_000.0..<9_224_318_016_000.0

    static func format(_ date: Date) -> String {
        let interval = date.timeIntervalSince1970
        guard range.contains(interval) else { return interval > 0 ? "infinity" : "-infinity" }
        let totalMicros = (interval * 1_000_000).rounded()
        let seconds = Int(floor(totalMicros / 1_000_000))
        let micros = Int(totalMicros - Double(seconds) * 1_000_000)
        var parts = tm()
        var time = time_t(seconds)
        gmtime_r(&time, &parts)
        let year = Int(parts.tm_year) + 1900
        // Year 0 and before are 1 BC and before.
        return String(
            format: "%04d-%02d-%02d %02d:%02d:%02d.%06d+00%@",
            year > 0 ? year : 1 - year, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
            Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), micros, year > 0 ? "" : " BC")
    }

    /// Parses `YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM[:SS]]][ BC]` (years of 4 to 6 digits, as
    /// the server writes them); also `infinity`/`-infinity`.
    static func parse(_ text: String) -> Date? {
        if text == "infinity" { return .distantFuture }
        if text == "-infinity" { return .distantPast }
        let era = text.hasSuffix(" BC") ? -1 : 1
        let bytes = Array((era < 0 ? text.dropLast(3) : text[...]).utf8)
        var index = 0
        func number(_ digits: Int) -> Int? {
            guard index + digits <= bytes.count else { return nil }
            var value = 0
            for offset in 0..<digits {
                let byte = bytes[index + offset]
                guard byte >= 48 && byte <= 57 else { return nil }
                value = value * 10 + Int(byte - 48)
            }
            index += digits
            return value
        }
        func expect(_ byte: UInt8) -> Bool {
            guard index < bytes.count, bytes[index] == byte else { return false }
            index += 1
            return true
        }
        var yearDigits = 0
        while yearDigits < bytes.count, bytes[yearDigits] >= 48, bytes[yearDigits] <= 57 { yearDigits += 1 }
        guard (4...6).contains(yearDigits), let written = number(yearDigits), expect(45), let month = number(2), expect(45), let day = number(2),
            expect(32) || expect(84), let hour = number(2), expect(58), let minute = number(2), expect(58),
            let second = number(2)
        else { return nil }
        let year = era > 0 ? written : 1 - written
        var micros = 0
        if expect(46) {
            var digits = 0
            while index < bytes.count, bytes[index] >= 48, bytes[index] <= 57 {
                if digits < 6 { micros = micros * 10 + Int(bytes[index] - 48) }
                digits += 1
                index += 1
            }
            while digits < 6 {
                micros *= 10
                digits += 1
            }
        }
        var offsetSeconds = 0
        if index < bytes.count {
            let sign: Int
            if expect(43) { sign = 1 } else if expect(45) { sign = -1 } else { return nil }
            guard let offsetHours = number(2) else { return nil }
            offsetSeconds = offsetHours * 3600
            if expect(58), let offsetMinutes = number(2) {
                offsetSeconds += offsetMinutes * 60
                if expect(58), let extra = number(2) { offsetSeconds += extra }
            }
            offsetSeconds *= sign
        }
        guard index == bytes.count else { return nil }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month - 1)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour)
        parts.tm_min = Int32(minute)
        parts.tm_sec = Int32(second)
        let epochSeconds = Int(timegm(&parts)) - offsetSeconds
        return Date(timeIntervalSince1970: Double(epochSeconds) + Double(micros) / 1_000_000)
    }
}

/// One-dimensional array literals: `{a,"b c",NULL}`.
enum PostgresArrayLiteral {
    static func quote(_ element: String) -> String {
        var out = "\""
        for character in element.unicodeScalars {
            if character == "\"" || character == "\\" { out.append("\\") }
            out.unicodeScalars.append(character)
        }
        out.append("\"")
        return out
    }

    /// Elements of a one-dimensional array; `nil` for NULL elements.
    static func parse(_ text: String) -> [String?]? {
        let scalars = Array(text.unicodeScalars)
        guard scalars.first == "{", scalars.last == "}" else { return nil }
        var elements: [String?] = []
        var index = 1
        let end = scalars.count - 1
        if index == end { return [] }
        while index <= end {
            if scalars[index] == "\"" {
                index += 1
                var value = String.UnicodeScalarView()
                while index < end, scalars[index] != "\"" {
                    if scalars[index] == "\\" { index += 1 }
                    guard index < end else { return nil }
                    value.append(scalars[index])
                    index += 1
                }
                guard index < end else { return nil }
                index += 1  // closing quote
                elements.append(String(value))
            } else {
                var value = String.UnicodeScalarView()
                while index < end, scalars[index] != "," {
                    value.append(scalars[index])
                    index += 1
                }
                let string = String(value)
                elements.append(string == "NULL" ? nil : string)
            }
            guard index <= end else { break }
            if index == end { break }
            guard scalars[index] == "," else { return nil }
            index += 1
        }
        return elements
    }
}

/// `bytea` hex output: `\x0a1b...`.
enum PostgresByteaText {
    static func parse(_ text: String) -> [UInt8]? {
        let bytes = Array(text.utf8)
        guard bytes.count >= 2, bytes[0] == 92, bytes[1] == 120, bytes.count % 2 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity((bytes.count - 2) / 2)
        var index = 2
        func nibble(_ byte: UInt8) -> UInt8? {
            switch byte {
            case 48...57: return byte - 48
            case 97...102: return byte - 87
            case 65...70: return byte - 55
            default: return nil
            }
        }
        while index < bytes.count {
            guard let high = nibble(bytes[index]), let low = nibble(bytes[index + 1]) else { return nil }
            out.append(high << 4 | low)
            index += 2
        }
        return out
    }
}
