import Encryption

/// The API key format: `mgk_` + 40 base62 characters of CSPRNG entropy (238 bits) + a
/// 6-character base62 CRC-32 checksum of everything before it. The checksum lets a typo be
/// rejected without touching the database and lets secret scanners recognise leaked keys.
public enum APIKeyFormat {
    public static let marker = "mgk_"
    static let entropyLength = 40
    static let checksumLength = 6
    public static let length = marker.count + entropyLength + checksumLength
    static let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)

    /// A new random key.
    public static func generate() throws -> String {
        var body = marker
        for _ in 0..<entropyLength {
            body.unicodeScalars.append(Unicode.Scalar(alphabet[Int(try SecureRandom.uniform(62))]))
        }
        return body + checksum(of: body)
    }

    /// True when `key` has the right shape and checksum.
    public static func isWellFormed(_ key: String) -> Bool {
        let bytes = Array(key.utf8)
        guard bytes.count == length, key.hasPrefix(marker) else { return false }
        guard bytes.dropFirst(marker.count).allSatisfy({ alphabet.contains($0) }) else { return false }
        let body = String(decoding: bytes.prefix(length - checksumLength), as: UTF8.self)
        let check = String(decoding: bytes.suffix(checksumLength), as: UTF8.self)
        return checksum(of: body) == check
    }

    /// The non-secret display prefix: `mgk_` and the first 8 characters.
    public static func displayPrefix(_ key: String) -> String {
        String(key.prefix(marker.count + displayPrefixLength))
    }

    /// How many characters after `mgk_` a display prefix shows.
    public static let displayPrefixLength = 8

    static func checksum(of body: String) -> String {
        var value = CRC32.checksum(Array(body.utf8))
        var digits = [UInt8](repeating: alphabet[0], count: checksumLength)
        for index in stride(from: checksumLength - 1, through: 0, by: -1) {
            digits[index] = alphabet[Int(value % 62)]
            value /= 62
        }
        return String(decoding: digits, as: UTF8.self)
    }
}

