import Foundation
import Postgres
import Testing
import TestSupport

@Suite struct TenancyEndToEndTests {
    /// Creates a tenant with an admin key (keys:manage + inference) over the operator API.
    func tenant(_ server: ModelGateProcess, _ harness: ServerHarness, slug: String) async throws -> (id: String, key: String, keyID: String) {
        let created = try await HTTP.send(
            .POST, server.baseURL + "/admin/v1/tenants", key: harness.operatorKey,
            json: ["slug": slug, "display_name": slug.uppercased(), "contact_email": "\(slug)@example.com"])
        #expect(created.status == 201, "\(created.body)")
        let id = try #require(created.json["id"] as? String)
        let key = try await HTTP.send(
            .POST, server.baseURL + "/admin/v1/tenants/\(id)/keys", key: harness.operatorKey,
            json: ["name": "admin", "scopes": ["keys:manage", "inference"]])
        #expect(key.status == 201, "\(key.body)")
        return (id, try #require(key.json["key"] as? String), try #require(key.json["id"] as? String))
    }

    @Test func tenantsCannotReachEachOthersKeysOrRecords() async throws {
        let harness = try await ServerHarness.start()
        try await withCleanup({ await harness.stop() }) {
            let server = try await harness.server()
            let a = try await tenant(server, harness, slug: "bola-a")
            let b = try await tenant(server, harness, slug: "bola-b")
            let base = server.baseURL

            // A sees only its own keys.
            let listA = try await HTTP.send(.GET, base + "/v1/keys", key: a.key)
            #expect(listA.status == 200)
            let idsA = (listA.json["data"] as? [[String: Any]])?.compactMap { $0["id"] as? String } ?? []
            #expect(idsA == [a.keyID])
            #expect(!listA.body.contains(a.key), "a listing must never show secrets")

            // Every cross-tenant attempt is 404, never 403 (no existence leak), and changes nothing.
            for (method, path) in [
                (HTTPMethodName.DELETE, "/v1/keys/\(b.keyID)"), (.POST, "/v1/keys/\(b.keyID)/rotate"), (.GET, "/v1/tenants/\(b.id)"),
                (.GET, "/v1/tenants/\(UUID().uuidString.lowercased())"), (.DELETE, "/v1/keys/not-a-uuid"),
            ] {
                let result = try await HTTP.send(method.nio, base + path, key: a.key)
                #expect(result.status == 404, "\(method) \(path) -> \(result.status) \(result.body)")
                #expect(result.json["error"] != nil)
            }
            #expect(try await HTTP.send(.GET, base + "/v1/tenants/\(a.id)", key: a.key).status == 200)
            let listB = try await HTTP.send(.GET, base + "/v1/keys", key: b.key)
            #expect(listB.status == 200)
            let keyB = (listB.json["data"] as? [[String: Any]])?.first
            #expect(keyB?["revoked_at"] is NSNull)
            #expect(keyB?["replaced_by"] is NSNull)

            // Tenant keys cannot use operator routes; scopes cannot be escalated.
            let adminAttempt = try await HTTP.send(.GET, base + "/admin/v1/tenants", key: a.key)
            #expect(adminAttempt.status == 403)
            let escalate = try await HTTP.send(.POST, base + "/v1/keys", key: a.key, json: ["name": "x", "scopes": ["admin"]])
            #expect(escalate.status == 403)
            let inferenceOnly = try await HTTP.send(.POST, base + "/v1/keys", key: a.key, json: ["name": "x", "scopes": ["inference"]])
            #expect(inferenceOnly.status == 201)
            let limited = try #require(inferenceOnly.json["key"] as? String)
            #expect(try await HTTP.send(.GET, base + "/v1/keys", key: limited).status == 403)
            let missingField = try await HTTP.send(.POST, base + "/v1/keys", key: a.key, json: ["scopes": ["inference"]])
            #expect(missingField.status == 400)
            #expect((missingField.json["error"] as? [String: Any])?["param"] as? String == "name")
            await server.stopGracefully()
        }
    }

    @Test func authenticationFailuresAreOpenAIShaped() async throws {
        let harness = try await ServerHarness.start()
        try await withCleanup({ await harness.stop() }) {
            let server = try await harness.server()
            let a = try await tenant(server, harness, slug: "auth-shape")
            let base = server.baseURL
            let missing = try await HTTP.send(.GET, base + "/v1/keys")
            #expect(missing.status == 401)
            #expect(missing.errorCode == "invalid_api_key")
            let typo = try await HTTP.send(.GET, base + "/v1/keys", key: String(a.key.dropLast()) + (a.key.last == "a" ? "b" : "a"))
            #expect(typo.status == 401)
            let viaHeader = try await HTTP.send(.GET, base + "/v1/keys", headers: [("x-api-key", a.key)])
            #expect(viaHeader.status == 200)
            #expect(viaHeader.headers.first(name: "x-request-id")?.isEmpty == false)

            let suspended = try await HTTP.send(.POST, base + "/admin/v1/tenants/\(a.id)/suspend", key: harness.operatorKey)
            #expect(suspended.status == 200)
            try await Task.sleep(for: .milliseconds(300))  // invalidation via NOTIFY
            let refused = try await HTTP.send(.GET, base + "/v1/keys", key: a.key)
            #expect(refused.status == 403)
            #expect(refused.errorCode == "tenant_suspended")
            #expect(try await HTTP.send(.POST, base + "/admin/v1/tenants/\(a.id)/resume", key: harness.operatorKey).status == 200)
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await HTTP.send(.GET, base + "/v1/keys", key: a.key).status == 200)
            await server.stopGracefully()
        }
    }

