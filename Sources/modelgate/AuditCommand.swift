import ArgumentParser
import Audit
import Foundation
import Platform
import Tenancy

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "The tamper-evident audit log.", subcommands: [Verify.self, List.self])

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check the hash chain; names the first broken entry.")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            try await withServices(global) { services in
                let result = try await AuditLog.verify(services.pool)
                if let broken = result.firstBrokenEntry {
                    CLI.fail("audit log broken at entry \(broken): \(result.reason ?? "hash mismatch") (\(result.entries) entries read)")
                }
                print("audit log intact: \(result.entries) entries")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List audit entries.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Tenant id or slug.") var tenant: String?
        @Option(help: "Only entries at or after this ISO 8601 time (or a duration ago, e.g. 24h).") var since: String?
        @Option(help: "At most this many entries.") var limit = 1000
        @OptionGroup var output: OutputFormat
        var json: Bool { output.isJSON }

        func run() async throws {
            try await withServices(global) { services in
                let tenantID = try await tenant.asyncMap { try await services.tenants.resolve($0) }
                let sinceDate = try since.map { text -> Date in
                    if let date = ISO8601DateFormatter().date(from: text) { return date }
                    return Date().addingTimeInterval(-Double(try Output.duration(text, option: "--since").components.seconds))
                }
                let entries = try await AuditLog.list(services.pool, tenant: tenantID, since: sinceDate, limit: limit)
                if json { return try Output.json(entries) }
                var table = TextTable(["ID", "AT", "ACTOR", "ACTION", "TARGET", "DETAILS"])
                for entry in entries {
                    table.add([String(entry.id), Output.date(entry.at), entry.actor, entry.action, entry.target, entry.details])
                }
                print(table.render(), terminator: "")
            }
        }
    }
}

extension Optional {
    func asyncMap<Result>(_ transform: (Wrapped) async throws -> Result) async rethrows -> Result? {
        guard let value = self else { return nil }
        return try await transform(value)
    }
}
