import Foundation
import Synchronization
import Testing
@testable import Encryption

/// Data keys kept in memory, for tests of the envelope without a database.
final class MemoryDataKeyStore: DataKeyStore {
    let keys = Mutex<[WrappedDataKey]>([])
    func add(_ key: WrappedDataKey) { keys.withLock { $0.append(key) } }
    func removeAll(tenant: UUID) { keys.withLock { $0.removeAll { $0.tenantID == tenant } } }
    func wrappedDataKeys(tenant: UUID) async throws -> [WrappedDataKey] {
        keys.withLock { $0.filter { $0.tenantID == tenant } }
    }
}

@Suite struct MasterKeyFileTests {
    func temporaryPath() -> String { NSTemporaryDirectory() + "mg-keys-\(UUID().uuidString)/keyring.json" }

    @Test func keyFileRoundTripsWithMode0600() throws {
        let path = temporaryPath()
        var keys = try MasterKeys.generate()
        _ = try keys.addPrimary()
        try keys.retire(1)
        try keys.save(file: path)
        var info = stat()
        #expect(stat(path, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)
        let loaded = try MasterKeys.load(file: path)
        #expect(loaded.primaryVersion == 2)
        #expect(loaded.isRetired(1))
        #expect(loaded.pepper == keys.pepper)
        #expect(loaded.versions.map(\.version) == [1, 2])
    }

    @Test func groupOrWorldReadableKeyFileIsRefusedWithTheFix() throws {
        let path = temporaryPath()
        try MasterKeys.generate().save(file: path)
        chmod(path, 0o644)
        do {
            _ = try MasterKeys.load(file: path)
            Issue.record("a 0644 key file was accepted")
        } catch let error as KeyringError {
            #expect(error == .insecureKeyFile(path: path, mode: "644"))
            #expect(error.description.contains(path))
            #expect(error.description.contains("chmod 600 \(path)"))
        }
        chmod(path, 0o640)
        #expect(throws: KeyringError.self) { try MasterKeys.load(file: path) }
    }

    @Test func malformedKeyFilesAreRefused() throws {
        #expect(throws: KeyringError.self) { try MasterKeys.parse(Data("not json".utf8), source: "x") }
        #expect(throws: KeyringError.self) {
            try MasterKeys.parse(Data(#"{"primary": 2, "pepper": "AAAA", "keys": [{"version": 1, "key": "AAAA"}]}"#.utf8), source: "x")
        }
        #expect(throws: KeyringError.missingKeyFile("/nonexistent/keyring.json")) {
            try MasterKeys.load(file: "/nonexistent/keyring.json")
        }
        // Serialized keys never appear in descriptions of errors.
        let keys = try MasterKeys.generate()
        let text = String(decoding: try keys.serialized(), as: UTF8.self)
        #expect(text.contains("\"primary\""))
    }
}

@Suite struct EnvelopeTests {
    let tenantA = UUID()
    let tenantB = UUID()

    func ring() throws -> (KeyRing, MemoryDataKeyStore) {
        let store = MemoryDataKeyStore()
        let keys = try MasterKeys.generate()
        return (KeyRing(masterKeys: keys, store: store) { keys }, store)
    }

    @Test func sealedValuesOpenOnlyInTheirOwnPlace() async throws {
        let (ring, store) = try ring()
        let (cipherA, wrappedA) = try ring.newDataKey(tenant: tenantA, version: 1)
        let (cipherB, wrappedB) = try ring.newDataKey(tenant: tenantB, version: 1)
        store.add(wrappedA)
        store.add(wrappedB)
        let row1 = SealContext(table: "tenants", column: "contact_email", rowID: "1")
        let row2 = SealContext(table: "tenants", column: "contact_email", rowID: "2")
        let otherColumn = SealContext(table: "tenants", column: "billing_details", rowID: "1")
        let sealed = try cipherA.seal("ada@example.com", row1)
        #expect(sealed.dataKeyVersion == 1)
        #expect(!String(decoding: sealed.bytes, as: UTF8.self).contains("ada@example.com"))

        // Loaded back through the store (as another process would).
        let reloaded = try await ring.cipher(for: tenantA)
        #expect(try reloaded.openString(sealed, row1) == "ada@example.com")

        // Moved to another row, another column, or another tenant: a typed error, not garbage.
        #expect(throws: KeyringError.self) { try cipherA.open(sealed, row2) }
        #expect(throws: KeyringError.self) { try cipherA.open(sealed, otherColumn) }
        #expect(throws: KeyringError.self) { try cipherB.open(sealed, row1) }

        // Any altered byte fails.
        for index in sealed.bytes.indices {
            var bytes = sealed.bytes
            bytes[index] ^= 0x40
            let altered = try? SealedValue(stored: bytes)
            if let altered { #expect(throws: KeyringError.self) { try cipherA.open(altered, row1) } }
        }
        #expect(throws: KeyringError.self) { try SealedValue(stored: [1, 2, 3]) }
    }

    @Test func rewrapMovesDataKeysToTheNewPrimaryAndRetiredVersionsFail() async throws {
        let store = MemoryDataKeyStore()
        var keys = try MasterKeys.generate()
        let initial = keys
        let ring = KeyRing(masterKeys: keys, store: store) { initial }
        let (cipher, wrapped) = try ring.newDataKey(tenant: tenantA, version: 1)
        let context = SealContext(table: "tenant_secrets", column: "value", rowID: "s1")
        let sealed = try cipher.seal("webhook-secret", context)

        _ = try keys.addPrimary()
        ring.update(keys)
        let rewrapped = try ring.rewrap(wrapped)
        #expect(rewrapped.masterVersion == 2)
        #expect(rewrapped.wrapped != wrapped.wrapped)
        store.add(rewrapped)
        ring.dropCache()
        #expect(try await ring.cipher(for: tenantA).openString(sealed, context) == "webhook-secret")

        try keys.retire(1)
        ring.update(keys)
        #expect(throws: KeyringError.retiredMasterKey(1)) { try ring.unwrapAll([wrapped]) }
        #expect(throws: KeyringError.cannotRetirePrimary(2)) { try keys.retire(2) }
        // A wrapped key moved to another tenant does not unwrap.
        var moved = rewrapped
        moved.tenantID = tenantB
        #expect(throws: KeyringError.self) { try ring.unwrapAll([moved]) }
    }

    @Test func missingDataKeyIsATypedError() async throws {
        let (ring, _) = try ring()
        await #expect(throws: KeyringError.noDataKey(tenant: tenantA, version: nil)) { try await ring.cipher(for: tenantA) }
    }
}
