import Foundation
import Synchronization

/// Where a sealed value lives: its associated data binds it to this exact place, so a value
/// copied to another row, column or tenant no longer opens.
public struct SealContext: Sendable, Hashable {
    public var table: String
    public var column: String
    public var rowID: String

    public init(table: String, column: String, rowID: String) {
        self.table = table
        self.column = column
        self.rowID = rowID
    }
}

/// Ciphertext for a sealed column: `01 | data-key version (4 bytes) | nonce | ciphertext | tag`.
///
/// Only a `TenantCipher` makes one, so plaintext cannot be written where a `SealedValue` is
/// expected by accident.
public struct SealedValue: Sendable, Hashable {
    public let bytes: [UInt8]
    static let formatVersion: UInt8 = 1
    static let headerCount = 5

    fileprivate init(sealing bytes: [UInt8]) { self.bytes = bytes }

    /// Wraps bytes read back from the database (not yet authenticated: `open` does that).
    public init(stored bytes: [UInt8]) throws {
        guard bytes.count >= Self.headerCount + AES256GCM.overhead else {
            throw KeyringError.malformedSealedValue("too short")
        }
        guard bytes[0] == Self.formatVersion else {
            throw KeyringError.malformedSealedValue("unknown format version \(bytes[0])")
        }
        self.bytes = bytes
    }

    /// The tenant data-key version this value was sealed with.
    public var dataKeyVersion: Int {
        Int(bytes[1]) << 24 | Int(bytes[2]) << 16 | Int(bytes[3]) << 8 | Int(bytes[4])
    }
}

/// A data key as stored: wrapped by a master key version.
public struct WrappedDataKey: Sendable, Equatable {
    public var tenantID: UUID
    public var version: Int
    public var masterVersion: Int
    public var wrapped: [UInt8]

    public init(tenantID: UUID, version: Int, masterVersion: Int, wrapped: [UInt8]) {
        self.tenantID = tenantID
        self.version = version
        self.masterVersion = masterVersion
        self.wrapped = wrapped
    }

    static func binding(tenant: UUID, version: Int) -> String {
        "tenant:\(tenant.uuidString.lowercased())|dek:\(version)"
    }
}

/// One tenant's unwrapped data keys: seals with the newest, opens with any.
/// Synchronous, so it can be used inside a database transaction.
public struct TenantCipher: Sendable {
    public let tenantID: UUID
    public let primaryVersion: Int
    private let keys: [Int: [UInt8]]
    /// `modelgate.seal.v1|tenant:<id>|`, computed once: the start of every associated data.
    private let aadPrefix: [UInt8]

    init(tenantID: UUID, keys: [Int: [UInt8]]) throws {
        guard let newest = keys.keys.max() else { throw KeyringError.noDataKey(tenant: tenantID, version: nil) }
        self.tenantID = tenantID
        self.keys = keys
        self.primaryVersion = newest
        self.aadPrefix = Array("modelgate.seal.v1|tenant:\(tenantID.uuidString.lowercased())|".utf8)
    }

    public var versions: [Int] { keys.keys.sorted() }

    public func seal(_ plaintext: [UInt8], _ context: SealContext) throws -> SealedValue {
        guard let key = keys[primaryVersion] else { throw KeyringError.noDataKey(tenant: tenantID, version: primaryVersion) }
        let version = UInt32(primaryVersion)
        let header: [UInt8] = [
            SealedValue.formatVersion, UInt8(version >> 24), UInt8(version >> 16 & 0xff), UInt8(version >> 8 & 0xff),
            UInt8(version & 0xff),
        ]
        return SealedValue(sealing: try AES256GCM.seal(
            plaintext, key: key, associatedData: aad(context, version: primaryVersion), header: header))
    }

    public func seal(_ plaintext: String, _ context: SealContext) throws -> SealedValue {
        try seal(Array(plaintext.utf8), context)
    }

    public func open(_ sealed: SealedValue, _ context: SealContext) throws -> [UInt8] {
        let version = sealed.dataKeyVersion
        guard let key = keys[version] else { throw KeyringError.noDataKey(tenant: tenantID, version: version) }
        do {
            return try AES256GCM.open(
                sealed.bytes, from: SealedValue.headerCount, key: key, associatedData: aad(context, version: version))
        } catch CryptoError.authenticationFailed {
            throw KeyringError.tampered("\(context.table).\(context.column) of row \(context.rowID)")
        }
    }

    public func openString(_ sealed: SealedValue, _ context: SealContext) throws -> String {
        let bytes = try open(sealed, context)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw KeyringError.malformedSealedValue("not UTF-8 text")
        }
        return text
    }

    private func aad(_ context: SealContext, version: Int) -> [UInt8] {
        var aad = aadPrefix
        aad.reserveCapacity(aadPrefix.count + context.table.utf8.count + context.column.utf8.count + context.rowID.utf8.count + 16)
        aad += context.table.utf8
        aad.append(UInt8(ascii: "."))
        aad += context.column.utf8
        aad += "|row:".utf8
        aad += context.rowID.utf8
        aad += "|dek:".utf8
        aad += String(version).utf8
        return aad
    }
}

/// Reads a tenant's wrapped data keys from wherever they are stored (PostgreSQL, in Tenancy).
public protocol DataKeyStore: Sendable {
    func wrappedDataKeys(tenant: UUID) async throws -> [WrappedDataKey]
}

