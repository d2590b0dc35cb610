import ArgumentParser
import Foundation
import Platform
import Tenancy

struct TenantCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tenant", abstract: "Manage tenants.",
        subcommands: [Create.self, List.self, Show.self, Update.self, Suspend.self, Resume.self, Delete.self, RotateKey.self, SetSecret.self])

    static func table(_ tenants: [Tenant]) -> String {
        var table = TextTable(["ID", "SLUG", "NAME", "PLAN", "STATUS", "CREATED"])
        for tenant in tenants {
            table.add([tenant.id.uuidString.lowercased(), tenant.slug, tenant.displayName, tenant.plan, tenant.status.rawValue, Output.date(tenant.createdAt)])
        }
        return table.render()
    }

    static func show(_ tenant: Tenant, json: Bool) throws {
        if json { return try Output.json(tenant) }
        print("""
            id:              \(tenant.id.uuidString.lowercased())
            slug:            \(tenant.slug)
            name:            \(tenant.displayName)
            plan:            \(tenant.plan)
            status:          \(tenant.status.rawValue)
            contact email:   \(tenant.contactEmail ?? "-")
            billing details: \(tenant.billingDetails ?? "-")
            payload logging: \(tenant.payloadLogging ? "on" : "off")
            created:         \(Output.date(tenant.createdAt))
            """)
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a tenant (and its data key).")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Unique slug: lower-case letters, digits, '-'.") var slug: String
        @Option(help: "Display name.") var name: String
        @Option(help: "Contact e-mail (stored encrypted).") var email: String?
        @Option(help: "Billing details (stored encrypted).") var billing: String?
        @Option(help: "Plan (default from limits.defaultPlan).") var plan: String?
        @OptionGroup var output: OutputFormat
        var json: Bool { output.isJSON }

        func run() async throws {
            try await withServices(global) { services in
                let tenant = try await services.tenants.create(
                    slug: slug, displayName: name, contactEmail: email, billingDetails: billing, plan: plan, actor: .cli())
                try TenantCommand.show(tenant, json: json)
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List tenants.")
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Include deleted tenants.") var all = false
        @OptionGroup var output: OutputFormat
        var json: Bool { output.isJSON }

        func run() async throws {
            try await withServices(global) { services in
                let tenants = try await services.tenants.list(includeDeleted: all)
                if json { try Output.json(tenants) } else { print(TenantCommand.table(tenants), terminator: "") }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a tenant (decrypting its contact details).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Tenant id or slug.") var tenant: String
        @OptionGroup var output: OutputFormat
        var json: Bool { output.isJSON }

        func run() async throws {
            try await withServices(global) { services in
                try TenantCommand.show(try await services.tenants.get(try await services.tenants.resolve(tenant)), json: json)
            }
        }
    }

    struct Update: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change a tenant's fields (an empty value clears e-mail or billing).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Tenant id or slug.") var tenant: String
        @Option var name: String?
        @Option var email: String?
        @Option var billing: String?
        @Option var plan: String?
        @Option(help: "Keep encrypted request/response payloads: true or false.") var payloadLogging: Bool?
        @OptionGroup var output: OutputFormat
        var json: Bool { output.isJSON }

        func run() async throws {
            try await withServices(global) { services in
                let id = try await services.tenants.resolve(tenant)
                let updated = try await services.tenants.update(
                    id, TenantChanges(displayName: name, contactEmail: email, billingDetails: billing, plan: plan, payloadLogging: payloadLogging),
                    actor: .cli())
                try TenantCommand.show(updated, json: json)
            }
        }
    }

    struct Suspend: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Suspend a tenant: its keys get 403 until resumed.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Tenant id or slug.") var tenant: String

        func run() async throws {
            try await withServices(global) { services in
                let updated = try await services.tenants.suspend(try await services.tenants.resolve(tenant), actor: .cli())
                print("suspended \(updated.slug)")
            }
        }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Resume a suspended tenant.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Tenant id or slug.") var tenant: String

        func run() async throws {
            try await withServices(global) { services in
                let updated = try await services.tenants.resume(try await services.tenants.resolve(tenant), actor: .cli())
                print("resumed \(updated.slug)")
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a tenant: revoke its keys and destroy its data keys (crypto-shredding). Usage and invoices remain.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Tenant id or slug.") var tenant: String
        @Flag(help: "Confirm: the tenant's encrypted data becomes permanently unreadable.") var yes = false

        func run() async throws {
            guard yes else { CLI.fail("refusing to delete without --yes (this destroys the tenant's data keys for good)") }
            try await withServices(global) { services in
                let id = try await services.tenants.resolve(tenant)
                let report = try await services.tenants.delete(id, actor: .cli())
                print("deleted \(tenant): revoked \(report.revokedKeys) key(s), destroyed \(report.shreddedDataKeys) data key(s)")
            }
        }
    }

    struct RotateKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rotate-key", abstract: "Create a new data-key version for a tenant and re-seal its encrypted rows.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Tenant id or slug.") var tenant: String
        @Option(help: "Rows re-sealed per transaction.") var batchSize = 100

        func run() async throws {
            try await withServices(global) { services in
                let id = try await services.tenants.resolve(tenant)
                let report = try await services.keyringAdministration.rotateTenantKey(id, actor: .cli(), batchSize: batchSize)
                print("tenant \(tenant): data key version \(report.newVersion), re-sealed \(report.resealed) value(s), destroyed version(s) \(report.destroyedVersions.map(String.init).joined(separator: ", "))")
            }
        }
    }

    struct SetSecret: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-secret", abstract: "Store a tenant-supplied secret (read from standard input), encrypted.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Tenant id or slug.") var tenant: String
        @Argument(help: "Secret name.") var name: String

        func run() async throws {
            let value = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
                .trimmingCharacters(in: .newlines)
            guard !value.isEmpty else { CLI.fail("no secret on standard input") }
            try await withServices(global) { services in
                try await services.tenants.setSecret(try await services.tenants.resolve(tenant), name: name, value: value, actor: .cli())
                print("stored secret \(name)")
            }
        }
    }
}
