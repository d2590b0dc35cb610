import Audit
import Foundation
import Postgres
import Tenancy
import Testing
import TestSupport

@Suite struct CommandLineTests {
    /// CLI environment using the harness's key *file* (rotation rewrites it).
    func fileEnvironment(_ harness: ServerHarness) -> [String: String] {
        ["MODELGATE_KEYRING": "", "MODELGATE_KEYRING_FILE": harness.system.keyFile]
    }

    @Test func tenantAndKeyLifecycleThroughTheCLI() async throws {
        let harness = try await ServerHarness.start()
        try await withCleanup({ await harness.stop() }) {
            var result = try await harness.cli(["tenant", "create", "--slug", "acme", "--name", "Acme Inc", "--email", "ops@acme.example", "--json"])
            #expect(result.status == 0, "\(result.output)")
            let tenant = try #require(try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any])
            #expect(tenant["contact_email"] as? String == "ops@acme.example")

            result = try await harness.cli(["tenant", "create", "--slug", "acme", "--name", "Again"])
            #expect(result.status == 1)
            #expect(result.output.contains("already exists"))
            #expect(result.output.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").count == 1)

            result = try await harness.cli(["tenant", "list"])
            #expect(result.status == 0)
            #expect(result.output.contains("acme") && result.output.contains("SLUG"))
            result = try await harness.cli(["tenant", "show", "acme"])
            #expect(result.output.contains("ops@acme.example"))
            result = try await harness.cli(["tenant", "show", "nobody"])
            #expect(result.status == 1)
            #expect(result.output.contains("no tenant 'nobody'"))

            result = try await harness.cli(["key", "create", "--tenant", "acme", "--name", "ci", "--scopes", "inference,usage:read", "--expires", "30d", "--json"])
            #expect(result.status == 0, "\(result.output)")
            let created = try #require(try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any])
            let secret = try #require(created["key"] as? String)
            let keyID = try #require((created["api_key"] as? [String: Any])?["id"] as? String)
            #expect(APIKeyFormat.isWellFormed(secret))

            result = try await harness.cli(["key", "list", "--tenant", "acme"])
            #expect(result.output.contains(String(secret.prefix(12))))
            #expect(!result.output.contains(secret))
            result = try await harness.cli(["key", "create", "--tenant", "acme", "--name", "bad", "--expires", "tomorrowish"])
            #expect(result.status == 1)
            #expect(result.output.contains("--expires"))
            for huge in ["999999999999999999d", "3650001d", "99999999999999999999"] {
                result = try await harness.cli(["key", "create", "--tenant", "acme", "--name", "bad", "--expires", huge])
                #expect(result.status == 1 && result.output.contains("--expires") && result.output.split(separator: "\n").count == 1, "\(huge): \(result.output)")
            }
            // A five-digit year was stored, then no listing of the tenant's keys could read it back.
            result = try await harness.cli(["key", "create", "--tenant", "acme", "--name", "far", "--expires", "99999-01-01T00:00:00Z"])
            #expect(result.status == 1 && result.output.contains("expires_at: must be before 10000-01-01"), "\(result.output)")
            for (window, message) in [
                (["--from", "2026-12-01", "--to", "2026-01-01"], "--from: must not be after --to"),
                (["--from", "0001-01-01"], "--from: must be between 1970-01-01 and 9999-12-31"),
            ] {
                result = try await harness.cli(["usage", "report", "--tenant", "acme"] + window)
                #expect(result.status == 1 && result.output.contains(message), "\(window): \(result.output)")
            }
            result = try await harness.cli(["key", "create", "--tenant", "acme", "--name", "bad", "--scopes", "root"])
            #expect(result.status == 1)
            #expect(result.output.contains("unknown scope"))

            result = try await harness.cli(["key", "rotate", "--tenant", "acme", keyID, "--grace", "1h"])
            #expect(result.status == 0, "\(result.output)")
            result = try await harness.cli(["key", "revoke", "--tenant", "acme", keyID])
            #expect(result.status == 0, "\(result.output)")
            result = try await harness.cli(["key", "revoke", "--tenant", "acme", keyID])
            #expect(result.status == 1)

            result = try await harness.cli(["tenant", "suspend", "acme"])
            #expect(result.status == 0)
            result = try await harness.cli(["tenant", "resume", "acme"])
            #expect(result.status == 0)
            result = try await harness.cli(["tenant", "delete", "acme"])
            #expect(result.status != 0)
            #expect(result.output.contains("--yes"))
            result = try await harness.cli(["tenant", "delete", "acme", "--yes"])
            #expect(result.status == 0, "\(result.output)")

            result = try await harness.cli(["audit", "list", "--json"])
            let entries = try #require(try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [[String: Any]])
            let actions = entries.compactMap { $0["action"] as? String }
            #expect(actions.filter { $0 == "tenant.create" }.count == 1)
            #expect(actions.contains("tenant.delete"))
            #expect(entries.allSatisfy { ($0["actor"] as? String)?.hasPrefix("cli:") == true || ($0["actor"] as? String) == "test" })

            result = try await harness.cli(["audit", "verify"])
            #expect(result.status == 0, "\(result.output)")
            try await harness.system.pool.execute("UPDATE audit_log SET target = 'tenant:forged' WHERE id = 3")
            result = try await harness.cli(["audit", "verify"])
            #expect(result.status == 1)
            #expect(result.output.contains("entry 3"))
        }
    }

