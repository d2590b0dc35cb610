import Foundation

/// The versioned master keys (key-encryption keys) and the API-key pepper.
///
/// They live in a key file (mode 0600, never in PostgreSQL) or in the `MODELGATE_KEYRING`
/// environment variable holding the same JSON:
///
/// ```json
/// {"primary": 2,
///  "pepper": "<base64, 32 bytes>",
///  "keys": [{"version": 1, "retired": true}, {"version": 2, "key": "<base64, 32 bytes>"}]}
/// ```
///
/// The primary version wraps new data keys; every listed, non-retired version unwraps. A retired
/// version keeps its number (so errors can name it) but its key material is gone.
public struct MasterKeys: Sendable {
    public private(set) var primaryVersion: Int
    /// Version -> key bytes; nil for a retired version.
    private var keys: [Int: [UInt8]?]
    /// Server-side secret for hashing API keys (HMAC-SHA256).
    package let pepper: [UInt8]

    /// API keys' digests under this installation's pepper.
    public var keyHasher: KeyHasher { KeyHasher(pepper: pepper) }

    package init(primaryVersion: Int, keys: [Int: [UInt8]?], pepper: [UInt8]) throws {
        guard let primary = keys[primaryVersion], let primaryKey = primary, primaryKey.count == 32 else {
            throw KeyringError.invalidKeyFile("the primary version \(primaryVersion) must be listed with a 32-byte key")
        }
        for (version, key) in keys {
            guard version > 0 else { throw KeyringError.invalidKeyFile("key versions start at 1") }
            if let key, key.count != 32 { throw KeyringError.invalidKeyFile("key version \(version) is not 32 bytes") }
        }
        guard pepper.count >= 32 else { throw KeyringError.invalidKeyFile("the pepper must be at least 32 bytes") }
        self.primaryVersion = primaryVersion
        self.keys = keys
        self.pepper = pepper
    }

    /// A fresh key set: version 1 and a random pepper.
    public static func generate() throws -> MasterKeys {
        try MasterKeys(primaryVersion: 1, keys: [1: try SecureRandom.bytes(32)], pepper: try SecureRandom.bytes(32))
    }

    /// All versions, ascending, with whether each is retired.
    public var versions: [(version: Int, retired: Bool)] {
        keys.keys.sorted().map { ($0, keys[$0].map { $0 == nil } ?? true) }
    }

    public func isRetired(_ version: Int) -> Bool { keys[version].map { $0 == nil } ?? false }
    public func knows(_ version: Int) -> Bool { keys[version] != nil }

    /// Adds a new random primary version (one more than the highest ever used).
    public mutating func addPrimary() throws -> Int {
        let version = (keys.keys.max() ?? 0) + 1
        keys[version] = .some(try SecureRandom.bytes(32))
        primaryVersion = version
        return version
    }

    /// Destroys a version's key material. The primary cannot be retired.
    public mutating func retire(_ version: Int) throws {
        guard version != primaryVersion else { throw KeyringError.cannotRetirePrimary(version) }
        guard keys[version] != nil else { throw KeyringError.unknownMasterKey(version) }
        keys[version] = .some(nil)
    }

    // MARK: Wrapping data keys

    /// Wraps a data key under the primary master key; `binding` names what it belongs to
    /// (tenant and data-key version) and must be presented again to unwrap.
    package func wrap(_ dataKey: [UInt8], binding: String) throws -> (masterVersion: Int, wrapped: [UInt8]) {
        guard let primary = keys[primaryVersion], let key = primary else { throw KeyringError.unknownMasterKey(primaryVersion) }
        return (primaryVersion, try AES256GCM.seal(dataKey, key: key, associatedData: Self.aad(binding, primaryVersion)))
    }

    package func unwrap(_ wrapped: [UInt8], masterVersion: Int, binding: String) throws -> [UInt8] {
        guard let entry = keys[masterVersion] else { throw KeyringError.unknownMasterKey(masterVersion) }
        guard let key = entry else { throw KeyringError.retiredMasterKey(masterVersion) }
        do {
            return try AES256GCM.open(wrapped, key: key, associatedData: Self.aad(binding, masterVersion))
        } catch CryptoError.authenticationFailed {
            throw KeyringError.tampered("wrapped data key for \(binding)")
        }
    }

    private static func aad(_ binding: String, _ version: Int) -> [UInt8] {
        Array("modelgate.dek.v1|\(binding)|kek:\(version)".utf8)
    }

    // MARK: Key file

    struct FileFormat: Codable {
        struct Entry: Codable {
            var version: Int
            var key: String?
            var retired: Bool?
        }
        var primary: Int
        var pepper: String
        var keys: [Entry]
    }

