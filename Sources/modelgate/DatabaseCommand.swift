import ArgumentParser
import Foundation
import Platform
import Postgres

struct DatabaseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "db",
        abstract: "Manage the local PostgreSQL cluster of zero-config mode.",
        subcommands: [Init.self, Stop.self, Status.self])

    struct Init: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create the local PostgreSQL cluster, its schema and the master key file here (what 'serve' does on first start).")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let configuration = try await global.load()
            await CLI.run {
                guard let cluster = try DatabaseBootstrap.localCluster(configuration, logger: CLI.logger()) else {
                    CLI.fail("database.url is configured: there is no local cluster to create (apply the schema with 'modelgate migrate')")
                }
                let existed = cluster.exists
                let keyFileExisted = FileManager.default.fileExists(atPath: configuration.keyring.file)
                let services = try await ModelGateServices.open(configuration, logger: CLI.logger(), create: true)
                await services.close()
                print(existed ? "local PostgreSQL in \(cluster.directory) exists; its schema is current" : "created local PostgreSQL in \(cluster.directory)")
                if let file = services.keyFile, !keyFileExisted { print("created master key file \(file) (back it up)") }
            }
        }
    }

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
