import Audit
import Encryption
import Foundation
import Postgres
import Testing
import TestSupport
@testable import Tenancy

@Suite struct EncryptionAtRestTests {
    let actor = AuditActor("test")

    @Test func aDatabaseDumpHoldsNoPlaintextEmailSecretOrKey() async throws {
        let system = try await TestTenancy.create()
        try await withCleanup({ await system.drop() }) {
            var plaintexts: [String] = []
            for index in 0..<3 {
                let email = "person\(index).\(UUID().uuidString.prefix(6))@example.com"
                let billing = "IBAN DE\(Int.random(in: 100_000_000...999_999_999)) Musterstraße \(index)"
                let tenant = try await system.tenants.create(
                    slug: "dump-\(index)", displayName: "Dump \(index)", contactEmail: email, billingDetails: billing, actor: actor)
                let secret = "whsec_\(UUID().uuidString)"
                try await system.tenants.setSecret(tenant.id, name: "webhook", value: secret, actor: actor)
                let key = try await system.apiKeys.create(tenant: tenant.id, NewAPIKey(name: "k", scopes: [.inference]), issuer: .operator(actor))
                _ = try await system.authenticator.authenticate(key.secret, clientAddress: "127.0.0.1")
                plaintexts += [email, billing, secret, key.secret]
                // Readable through the service.
                #expect(try await system.tenants.get(tenant.id).contactEmail == email)
                #expect(try await system.tenants.secret(tenant.id, name: "webhook") == secret)
            }
            let operatorKey = try await system.apiKeys.create(tenant: nil, NewAPIKey(name: "op", scopes: [.admin]), issuer: .operator(actor))
            plaintexts.append(operatorKey.secret)
            await system.authenticator.flushLastUsed()

            let dump = try await system.dump()
            #expect(dump.contains("tenant_data_keys"))
            for plaintext in plaintexts {
                #expect(!dump.contains(plaintext), "plaintext found in dump")
                // bytea columns dump as hex: a plaintext stored as bytes would show up like this.
                #expect(!dump.contains(Array(plaintext.utf8).hexString), "hex-encoded plaintext found in dump")
                // The key's secret part without the marker.
                #expect(!dump.contains(String(plaintext.dropFirst(4).prefix(30))))
            }
        }
    }

    @Test func swappingSealedValuesBetweenTenantsOrRowsFailsToOpen() async throws {
        let system = try await TestTenancy.create()
        try await withCleanup({ await system.drop() }) {
            let a = try await system.tenants.create(slug: "swap-a", displayName: "A", contactEmail: "a@example.com", billingDetails: "bill A", actor: actor)
            let b = try await system.tenants.create(slug: "swap-b", displayName: "B", contactEmail: "b@example.com", actor: actor)
            // Another tenant's value in A's row.
            try await system.pool.execute(
                "UPDATE tenants SET contact_email = (SELECT contact_email FROM tenants WHERE id = $2) WHERE id = $1", [a.id, b.id])
            await #expect(throws: KeyringError.self) { try await system.tenants.get(a.id) }
            // A's own billing value moved into its e-mail column.
            try await system.pool.execute("UPDATE tenants SET contact_email = billing_details WHERE id = $1", [a.id])
            await #expect(throws: KeyringError.self) { try await system.tenants.get(a.id) }
            // One flipped byte.
            try await system.pool.execute(
                "UPDATE tenants SET contact_email = set_byte(contact_email, 20, get_byte(contact_email, 20) # 1) WHERE id = $1", [b.id])
            await #expect(throws: KeyringError.self) { try await system.tenants.get(b.id) }
        }
    }

