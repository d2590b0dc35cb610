/// HMAC-SHA256 under the installation's pepper: how API keys are stored and looked up. The
/// pepper itself never leaves this value (nor the key file): callers get digests.
public struct KeyHasher: Sendable {
    private let pepper: [UInt8]

    init(pepper: [UInt8]) { self.pepper = pepper }

    /// The stored form of an API key.
    public func digest(_ secret: String) -> [UInt8] { HMACSHA256.authenticate(Array(secret.utf8), key: pepper) }

    /// Recognises the installation a key file belongs to, without revealing the pepper.
    public var fingerprint: String { HMACSHA256.authenticate(Array("modelgate.pepper.fingerprint".utf8), key: pepper).hexString }
}