    /// Parses the JSON form (the key file's content, or `MODELGATE_KEYRING`).
    public static func parse(_ data: Data, source: String) throws -> MasterKeys {
        let format: FileFormat
        do {
            format = try JSONDecoder().decode(FileFormat.self, from: data)
        } catch {
            throw KeyringError.invalidKeyFile("\(source) is not a key file (expected JSON with primary, pepper, keys)")
        }
        var keys: [Int: [UInt8]?] = [:]
        for entry in format.keys {
            guard keys[entry.version] == nil else { throw KeyringError.invalidKeyFile("\(source) lists version \(entry.version) twice") }
            if entry.retired == true {
                keys[entry.version] = .some(nil)
            } else {
                guard let text = entry.key, let bytes = Data(base64Encoded: text) else {
                    throw KeyringError.invalidKeyFile("\(source): version \(entry.version) has no valid base64 key")
                }
                keys[entry.version] = .some(Array(bytes))
            }
        }
        guard let pepper = Data(base64Encoded: format.pepper) else {
            throw KeyringError.invalidKeyFile("\(source): pepper is not base64")
        }
        do {
            return try MasterKeys(primaryVersion: format.primary, keys: keys, pepper: Array(pepper))
        } catch KeyringError.invalidKeyFile(let why) {
            throw KeyringError.invalidKeyFile("\(source): \(why)")
        }
    }

    public func serialized() throws -> Data {
        let entries = keys.keys.sorted().map { version -> FileFormat.Entry in
            if let entry = keys[version], let key = entry {
                return FileFormat.Entry(version: version, key: Data(key).base64EncodedString(), retired: nil)
            }
            return FileFormat.Entry(version: version, key: nil, retired: true)
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(FileFormat(primary: primaryVersion, pepper: Data(pepper).base64EncodedString(), keys: entries))
    }

    /// Loads a key file, refusing one that group or others can read.
    public static func load(file path: String) throws -> MasterKeys {
        var info = stat()
        guard stat(path, &info) == 0 else { throw KeyringError.missingKeyFile(path) }
        let mode = info.st_mode & 0o777
        if mode & 0o077 != 0 {
            throw KeyringError.insecureKeyFile(path: path, mode: String(mode, radix: 8))
        }
        guard let data = FileManager.default.contents(atPath: path) else { throw KeyringError.missingKeyFile(path) }
        return try parse(data, source: path)
    }

    /// Writes the key file atomically (temporary file + rename) with mode 0600.
    public func save(file path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        let temporary = path + ".tmp-\(getpid())"
        let data = try serialized()
        let descriptor = open(temporary, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw KeyringError.invalidKeyFile("cannot write \(temporary): \(String(cString: strerror(errno)))") }
        let written = data.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        let synced = fsync(descriptor)
        close(descriptor)
        guard written == data.count, synced == 0 else {
            unlink(temporary)
            throw KeyringError.invalidKeyFile("cannot write \(temporary)")
        }
        guard rename(temporary, path) == 0 else {
            unlink(temporary)
            throw KeyringError.invalidKeyFile("cannot replace \(path): \(String(cString: strerror(errno)))")
        }
    }
}

/// Key-management errors. None carries key material.
public enum KeyringError: Error, Equatable, Sendable, CustomStringConvertible {
    case missingKeyFile(String)
    case insecureKeyFile(path: String, mode: String)
    case invalidKeyFile(String)
    case unknownMasterKey(Int)
    case retiredMasterKey(Int)
    case cannotRetirePrimary(Int)
    /// The tenant has no data key (never created, or shredded with the tenant).
    case noDataKey(tenant: UUID, version: Int?)
    /// A sealed value or wrapped key failed authentication: altered, moved or wrong tenant.
    case tampered(String)
    case malformedSealedValue(String)

    public var description: String {
        switch self {
        case .missingKeyFile(let path): "key file \(path) does not exist"
        case .insecureKeyFile(let path, let mode):
            "key file \(path) has mode \(mode): group or others can read it; fix with: chmod 600 \(path)"
        case .invalidKeyFile(let why): "invalid key file: \(why)"
        case .unknownMasterKey(let version): "master key version \(version) is not in the key file"
        case .retiredMasterKey(let version): "master key version \(version) is retired"
        case .cannotRetirePrimary(let version): "master key version \(version) is the primary; rotate first"
        case .noDataKey(let tenant, let version):
            "tenant \(tenant) has no data key\(version.map { " version \($0)" } ?? "") (deleted tenants are crypto-shredded)"
        case .tampered(let what): "\(what) failed authentication: altered, moved to another row, or sealed for another tenant"
        case .malformedSealedValue(let why): "malformed sealed value: \(why)"
        }
    }
}
