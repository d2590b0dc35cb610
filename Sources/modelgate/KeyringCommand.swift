import ArgumentParser
import Encryption
import Foundation
import Platform
import Tenancy

struct KeyringCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keyring", abstract: "Master keys: create, inspect, rotate, retire.",
        subcommands: [Initialize.self, Status.self, Rotate.self, Retire.self])

    struct Initialize: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "init", abstract: "Create the master key file (mode 0600).")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let configuration = try await global.load()
            await CLI.run {
                _ = try KeyringBootstrap.create(file: configuration.keyring.file, logger: CLI.logger())
                print("created \(configuration.keyring.file); back it up somewhere safe")
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Master-key versions and how many data keys each wraps.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: OutputFormat
        var json: Bool { output.isJSON }

        func run() async throws {
            try await withServices(global) { services in
                let (versions, rotating) = try await services.keyringAdministration.status()
                if json {
                    struct Body: Encodable { var versions: [KeyringAdministration.VersionStatus]; var rotation_in_progress: Int? }
                    return try Output.json(Body(versions: versions, rotation_in_progress: rotating))
                }
                var table = TextTable(["VERSION", "STATE", "DATA KEYS"])
                for version in versions {
                    table.add([String(version.version), version.primary ? "primary" : (version.retired ? "retired" : "decrypt-only"), String(version.dataKeys)])
                }
                print(table.render(), terminator: "")
                if let rotating { print("rotation to version \(rotating) is unfinished: run 'modelgate keyring rotate' to complete it") }
            }
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a new primary master key and rewrap every data key (resumes an interrupted rotation).")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Data keys rewrapped per transaction.") var batchSize = 100
        @Option(help: "Pause between batches in milliseconds (to spare a busy database).") var pauseMs = 0

        func run() async throws {
            try await withServices(global) { services in
                let report = try await services.keyringAdministration.rotate(
                    actor: .cli(), batchSize: max(1, batchSize), pauseBetweenBatches: .milliseconds(max(0, pauseMs)))
                print("\(report.resumed ? "resumed and completed" : "completed") rotation to master key version \(report.newVersion): rewrapped \(report.rewrapped) data key(s)")
            }
        }
    }

    struct Retire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Destroy a master-key version (refused while any data key is wrapped by it).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Version number.") var version: Int
        @Flag(help: "Confirm: the version's key material is destroyed for good.") var yes = false

        func run() async throws {
            guard yes else { CLI.fail("retiring destroys master key version \(version) for good; add --yes to confirm") }
            try await withServices(global) { services in
                try await services.keyringAdministration.retire(version: version, actor: .cli())
                print("retired master key version \(version)")
            }
        }
    }
}
