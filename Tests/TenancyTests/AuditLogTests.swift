import Audit
import Foundation
import Postgres
import Testing
import TestSupport
@testable import Tenancy

@Suite struct AuditLogTests {
    let actor = AuditActor("cli:tester")

    func actions(_ system: TestTenancy) async throws -> [String] {
        try await AuditLog.list(system.pool).map(\.action)
    }

    @Test func eachLifecycleActionWritesExactlyOneEntry() async throws {
        let system = try await TestTenancy.create()
        try await withCleanup({ await system.drop() }) {
            let tenant = try await system.tenants.create(slug: "audited", displayName: "A", contactEmail: "a@example.com", actor: actor)
            #expect(try await actions(system) == ["tenant.create"])
            _ = try await system.tenants.update(tenant.id, TenantChanges(displayName: "B"), actor: actor)
            _ = try await system.tenants.suspend(tenant.id, actor: actor)
            _ = try await system.tenants.resume(tenant.id, actor: actor)
            let key = try await system.apiKeys.create(tenant: tenant.id, NewAPIKey(name: "k", scopes: [.inference]), issuer: .operator(actor))
            let rotated = try await system.apiKeys.rotate(key.key.id, tenant: tenant.id, issuer: .operator(actor))
            _ = try await system.apiKeys.revoke(rotated.key.id, tenant: tenant.id, actor: actor)
            _ = try await system.keyring.rotateTenantKey(tenant.id, actor: actor)
            _ = try await system.tenants.delete(tenant.id, actor: actor)
            #expect(try await actions(system) == [
                "tenant.create", "tenant.update", "tenant.suspend", "tenant.resume", "key.create", "key.rotate", "key.revoke",
                "tenant.rotate_key", "tenant.delete",
            ])
            // Failed actions write nothing.
            await #expect(throws: TenancyError.self) { try await system.tenants.resume(tenant.id, actor: actor) }
            await #expect(throws: TenancyError.self) {
                try await system.tenants.create(slug: "audited", displayName: "dup", actor: actor)
            }
            #expect(try await actions(system).count == 9)
            let entries = try await AuditLog.list(system.pool)
            #expect(entries.allSatisfy { $0.actor == "cli:tester" })
            #expect(entries.allSatisfy { $0.tenantID == tenant.id })
            // No secret in any entry: the key appears only by its display prefix.
            for entry in entries {
                #expect(!entry.details.contains(key.secret))
                #expect(!entry.details.contains(rotated.secret))
                #expect(!entry.details.contains("a@example.com"))
            }
            #expect(try await AuditLog.verify(system.pool).isIntact)
            #expect(try await AuditLog.list(system.pool, tenant: UUID()).isEmpty)
        }
    }

    @Test func editingOrDeletingAnyEntryIsDetectedAtThatEntry() async throws {
        let system = try await TestTenancy.create()
        try await withCleanup({ await system.drop() }) {
            for index in 0..<6 { _ = try await system.tenants.create(slug: "chain-\(index)", displayName: "C", actor: actor) }
            let intact = try await AuditLog.verify(system.pool)
            #expect(intact.isIntact)
            #expect(intact.entries == 6)

            try await system.pool.execute("UPDATE audit_log SET actor = 'cli:someone-else' WHERE id = 3")
            var result = try await AuditLog.verify(system.pool)
            #expect(result.firstBrokenEntry == 3)
            try await system.pool.execute("UPDATE audit_log SET actor = 'cli:tester' WHERE id = 3")
            #expect(try await AuditLog.verify(system.pool).isIntact)

            try await system.pool.execute("UPDATE audit_log SET details = replace(details, 'chain-4', 'chain-9') WHERE id = 5")
            result = try await AuditLog.verify(system.pool)
            #expect(result.firstBrokenEntry == 5)
            try await system.pool.execute("UPDATE audit_log SET details = replace(details, 'chain-9', 'chain-4') WHERE id = 5")

            try await system.pool.execute("UPDATE audit_log SET at = at + interval '1 second' WHERE id = 2")
            #expect(try await AuditLog.verify(system.pool).firstBrokenEntry == 2)
            try await system.pool.execute("UPDATE audit_log SET at = at - interval '1 second' WHERE id = 2")

            try await system.pool.execute("DELETE FROM audit_log WHERE id = 4")
            result = try await AuditLog.verify(system.pool)
            #expect(result.firstBrokenEntry == 5)
            #expect(result.reason?.contains("missing") == true)
        }
    }
}
