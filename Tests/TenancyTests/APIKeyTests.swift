import Audit
import Encryption
import Foundation
import Postgres
import Testing
import TestSupport
@testable import Tenancy

@Suite struct APIKeyFormatTests {
    @Test func generatedKeysAreWellFormedAndDistinct() throws {
        var seen = Set<String>()
        for _ in 0..<200 {
            let key = try APIKeyFormat.generate()
            #expect(key.hasPrefix("mgk_"))
            #expect(key.count == APIKeyFormat.length)
            #expect(APIKeyFormat.isWellFormed(key))
            seen.insert(key)
        }
        #expect(seen.count == 200)
    }

    @Test func everySingleCharacterTypoIsCaught() throws {
        let key = try APIKeyFormat.generate()
        var characters = Array(key)
        for index in 4..<characters.count {
            let original = characters[index]
            characters[index] = original == "x" ? "y" : "x"
            #expect(!APIKeyFormat.isWellFormed(String(characters)), "typo at \(index) accepted")
            characters[index] = original
        }
        #expect(!APIKeyFormat.isWellFormed(String(key.dropLast())))
        #expect(!APIKeyFormat.isWellFormed(key + "a"))
        #expect(!APIKeyFormat.isWellFormed("sk-" + key.dropFirst(3)))
        #expect(!APIKeyFormat.isWellFormed(key.replacingOccurrences(of: "mgk_", with: "mgk-")))
        #expect(APIKeyFormat.displayPrefix(key).count == 12)
    }

    @Test func crc32MatchesTheStandardCheckValue() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
    }

    @Test func headersAreParsed() {
        #expect(Authenticator.key(authorization: "Bearer mgk_abc", apiKeyHeader: nil) == "mgk_abc")
        #expect(Authenticator.key(authorization: "bearer   mgk_abc ", apiKeyHeader: nil) == "mgk_abc")
        #expect(Authenticator.key(authorization: "Basic xyz", apiKeyHeader: "mgk_abc") == nil)
        #expect(Authenticator.key(authorization: nil, apiKeyHeader: "mgk_abc") == "mgk_abc")
        #expect(Authenticator.key(authorization: nil, apiKeyHeader: nil) == nil)
    }
}

@Suite struct AuthenticationTests {
    let actor = AuditActor("test")

    func tenantWithKey(_ system: TestTenancy, slug: String, scopes: [Scope] = [.inference]) async throws -> (Tenant, CreatedAPIKey) {
        let tenant = try await system.tenants.create(slug: slug, displayName: slug, actor: actor)
        let key = try await system.apiKeys.create(tenant: tenant.id, NewAPIKey(name: "k", scopes: scopes, allowedModels: ["gpt2"]), issuer: .operator(actor))
        return (tenant, key)
    }

    @Test func aValidKeyYieldsItsPrincipalAndIsCached() async throws {
        let system = try await TestTenancy.create()
        try await withCleanup({ await system.drop() }) {
            let (tenant, key) = try await tenantWithKey(system, slug: "valid", scopes: [.inference, .usageRead])
            let principal = try await system.authenticator.authenticate(key.secret, clientAddress: "10.0.0.1")
            #expect(principal.tenantID == tenant.id)
            #expect(principal.tenantSlug == "valid")
            #expect(principal.scopes == [.inference, .usageRead])
            #expect(principal.allowedModels == ["gpt2"])
            #expect(principal.mayUse(model: "gpt2") && !principal.mayUse(model: "bert"))
            #expect(principal.keyPrefix == String(key.secret.prefix(12)))
            let queries = system.pool.statistics.queries
            for _ in 0..<20 { _ = try await system.authenticator.authenticate(key.secret, clientAddress: "10.0.0.1") }
            #expect(system.pool.statistics.queries == queries, "cache hits must not query")
            await system.authenticator.flushLastUsed()
            let keys = try await system.apiKeys.list(tenant: tenant.id)
            #expect(keys[0].lastUsedAt != nil)
        }
    }

