/// Errors from the encryption layer. Messages never contain key material or plaintext.
public enum CryptoError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Authentication failed: the ciphertext, its tag, its associated data or the key is wrong.
    case authenticationFailed
    /// The input is not a well-formed ciphertext (too short, unknown format version).
    case malformedCiphertext(String)
    /// A key has the wrong length or is otherwise unusable.
    case invalidKey(String)
    /// The operating system's random generator or libcrypto failed.
    case libraryFailure(String)

    public var description: String {
        switch self {
        case .authenticationFailed: "decryption failed: the data was altered, moved, or sealed under another key"
        case .malformedCiphertext(let why): "malformed ciphertext: \(why)"
        case .invalidKey(let why): "invalid key: \(why)"
        case .libraryFailure(let what): "libcrypto failure: \(what)"
        }
    }
}
