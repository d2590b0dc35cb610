import ArgumentParser
import Foundation
import Platform
import Postgres

struct MigrateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Apply pending database migrations (serve does this at start).")

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Show each migration's state instead of applying.")
    var status = false

    func run() async throws {
        let configuration = try await global.load()
        await CLI.run {
            let logger = CLI.logger()
            let pool = try await DatabaseBootstrap.openPool(configuration, logger: logger)
            let migrator = DatabaseBootstrap.migrator(pool, logger: logger)
            if status {
                let statuses = try await migrator.status()
                var table = TextTable(["VERSION", "NAME", "STATE", "APPLIED AT"])
                for entry in statuses {
                    table.add([
                        String(format: "%04d", entry.version), entry.name, entry.state.rawValue,
                        entry.appliedAt.map { ISO8601DateFormatter().string(from: $0) } ?? "-",
                    ])
                }
                print(table.render(), terminator: "")
                if statuses.contains(where: { $0.state == .edited }) { throw ExitCode(1) }
            } else {
                let applied = try await migrator.migrate()
                print(applied.isEmpty ? "schema is up to date" : "applied \(applied.count) migration(s): " + applied.map(\.fileName).joined(separator: ", "))
            }
            await pool.shutdown()
        }
    }
}