    @Test func aMistypedKeyIsRejectedWithoutADatabaseQuery() async throws {
        let system = try await TestTenancy.create()
        try await withCleanup({ await system.drop() }) {
            let (_, key) = try await tenantWithKey(system, slug: "typo")
            var characters = Array(key.secret)
            characters[10] = characters[10] == "A" ? "B" : "A"
            let before = system.pool.statistics.queries
            await #expect(throws: AuthenticationError.malformedKey) {
                try await system.authenticator.authenticate(String(characters), clientAddress: "10.0.0.2")
            }
            await #expect(throws: AuthenticationError.missingKey) { try await system.authenticator.authenticate(nil, clientAddress: "10.0.0.2") }
            await #expect(throws: AuthenticationError.malformedKey) {
                try await system.authenticator.authenticate("sk-proj-123", clientAddress: "10.0.0.2")
            }
            #expect(system.pool.statistics.queries == before)
            // A well-formed but unknown key costs one lookup, then is cached negatively.
            let unknown = try APIKeyFormat.generate()
            await #expect(throws: AuthenticationError.invalidKey) { try await system.authenticator.authenticate(unknown, clientAddress: "10.0.0.2") }
            await #expect(throws: AuthenticationError.invalidKey) { try await system.authenticator.authenticate(unknown, clientAddress: "10.0.0.2") }
            #expect(system.pool.statistics.queries == before + 1)
        }
    }

    @Test func revokedExpiredAndRotatedOutKeysAreRefused() async throws {
        let system = try await TestTenancy.create()
        try await withCleanup({ await system.drop() }) {
            let (tenant, key) = try await tenantWithKey(system, slug: "lifecycle")
            let auth = system.authenticator
            _ = try await auth.authenticate(key.secret, clientAddress: "a")

            // Rotation with a grace period: both work; with none the old stops at once.
            let graceful = try await system.apiKeys.rotate(key.key.id, tenant: tenant.id, grace: .seconds(3600), issuer: .operator(actor))
            auth.flush()
            _ = try await auth.authenticate(key.secret, clientAddress: "a")
            _ = try await auth.authenticate(graceful.secret, clientAddress: "a")
            await #expect(throws: TenancyError.self) { try await system.apiKeys.rotate(key.key.id, tenant: tenant.id, issuer: .operator(actor)) }
            let abrupt = try await system.apiKeys.rotate(graceful.key.id, tenant: tenant.id, grace: .zero, issuer: .operator(actor))
            auth.flush()
            await #expect(throws: AuthenticationError.invalidKey) { try await auth.authenticate(graceful.secret, clientAddress: "a") }
            _ = try await auth.authenticate(abrupt.secret, clientAddress: "a")
            #expect(try await system.apiKeys.get(abrupt.key.id, tenant: tenant.id).name == "k")

            // Expiry is checked on every request, even from the cache. The key must be
            // authenticated (and cached) before it expires: on a machine too loaded to do that
            // within its lifetime, the next key gets twice as long (a loaded CI run saw 4 s pass).
            var lifetime = 4.0
            var shortLived: CreatedAPIKey?
            var expiry = Date()
            while shortLived == nil, lifetime <= 128 {
                expiry = Date().addingTimeInterval(lifetime)
                let created = try await system.apiKeys.create(
                    tenant: tenant.id, NewAPIKey(name: "short", scopes: [.inference], expiresAt: expiry), issuer: .operator(actor))
                do {
                    _ = try await auth.authenticate(created.secret, clientAddress: "a")
                    shortLived = created
                } catch AuthenticationError.invalidKey where Date() >= expiry {
                    lifetime *= 2
                }
            }
            let cached = try #require(shortLived, "no key lived long enough to be authenticated")
            try await Task.sleep(for: .milliseconds(Int(max(0, expiry.timeIntervalSinceNow) * 1000) + 100))
            await #expect(throws: AuthenticationError.invalidKey) { try await auth.authenticate(cached.secret, clientAddress: "a") }

            _ = try await system.apiKeys.revoke(abrupt.key.id, tenant: tenant.id, actor: actor)
            auth.flush()
            await #expect(throws: AuthenticationError.invalidKey) { try await auth.authenticate(abrupt.secret, clientAddress: "a") }
            await #expect(throws: TenancyError.self) { try await system.apiKeys.revoke(abrupt.key.id, tenant: tenant.id, actor: actor) }
        }
    }

    @Test func aSuspendedTenantsKeysAreForbiddenUntilResumed() async throws {
        let system = try await TestTenancy.create()
        try await withCleanup({ await system.drop() }) {
            let (tenant, key) = try await tenantWithKey(system, slug: "suspended")
            _ = try await system.tenants.suspend(tenant.id, actor: actor)
            system.authenticator.flush()
            await #expect(throws: AuthenticationError.tenantSuspended) {
                try await system.authenticator.authenticate(key.secret, clientAddress: "a")
            }
            _ = try await system.tenants.resume(tenant.id, actor: actor)
            system.authenticator.flush()
            _ = try await system.authenticator.authenticate(key.secret, clientAddress: "a")
        }
    }

    @Test func revocationOnOneInstanceReachesAnotherWithinOneSecond() async throws {
        let system = try await TestTenancy.create()
        try await withCleanup({ await system.drop() }) {
            let (tenant, key) = try await tenantWithKey(system, slug: "two-instances")
            // A second "instance": its own pool and authenticator on the same database.
            let otherPool = PostgresPool(configuration: system.database.configuration)
            let other = Authenticator(pool: otherPool, keyHasher: system.keyRing.keyHasher)
            let listening = AsyncStream.makeStream(of: Void.self)
            let listener = Task { await other.runInvalidationListener { listening.continuation.yield() } }
            for await _ in listening.stream { break }
            _ = try await other.authenticate(key.secret, clientAddress: "a")  // cached there

            _ = try await system.apiKeys.revoke(key.key.id, tenant: tenant.id, actor: actor)
            let started = ContinuousClock.now
            var refused = false
            while ContinuousClock.now - started < .seconds(1) {
                do {
                    _ = try await other.authenticate(key.secret, clientAddress: "a")
                } catch {
                    refused = true
                    break
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(refused, "the other instance still accepted the revoked key after 1 s")
            listener.cancel()
            await otherPool.shutdown()
        }
    }

    @Test func oneTenantCannotTouchAnothersKeys() async throws {
        let system = try await TestTenancy.create()
        try await withCleanup({ await system.drop() }) {
            let (tenantA, _) = try await tenantWithKey(system, slug: "tenant-a")
            let (tenantB, keyB) = try await tenantWithKey(system, slug: "tenant-b")
            await #expect(throws: TenancyError.notFound("no API key \(keyB.key.id.uuidString.lowercased())")) {
                try await system.apiKeys.revoke(keyB.key.id, tenant: tenantA.id, actor: actor)
            }
            await #expect(throws: TenancyError.self) { try await system.apiKeys.rotate(keyB.key.id, tenant: tenantA.id, issuer: .operator(actor)) }
            await #expect(throws: TenancyError.self) { try await system.apiKeys.get(keyB.key.id, tenant: tenantA.id) }
            #expect(try await system.apiKeys.list(tenant: tenantA.id).allSatisfy { $0.tenantID == tenantA.id })
            let untouched = try await system.apiKeys.get(keyB.key.id, tenant: tenantB.id)
            #expect(untouched.revokedAt == nil && untouched.replacedBy == nil)
            // Operator keys are not reachable as tenant keys and vice versa.
            await #expect(throws: TenancyError.self) { try await system.apiKeys.get(keyB.key.id, tenant: nil) }
        }
    }

    @Test func invalidKeyRequestsAreRefused() async throws {
        let system = try await TestTenancy.create()
        try await withCleanup({ await system.drop() }) {
            let tenant = try await system.tenants.create(slug: "rules", displayName: "R", actor: actor)
            await #expect(throws: TenancyError.self) {
                try await system.apiKeys.create(tenant: tenant.id, NewAPIKey(name: "x", scopes: [.admin]), issuer: .operator(actor))
            }
            await #expect(throws: TenancyError.self) {
                try await system.apiKeys.create(tenant: nil, NewAPIKey(name: "x", scopes: [.inference]), issuer: .operator(actor))
            }
            await #expect(throws: TenancyError.self) {
                try await system.apiKeys.create(tenant: tenant.id, NewAPIKey(name: "", scopes: [.inference]), issuer: .operator(actor))
            }
            await #expect(throws: TenancyError.self) {
                try await system.apiKeys.create(
                    tenant: tenant.id, NewAPIKey(name: "x", scopes: [.inference], expiresAt: Date().addingTimeInterval(-5)), issuer: .operator(actor))
            }
            await #expect(throws: TenancyError.self) {
                try await system.apiKeys.create(tenant: UUID(), NewAPIKey(name: "x", scopes: [.inference]), issuer: .operator(actor))
            }
            #expect(throws: TenancyError.self) { try Scope.parseList("inference,superuser") }
            await #expect(throws: TenancyError.self) { try await system.tenants.create(slug: "Bad Slug", displayName: "x", actor: actor) }
            await #expect(throws: TenancyError.self) {
                try await system.tenants.create(slug: "bad-email", displayName: "x", contactEmail: "not-an-email", actor: actor)
            }
        }
    }

    @Test func repeatedFailuresFromOneAddressSlowDownWithoutDelayingValidKeys() async throws {
        let system = try await TestTenancy.create()
        try await withCleanup({ await system.drop() }) {
            let (_, key) = try await tenantWithKey(system, slug: "backoff")
            let auth = system.authenticator
            let bad = try APIKeyFormat.generate()
            for _ in 0..<Authenticator.freeFailuresPerMinute {
                await #expect(throws: AuthenticationError.self) { try await auth.authenticate(bad, clientAddress: "6.6.6.6") }
            }
            let started = ContinuousClock.now
            for _ in 0..<5 {
                await #expect(throws: AuthenticationError.self) { try await auth.authenticate(bad, clientAddress: "6.6.6.6") }
            }
            let slowed = ContinuousClock.now - started
            #expect(slowed >= .milliseconds(50 + 100 + 200 + 400 + 800))
            // The next failure from this address waits 1.6 s; a valid key from it does not, nor does a
            // failure from another address: started together, both finish before it. (Order, not a
            // time bound: under four CPU hogs one query has taken 2.2 s.)
            let finished = await withTaskGroup(of: String.self) { group in
                group.addTask {
                    _ = try? await auth.authenticate(bad, clientAddress: "6.6.6.6")
                    return "penalised"
                }
                group.addTask { (try? await auth.authenticate(key.secret, clientAddress: "6.6.6.6")) == nil ? "valid key refused" : "valid" }
                group.addTask {
                    _ = try? await auth.authenticate(bad, clientAddress: "7.7.7.7")
                    return "other address"
                }
                var order: [String] = []
                for await label in group { order.append(label) }
                return order
            }
            #expect(finished.last == "penalised" && finished.contains("valid"), "\(finished)")
        }
    }
}
