import Audit
import Encryption
import Foundation
import Postgres
import Testing
import TestSupport

@testable import Tenancy

@Suite struct UpstreamCredentialTests {
    let actor = AuditActor("test")

    @Test func aCredentialIsSealedUnderTheOperatorKeyAndSurvivesMasterKeyRotation() async throws {
        let system = try await TestTenancy.create()
        try await withCleanup({ await system.drop() }) {
            let credentials = UpstreamCredentials(pool: system.pool, keyRing: system.keyRing, cacheTTL: .zero)
            let secret = "sk-upstream-" + UUID().uuidString
            let info = try await credentials.set(model: "fleet", secret: secret, actor: actor)
            #expect(info.fingerprint.hasPrefix("hmac-sha256:") && !info.fingerprint.contains(secret))
            #expect(try await credentials.secret(for: "fleet") == secret)
            #expect(try await credentials.secret(for: "other") == nil)
            #expect(try await !system.dump().contains(secret), "no plaintext in the database")
            // Sealed for its row: copied to another model's row, it does not open.
            _ = try await credentials.set(model: "copy", secret: "x", actor: actor)
            try await system.pool.execute("UPDATE upstream_credentials SET value = (SELECT value FROM upstream_credentials WHERE model = 'fleet') WHERE model = 'copy'")
            await #expect(throws: KeyringError.self) { try await credentials.secret(for: "copy") }

            let report = try await system.keyring.rotate(actor: actor)
            #expect(report.rewrapped == 1, "the operator's data key is rewrapped like a tenant's")
            let keys = try await system.pool.query("SELECT master_key_version AS v FROM operator_data_keys")
            #expect(try keys.map { try $0.decode("v", as: Int.self) } == [report.newVersion])
            try await system.keyring.retire(version: 1, actor: actor)
            system.keyRing.dropCache()
            #expect(try await credentials.secret(for: "fleet") == secret)

            // Replaced: the new secret is used; cleared: none.
            _ = try await credentials.set(model: "fleet", secret: "sk-new", actor: actor)
            #expect(try await credentials.secret(for: "fleet") == "sk-new")
            #expect(try await credentials.clear(model: "fleet", actor: actor))
            #expect(try await credentials.secret(for: "fleet") == nil)
            #expect(try await !credentials.clear(model: "fleet", actor: actor))
        }
    }

    @Test(arguments: ["", "two words", "line\nbreak", "tab\there", "ünicode", String(repeating: "a", count: 8193)])
    func aCredentialThatCannotBeABearerTokenIsRefused(secret: String) async throws {
        let system = try await TestTenancy.create()
        await withCleanup({ await system.drop() }) {
            let credentials = UpstreamCredentials(pool: system.pool, keyRing: system.keyRing)
            let error = await #expect(throws: TenancyError.self) { try await credentials.set(model: "fleet", secret: secret, actor: actor) }
            #expect(!(error?.description.contains(secret) ?? true) || secret.isEmpty, "the refusal does not repeat the secret")
        }
    }
}
