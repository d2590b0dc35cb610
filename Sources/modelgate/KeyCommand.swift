import ArgumentParser
import Foundation
import Platform
import Tenancy

struct KeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key", abstract: "Manage a tenant's API keys.",
        subcommands: [Create.self, List.self, Revoke.self, Rotate.self])

    static func table(_ keys: [APIKey]) -> String {
        var table = TextTable(["ID", "PREFIX", "NAME", "SCOPES", "MODELS", "STATE", "EXPIRES", "LAST USED"])
        let now = Date()
        for key in keys {
            let state = key.revokedAt != nil ? "revoked" : (key.isUsable(at: now) ? (key.replacedBy != nil ? "rotating" : "active") : "expired")
            table.add([
                key.id.uuidString.lowercased(), key.prefix + "…", key.name, key.scopes.map(\.rawValue).joined(separator: ","),
                key.allowedModels.isEmpty ? "*" : key.allowedModels.joined(separator: ","), state, Output.date(key.expiresAt),
                Output.date(key.lastUsedAt),
            ])
        }
        return table.render()
    }

    static func printCreated(_ created: CreatedAPIKey, json: Bool) throws {
        if json {
            struct Body: Encodable { var key: String; var api_key: APIKey }
            return try Output.json(Body(key: created.secret, api_key: created.key))
        }
        print("""
            \(created.secret)

            id \(created.key.id.uuidString.lowercased()), scopes \(created.key.scopes.map(\.rawValue).joined(separator: ",")), expires \(Output.date(created.key.expiresAt))
            This is the only time the key is shown; store it now.
            """)
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a key for a tenant; prints it once.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Tenant id or slug.") var tenant: String
        @Option(help: "A name for the key.") var name: String
        @Option(help: "Comma-separated scopes: inference, usage:read, keys:manage.") var scopes = "inference"
        @Option(name: [.customLong("models"), .customLong("allowed-models")], help: "Comma-separated models this key may use (default: all the tenant may use).")
        var models: String?
        @Option(name: [.customLong("expires"), .customLong("expires-at")], help: "Expiry: an ISO 8601 time or a duration such as 30d.") var expires: String?
        @OptionGroup var output: OutputFormat
        var json: Bool { output.isJSON }

        func run() async throws {
            try await withServices(global) { services in
                let id = try await services.tenants.resolve(tenant)
                let named = models.map { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } } ?? []
                let allowed = try await ModelControl.checkKnown(named, option: "--models", pool: services.pool, configuration: services.configuration)
                let request = NewAPIKey(name: name, scopes: try Scope.parseList(scopes), allowedModels: allowed, expiresAt: try expires.map(Output.expiry))
                try KeyCommand.printCreated(try await services.apiKeys.create(tenant: id, request, issuer: .operator(.cli())), json: json)
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a tenant's keys (never their secrets).")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Tenant id or slug.") var tenant: String
        @OptionGroup var output: OutputFormat
        var json: Bool { output.isJSON }

        func run() async throws {
            try await withServices(global) { services in
                let keys = try await services.apiKeys.list(tenant: try await services.tenants.resolve(tenant))
                if json { try Output.json(keys) } else { print(KeyCommand.table(keys), terminator: "") }
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key at once.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Tenant id or slug.") var tenant: String
        @Argument(help: "Key id.") var key: String

        func run() async throws {
            guard let keyID = UUID(uuidString: key) else { CLI.fail("'\(key)' is not a key id (see 'modelgate key list')") }
            try await withServices(global) { services in
                let revoked = try await services.apiKeys.revoke(keyID, tenant: try await services.tenants.resolve(tenant), actor: .cli())
                print("revoked \(revoked.prefix)…")
            }
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Issue a replacement key; the old one works for a grace period.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Tenant id or slug.") var tenant: String
        @Argument(help: "Key id.") var key: String
        @Option(help: "How long the old key keeps working (e.g. 24h, 0 to stop it now).") var grace = "24h"
        @OptionGroup var output: OutputFormat
        var json: Bool { output.isJSON }

        func run() async throws {
            guard let keyID = UUID(uuidString: key) else { CLI.fail("'\(key)' is not a key id (see 'modelgate key list')") }
            try await withServices(global) { services in
                let created = try await services.apiKeys.rotate(
                    keyID, tenant: try await services.tenants.resolve(tenant), grace: try Output.duration(grace, option: "--grace"), issuer: .operator(.cli()))
                try KeyCommand.printCreated(created, json: json)
            }
        }
    }
}

struct AdminKeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "admin-key", abstract: "Operator keys (scope admin), through direct database access.",
        subcommands: [Create.self, List.self, Revoke.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an operator key; prints it once.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "A name for the key.") var name = "operator"
        @Option(help: "Expiry: an ISO 8601 time or a duration such as 90d.") var expires: String?
        @OptionGroup var output: OutputFormat
        var json: Bool { output.isJSON }

        func run() async throws {
            try await withServices(global) { services in
                let created = try await services.apiKeys.create(
                    tenant: nil, NewAPIKey(name: name, scopes: [.admin], expiresAt: try expires.map(Output.expiry)), issuer: .operator(.cli()))
                try KeyCommand.printCreated(created, json: json)
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List operator keys.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: OutputFormat
        var json: Bool { output.isJSON }

        func run() async throws {
            try await withServices(global) { services in
                let keys = try await services.apiKeys.list(tenant: nil)
                if json { try Output.json(keys) } else { print(KeyCommand.table(keys), terminator: "") }
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke an operator key.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Key id.") var key: String

        func run() async throws {
            guard let keyID = UUID(uuidString: key) else { CLI.fail("'\(key)' is not a key id") }
            try await withServices(global) { services in
                let revoked = try await services.apiKeys.revoke(keyID, tenant: nil, actor: .cli())
                print("revoked \(revoked.prefix)…")
            }
        }
    }
}