/// Envelope encryption: master keys wrap one data key per tenant (per version); tenant data is
/// sealed with the tenant's data key. Unwrapped data keys are cached briefly in memory.
public final class KeyRing: Sendable {
    private let masterKeys: Mutex<MasterKeys>
    private let reload: @Sendable () throws -> MasterKeys
    private let store: any DataKeyStore
    private let cache = Mutex<[UUID: (cipher: TenantCipher, expires: ContinuousClock.Instant)]>([:])
    private let cacheTTL: Duration

    /// - Parameter reload: reads the key file again; used when a data key is wrapped by a master
    ///   version this process has not seen yet (another instance rotated).
    public init(
        masterKeys: MasterKeys, store: any DataKeyStore, cacheTTL: Duration = .seconds(300),
        reload: @escaping @Sendable () throws -> MasterKeys
    ) {
        self.masterKeys = Mutex(masterKeys)
        self.store = store
        self.cacheTTL = cacheTTL
        self.reload = reload
    }

    public var current: MasterKeys { masterKeys.withLock { $0 } }

    /// Replaces the master keys held in memory (after rotate/retire wrote the key file).
    public func update(_ keys: MasterKeys) {
        masterKeys.withLock { $0 = keys }
    }

    public var keyHasher: KeyHasher { masterKeys.withLock { $0.keyHasher } }

    /// A new random data key for `tenant` at `version`, wrapped by the primary master key, plus
    /// a cipher that can use it at once (within the transaction that stores it).
    public func newDataKey(tenant: UUID, version: Int, alongside existing: TenantCipher? = nil) throws -> (TenantCipher, WrappedDataKey) {
        let key = try SecureRandom.bytes(AES256GCM.keyByteCount)
        let (masterVersion, wrapped) = try current.wrap(key, binding: WrappedDataKey.binding(tenant: tenant, version: version))
        var keys: [Int: [UInt8]] = [version: key]
        if let existing {
            for other in existing.versions where other != version {
                keys[other] = try existing.keyMaterial(other)
            }
        }
        let cipher = try TenantCipher(tenantID: tenant, keys: keys)
        return (cipher, WrappedDataKey(tenantID: tenant, version: version, masterVersion: masterVersion, wrapped: wrapped))
    }

    /// The tenant's cipher (all its data-key versions), from the cache or the store.
    public func cipher(for tenant: UUID) async throws -> TenantCipher {
        let now = ContinuousClock.now
        if let hit = cache.withLock({ $0[tenant] }), hit.expires > now { return hit.cipher }
        let wrapped = try await store.wrappedDataKeys(tenant: tenant)
        guard !wrapped.isEmpty else { throw KeyringError.noDataKey(tenant: tenant, version: nil) }
        let cipher = try TenantCipher(tenantID: tenant, keys: try unwrapAll(wrapped))
        cache.withLock { $0[tenant] = (cipher, now + cacheTTL) }
        return cipher
    }

    /// Unwraps data keys; reloads the key file once if a master version is unknown here.
    package func unwrapAll(_ wrapped: [WrappedDataKey]) throws -> [Int: [UInt8]] {
        if wrapped.contains(where: { !current.knows($0.masterVersion) }), let fresh = try? reload() {
            update(fresh)
        }
        let keys = current
        var result: [Int: [UInt8]] = [:]
        for entry in wrapped {
            result[entry.version] = try keys.unwrap(
                entry.wrapped, masterVersion: entry.masterVersion,
                binding: WrappedDataKey.binding(tenant: entry.tenantID, version: entry.version))
        }
        return result
    }

    /// Re-wraps a data key under the primary master key (rotation); data rows are untouched.
    public func rewrap(_ entry: WrappedDataKey) throws -> WrappedDataKey {
        let binding = WrappedDataKey.binding(tenant: entry.tenantID, version: entry.version)
        let keys = current
        let plain = try keys.unwrap(entry.wrapped, masterVersion: entry.masterVersion, binding: binding)
        let (masterVersion, wrapped) = try keys.wrap(plain, binding: binding)
        return WrappedDataKey(tenantID: entry.tenantID, version: entry.version, masterVersion: masterVersion, wrapped: wrapped)
    }

    /// Forgets unwrapped data keys: one tenant's, or all.
    public func dropCache(tenant: UUID? = nil) {
        cache.withLock { cache in
            if let tenant { cache[tenant] = nil } else { cache.removeAll() }
        }
    }
}

extension TenantCipher {
    func keyMaterial(_ version: Int) throws -> [UInt8] {
        guard let key = keys[version] else { throw KeyringError.noDataKey(tenant: tenantID, version: version) }
        return key
    }
}

extension MasterKeys {
    /// Unwraps a stored data key.
    package func unwrap(_ entry: WrappedDataKey) throws -> [UInt8] {
        try unwrap(entry.wrapped, masterVersion: entry.masterVersion, binding: WrappedDataKey.binding(tenant: entry.tenantID, version: entry.version))
    }

    /// Whether these keys open a stored data key (a key file belongs to a database); the data
    /// key itself never leaves this module.
    public func opens(_ entry: WrappedDataKey) -> Bool { (try? unwrap(entry)) != nil }
}