    @Test func interruptedMasterKeyRotationCompletesWhenRunAgain() async throws {
        let harness = try await ServerHarness.start()
        try await withCleanup({ await harness.stop() }) {
            var emails: [(UUID, String)] = []
            for index in 0..<30 {
                let email = "t\(index)@rotation.example"
                emails.append((try await harness.system.tenants.create(slug: "rot-\(index)", displayName: "T", contactEmail: email, actor: AuditActor("test")).id, email))
            }
            let environment = harness.environment.merging(fileEnvironment(harness)) { $1 }
            let slow = try ModelGateProcess(arguments: ["keyring", "rotate", "--batch-size", "2", "--pause-ms", "400"], in: harness.directory, environment: environment)
            var rewrapped = 0
            let deadline = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < deadline {
                let rows = try await harness.system.pool.query("SELECT count(*) AS n FROM tenant_data_keys WHERE master_key_version = 2")
                rewrapped = try rows[0].decode("n")
                if rewrapped >= 6 { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            slow.signal(SIGKILL)
            _ = await slow.waitForExit(timeout: .seconds(10))
            #expect(rewrapped >= 6 && rewrapped < 30, "rotation was not caught half-way (\(rewrapped) rewrapped)")

            var result = try await harness.cli(["keyring", "status"], extraEnvironment: fileEnvironment(harness))
            #expect(result.output.contains("unfinished"), "\(result.output)")
            result = try await harness.cli(["keyring", "retire", "1", "--yes"], extraEnvironment: fileEnvironment(harness))
            #expect(result.status == 1)
            #expect(result.output.contains("still wrapped"))

            result = try await harness.cli(["keyring", "rotate"], extraEnvironment: fileEnvironment(harness))
            #expect(result.status == 0, "\(result.output)")
            #expect(result.output.contains("resumed"))
            #expect(result.output.contains("version 2"))
            let rows = try await harness.system.pool.query("SELECT count(*) AS n FROM tenant_data_keys WHERE master_key_version <> 2")
            #expect(try rows[0].decode("n", as: Int.self) == 0)

            result = try await harness.cli(["keyring", "retire", "1"], extraEnvironment: fileEnvironment(harness))
            #expect(result.status == 1 && result.output.contains("--yes"), "retiring destroys key material: it asks for --yes")
            result = try await harness.cli(["keyring", "retire", "1", "--yes"], extraEnvironment: fileEnvironment(harness))
            #expect(result.status == 0, "\(result.output)")
            for (id, email) in emails.prefix(5) {
                result = try await harness.cli(["tenant", "show", id.uuidString, "--json"], extraEnvironment: fileEnvironment(harness))
                #expect(result.output.contains(email), "\(result.output)")
            }
            result = try await harness.cli(["tenant", "rotate-key", "rot-3"], extraEnvironment: fileEnvironment(harness))
            #expect(result.status == 0, "\(result.output)")
            #expect(result.output.contains("data key version 2"))
        }
    }

    @Test func aKeyFileReadableByOthersIsRefusedNamingTheFix() async throws {
        let harness = try await ServerHarness.start()
        try await withCleanup({ await harness.stop() }) {
            chmod(harness.system.keyFile, 0o644)
            defer { chmod(harness.system.keyFile, 0o600) }
            let result = try await harness.cli(["tenant", "list"], extraEnvironment: fileEnvironment(harness))
            #expect(result.status == 1)
            #expect(result.output.contains(harness.system.keyFile))
            #expect(result.output.contains("chmod 600"))
            // With a database URL configured, a missing key file is an error, not a new key.
            let missing = try await harness.cli(["tenant", "list"], extraEnvironment: ["MODELGATE_KEYRING": "", "MODELGATE_KEYRING_FILE": harness.directory + "/none.json"])
            #expect(missing.status == 1)
            #expect(missing.output.contains("keyring init"))
            // A key file from another installation is refused (its pepper does not match the
            // fingerprint recorded by the first successful command).
            #expect(try await harness.cli(["tenant", "list"]).status == 0)
            let foreign = harness.directory + "/foreign.json"
            #expect(try await harness.cli(["keyring", "init"], extraEnvironment: ["MODELGATE_KEYRING": "", "MODELGATE_KEYRING_FILE": foreign]).status == 0)
            let mismatch = try await harness.cli(["tenant", "list"], extraEnvironment: ["MODELGATE_KEYRING": "", "MODELGATE_KEYRING_FILE": foreign])
            #expect(mismatch.status == 1)
            #expect(mismatch.output.contains("does not belong"))
        }
    }

    /// The CLI's basics: a version, typos named with the nearest command, one output flag
    /// everywhere, names beside ids, model names checked, and limits that say what they mean.
    @Test func cliBasicsAndLimitsThatSayWhatTheyMean() async throws {
        try await ServerHarness.with { harness in
            var result = try await harness.cli(["--version"])
            #expect(result.status == 0 && !result.output.isEmpty, "\(result.output)")
            result = try await harness.cli(["tenant", "craete", "--slug", "x"])
            #expect(result.status != 0)
            #expect(result.output.contains("unknown subcommand 'craete'") && result.output.contains("did you mean 'create'"), "\(result.output)")
            #expect(result.output.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").count == 1)

            result = try await harness.cli(["tenant", "create", "--slug", "lim", "--name", "L", "--plan", "free"])
            #expect(result.status == 0, "\(result.output)")
            for flags in [["--json"], ["--format", "json"]] {
                result = try await harness.cli(["tenant", "list"] + flags)
                #expect((try? JSONSerialization.jsonObject(with: Data(result.output.utf8))) is [Any], "\(flags): \(result.output)")
            }
            result = try await harness.cli(["tenant", "list", "--format", "csv"])
            #expect(result.output.hasPrefix("SLUG,") || result.output.contains(",lim,") || result.output.contains("lim,"), "\(result.output)")

            // Model names are checked: the demo model is known (the repository's models/), a typo is not.
            result = try await harness.cli(["key", "create", "--tenant", "lim", "--name", "k", "--models", "shakespear"])
            #expect(result.status == 1 && result.output.contains("unknown model 'shakespear'"), "\(result.output)")
            result = try await harness.cli(["price", "set", "--model", "shakespear", "--metric", "prompt_tokens", "--price", "1"])
            #expect(result.status == 1 && result.output.contains("unknown model"), "\(result.output)")
            result = try await harness.cli(["price", "set", "--model", "shakespeare", "--metric", "prompt_tokens", "--price", "7", "--tenant", "lim"])
            #expect(result.status == 0, "\(result.output)")
            result = try await harness.cli(["price", "list"])
            #expect(result.output.contains("lim"), "the tenant's slug beside its id: \(result.output)")

            // inherit and unlimited, and an override above the plan (free: 20 requests a minute).
            result = try await harness.cli(["limits", "set", "--tenant", "lim", "monthly_tokens=none"])
            #expect(result.status == 1 && result.output.contains("inherit") && result.output.contains("unlimited"), "\(result.output)")
            result = try await harness.cli(["limits", "set", "--tenant", "lim", "requests_per_minute=1000", "monthly_tokens=unlimited"])
            #expect(result.status == 0, "\(result.output)")
            result = try await harness.cli(["limits", "show", "--tenant", "lim", "--json"])
            let shown = try #require(try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any], "\(result.output)")
            let effective = shown["effective"] as? [String: Any]
            #expect(effective?["requests_per_minute"] as? Int == 1000)
            #expect(effective?["monthly_tokens"] is NSNull, "unlimited above the plan's 200000: \(result.output)")
            #expect((shown["tenant_overrides"] as? [String: Any])?["monthly_tokens"] as? String == "unlimited")
            let usage = shown["usage"] as? [String: [String: Any]]
            #expect(usage?["monthly_images"]?["remaining"] as? Int == 1000, "\(result.output)")
            #expect(usage?["monthly_images"]?["used"] as? Int == 0)
            result = try await harness.cli(["limits", "show", "--tenant", "lim"])
            #expect(result.output.contains("USED") && result.output.contains("REMAINING") && result.output.contains("inherit"), "\(result.output)")
            result = try await harness.cli(["limits", "set", "--tenant", "lim", "monthly_tokens=inherit"])
            #expect(result.status == 0)
            result = try await harness.cli(["limits", "show", "--tenant", "lim", "--json"])
            #expect(result.output.contains("\"monthly_tokens\" : 200000"), "back to the plan's: \(result.output)")

            // Grouped by key, a usage report names each key.
            let tenant = try await harness.system.tenants.resolve("lim")
            let key = try await harness.system.apiKeys.create(tenant: tenant, NewAPIKey(name: "reporting", scopes: [.inference]), issuer: .operator(.init("test")))
            try await harness.system.pool.execute(
                """
                INSERT INTO usage_rollups (tenant_id, key_id, model, hour, requests, prompt_tokens) VALUES ($1, $2, 'shakespeare', date_trunc('hour', now()), 1, 5)
                """, [tenant, key.key.id])
            result = try await harness.cli(["usage", "report", "--tenant", "lim", "--group-by", "key"])
            #expect(result.output.contains("reporting (\(key.key.prefix)…)"), "\(result.output)")
        }
    }
}