    @Test func masterKeyRotationRewrapsEveryDataKeyThenTheOldVersionRetires() async throws {
        let system = try await TestTenancy.create()
        try await withCleanup({ await system.drop() }) {
            var tenants: [(UUID, String)] = []
            for index in 0..<7 {
                let email = "rotate\(index)@example.com"
                tenants.append((try await system.tenants.create(slug: "rot-\(index)", displayName: "R", contactEmail: email, actor: actor).id, email))
            }
            // Retiring the primary, or a version still in use, is refused.
            await #expect(throws: TenancyError.self) { try await system.keyring.retire(version: 1, actor: actor) }

            let report = try await system.keyring.rotate(actor: actor, batchSize: 3)
            #expect(report.newVersion == 2)
            #expect(report.rewrapped == 7)
            #expect(!report.resumed)
            let (versions, rotating) = try await system.keyring.status()
            #expect(rotating == nil)
            #expect(versions.first { $0.version == 2 }?.dataKeys == 7)
            #expect(versions.first { $0.version == 1 }?.dataKeys == 0)
            #expect(try MasterKeys.load(file: system.keyFile).primaryVersion == 2)

            try await system.keyring.retire(version: 1, actor: actor)
            #expect(try MasterKeys.load(file: system.keyFile).isRetired(1))
            system.keyRing.dropCache()
            for (id, email) in tenants { #expect(try await system.tenants.get(id).contactEmail == email) }
            // A data key still wrapped by the retired version (e.g. restored from an old backup) fails typed.
            let rows = try await system.pool.query("SELECT count(*) AS n FROM tenant_data_keys WHERE master_key_version = 2")
            #expect(try rows[0].decode("n", as: Int.self) == 7)
            await #expect(throws: TenancyError.self) { try await system.keyring.retire(version: 2, actor: actor) }
        }
    }

    @Test func interruptedRotationIsResumedNotRestarted() async throws {
        let system = try await TestTenancy.create()
        try await withCleanup({ await system.drop() }) {
            for index in 0..<4 {
                _ = try await system.tenants.create(slug: "res-\(index)", displayName: "R", contactEmail: "r\(index)@example.com", actor: actor)
            }
            // Simulate a rotation that added version 2 and rewrapped nothing before dying.
            var keys = try MasterKeys.load(file: system.keyFile)
            _ = try keys.addPrimary()
            try keys.save(file: system.keyFile)
            system.keyRing.update(keys)
            try await system.pool.execute("INSERT INTO settings (key, value) VALUES ('keyring.rotation', '{\"target\": 2}')")
            let report = try await system.keyring.rotate(actor: actor)
            #expect(report.resumed)
            #expect(report.newVersion == 2)
            #expect(report.rewrapped == 4)
            #expect(try MasterKeys.load(file: system.keyFile).primaryVersion == 2)
        }
    }

    @Test func tenantKeyRotationReSealsRowsUnderTheNewVersion() async throws {
        let system = try await TestTenancy.create()
        try await withCleanup({ await system.drop() }) {
            let tenant = try await system.tenants.create(
                slug: "dek-rot", displayName: "D", contactEmail: "d@example.com", billingDetails: "billing", actor: actor)
            let other = try await system.tenants.create(slug: "dek-other", displayName: "O", contactEmail: "o@example.com", actor: actor)
            for index in 0..<5 { try await system.tenants.setSecret(tenant.id, name: "s\(index)", value: "secret-\(index)", actor: actor) }

            let report = try await system.keyring.rotateTenantKey(tenant.id, actor: actor, batchSize: 2)
            #expect(report.newVersion == 2)
            #expect(report.resealed == 7)  // e-mail, billing, five secrets
            #expect(report.destroyedVersions == [1])
            let versions = try await system.pool.query(
                """
                SELECT get_byte(contact_email, 4) AS e, get_byte(billing_details, 4) AS b FROM tenants WHERE id = $1
                """, [tenant.id])
            #expect(try versions[0].decode("e", as: Int.self) == 2)
            #expect(try versions[0].decode("b", as: Int.self) == 2)
            let secrets = try await system.pool.query(
                "SELECT count(*) AS n FROM tenant_secrets WHERE tenant_id = $1 AND get_byte(value, 4) = 2", [tenant.id])
            #expect(try secrets[0].decode("n", as: Int.self) == 5)
            let dataKeys = try await system.pool.query("SELECT version FROM tenant_data_keys WHERE tenant_id = $1", [tenant.id])
            #expect(try dataKeys.map { try $0.decode("version", as: Int.self) } == [2])

            let reopened = try await system.tenants.get(tenant.id)
            #expect(reopened.contactEmail == "d@example.com")
            #expect(reopened.billingDetails == "billing")
            #expect(try await system.tenants.secret(tenant.id, name: "s3") == "secret-3")
            #expect(try await system.tenants.get(other.id).contactEmail == "o@example.com")
        }
    }

    @Test func deletingATenantShredsItsDataButLeavesOthersIntact() async throws {
        let system = try await TestTenancy.create()
        try await withCleanup({ await system.drop() }) {
            let doomed = try await system.tenants.create(slug: "doomed", displayName: "D", contactEmail: "gone@example.com", actor: actor)
            let survivor = try await system.tenants.create(slug: "survivor", displayName: "S", contactEmail: "stay@example.com", actor: actor)
            try await system.tenants.setSecret(doomed.id, name: "api", value: "doomed-secret", actor: actor)
            let key = try await system.apiKeys.create(tenant: doomed.id, NewAPIKey(name: "k", scopes: [.inference]), issuer: .operator(actor))

            // What a backup taken now would hold.
            let backup = try await system.pool.query("SELECT contact_email FROM tenants WHERE id = $1", [doomed.id])
            #expect(!backup[0].isNull("contact_email"))
            let backedUpKeys = try await PostgresDataKeyStore(pool: system.pool).wrappedDataKeys(tenant: doomed.id)
            #expect(backedUpKeys.count == 1)

            let report = try await system.tenants.delete(doomed.id, actor: actor)
            #expect(report.shreddedDataKeys == 1)
            #expect(report.revokedKeys == 1)

            // The sealed value from the backup cannot be opened with the master keys any more.
            await #expect(throws: KeyringError.self) { try await system.keyRing.cipher(for: doomed.id) }
            let afterDelete = try await system.tenants.get(doomed.id)
            #expect(afterDelete.status == .deleted)
            #expect(afterDelete.contactEmail == nil)
            await #expect(throws: AuthenticationError.invalidKey) {
                try await system.authenticator.authenticate(key.secret, clientAddress: "1.2.3.4")
            }
            let secrets = try await system.pool.query("SELECT count(*) AS n FROM tenant_secrets WHERE tenant_id = $1", [doomed.id])
            #expect(try secrets[0].decode("n", as: Int.self) == 0)
            // A dump taken now holds no data key for the tenant.
            let dump = try await system.dump()
            #expect(!dump.contains(Array(backedUpKeys[0].wrapped).hexString))
            // Older backups still hold its data key wrapped by master key 1: rotating the master key
            // and retiring version 1 puts them out of reach too.
            _ = try await system.keyring.rotate(actor: actor)
            try await system.keyring.retire(version: 1, actor: actor)
            #expect(throws: KeyringError.retiredMasterKey(1)) { try system.keyRing.unwrapAll(backedUpKeys) }
            system.keyRing.dropCache()
            #expect(try await system.tenants.get(survivor.id).contactEmail == "stay@example.com")
            await #expect(throws: TenancyError.self) { try await system.tenants.delete(doomed.id, actor: actor) }
        }
    }
}
