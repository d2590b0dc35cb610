import ArgumentParser
import Platform
import Postgres

struct DatabaseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "db",
        abstract: "Manage the local PostgreSQL cluster of zero-config mode.",
        subcommands: [Stop.self, Status.self])

    struct Stop: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop the local PostgreSQL cluster.")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let configuration = try await global.load()
            await CLI.run {
                guard let cluster = try DatabaseBootstrap.localCluster(configuration, logger: CLI.logger()) else {
                    CLI.fail("database.url is configured: there is no local cluster to stop")
                }
                if cluster.isRunning {
                    try cluster.stop()
                    print("stopped local PostgreSQL in \(cluster.directory)")
                } else {
                    print("local PostgreSQL in \(cluster.directory) is not running")
                }
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show whether the local PostgreSQL cluster runs.")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let configuration = try await global.load()
            await CLI.run {
                guard let cluster = try DatabaseBootstrap.localCluster(configuration, logger: CLI.logger()) else {
                    print("external database configured (database.url)")
                    return
                }
                print("local PostgreSQL in \(cluster.directory): \(cluster.isRunning ? "running" : "stopped")")
            }
        }
    }
}