    @Test func aKeyRevokedThroughOneInstanceIsRefusedByAnotherWithinOneSecond() async throws {
        let harness = try await ServerHarness.start()
        try await withCleanup({ await harness.stop() }) {
            let first = try await harness.server()
            let second = try await harness.server(extraEnvironment: ["MODELGATE_METERING_SPOOL_DIRECTORY": harness.directory + "/spool-2"])
            let a = try await tenant(first, harness, slug: "two-servers")
            let created = try await HTTP.send(.POST, first.baseURL + "/v1/keys", key: a.key, json: ["name": "victim", "scopes": ["keys:manage"]])
            let victim = try #require(created.json["key"] as? String)
            let victimID = try #require(created.json["id"] as? String)
            #expect(try await HTTP.send(.GET, second.baseURL + "/v1/keys", key: victim).status == 200)  // cached on the second

            #expect(try await HTTP.send(.DELETE, first.baseURL + "/v1/keys/\(victimID)", key: a.key).status == 200)
            let started = ContinuousClock.now
            var status = 200
            while ContinuousClock.now - started < .seconds(1) {
                status = try await HTTP.send(.GET, second.baseURL + "/v1/keys", key: victim).status
                if status == 401 { break }
                try await Task.sleep(for: .milliseconds(25))
            }
            #expect(status == 401, "second instance still accepted the revoked key after 1 s")
            await first.stopGracefully()
            await second.stopGracefully()
        }
    }

    @Test func noFullKeyEverReachesTheDatabaseOrTheLogs() async throws {
        let harness = try await ServerHarness.start()
        try await withCleanup({ await harness.stop() }) {
            let server = try await harness.server(extraEnvironment: ["MODELGATE_LOG_LEVEL": "trace", "MODELGATE_LOG_FORMAT": "json"])
            let a = try await tenant(server, harness, slug: "no-leak")
            var secrets = [a.key, harness.operatorKey]
            for index in 0..<3 {
                let created = try await HTTP.send(.POST, server.baseURL + "/v1/keys", key: a.key, json: ["name": "k\(index)", "scopes": ["inference"]])
                secrets.append(try #require(created.json["key"] as? String))
            }
            let rotated = try await HTTP.send(.POST, server.baseURL + "/v1/keys/\(a.keyID)/rotate", key: a.key, json: ["grace_period_seconds": 60])
            #expect(rotated.status == 201)
            secrets.append(try #require(rotated.json["key"] as? String))
            for secret in secrets {
                _ = try await HTTP.send(.GET, server.baseURL + "/v1/keys", key: secret)
                _ = try await HTTP.send(.GET, server.baseURL + "/v1/keys", key: String(secret.dropLast()) + "0")
            }
            try await Task.sleep(for: .seconds(6))  // let last_used_at flush
            await server.stopGracefully()
            let dump = try await harness.system.dump()
            let log = server.log
            #expect(log.contains("modelgate listening"))
            for secret in secrets {
                #expect(!dump.contains(secret))
                #expect(!dump.contains(String(secret.dropFirst(12))))
                #expect(!log.contains(secret))
                #expect(!log.contains(String(secret.dropFirst(12))))
            }
            let used = try await harness.system.pool.query("SELECT count(*) AS n FROM api_keys WHERE last_used_at IS NOT NULL")
            #expect(try used[0].decode("n", as: Int.self) >= 5)
        }
    }
}

/// The HTTP methods used above, mapped to NIO's.
enum HTTPMethodName: String, CustomStringConvertible {
    case GET, POST, DELETE
    var description: String { rawValue }
    var nio: NIOHTTP1.HTTPMethod {
        switch self {
        case .GET: .GET
        case .POST: .POST
        case .DELETE: .DELETE
        }
    }
}

import NIOHTTP1

extension ModelGateProcess {
    /// SIGTERM and wait (up to 30 s).
    func stopGracefully() async {
        signal(SIGTERM)
        _ = await waitForExit(timeout: .seconds(30))
    }
}

@Suite struct IdentityEndToEndTests {
    @Test func meDescribesTheKeyWithoutItsSecret() async throws {
        let harness = try await ServerHarness.start()
        try await withCleanup({ await harness.stop() }) {
            let server = try await harness.server()
            let tenant = try await harness.system.tenants.create(slug: "whoami", displayName: "W", actor: .init("test"))
            let key = try await harness.system.apiKeys.create(
                tenant: tenant.id, .init(name: "k", scopes: [.inference], allowedModels: ["demo"]), issuer: .operator(.init("test")))
            let me = try await HTTP.send(.GET, server.baseURL + "/v1/me", key: key.secret)
            #expect(me.status == 200)
            #expect(me.json["tenant"] as? String == "whoami")
            #expect(me.json["scopes"] as? [String] == ["inference"])
            #expect(me.json["allowed_models"] as? [String] == ["demo"])
            #expect(me.json["prefix"] as? String == key.key.prefix)
            #expect(!me.body.contains(key.secret))
            let op = try await HTTP.send(.GET, server.baseURL + "/v1/me", key: harness.operatorKey)
            #expect(op.json["tenant_id"] is NSNull)
            await server.stopGracefully()
        }
    }
}
