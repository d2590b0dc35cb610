import ArgumentParser
import Foundation
import Platform
import Tenancy

extension ModelCommand {
    /// `modelgate model credential set|show|clear NAME`: the secret an upstream model's servers
    /// want. It is read from stdin or a file, never from the command line (argv is visible to
    /// every user of the machine and lands in shell history).
    struct Credential: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The credential an upstream model sends its servers (stored sealed; only a fingerprint is shown).",
            subcommands: [Set.self, Show.self, Clear.self])

        struct Set: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Store (or replace) the credential, read from stdin or --file; servers use it within seconds.")
            @OptionGroup var global: GlobalOptions
            @Argument var name: String
            @Option(help: "Read the credential from this file instead of stdin.") var file: String?
            @OptionGroup var output: OutputFormat

            func run() async throws {
                let secret = try Credential.read(file: file)
                try await withServices(global) { services in
                    let model = try await Credential.model(name, services)
                    let info = try await services.upstreamCredentials.set(model: model, secret: secret, actor: .cli())
                    if output.isJSON { return try Output.json(info) }
                    Swift.print("credential of \(info.model) set (\(info.fingerprint))")
                }
            }
        }

        struct Show: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "The credential's fingerprint and when it was set.")
            @OptionGroup var global: GlobalOptions
            @Argument var name: String
            @OptionGroup var output: OutputFormat

            func run() async throws {
                try await withServices(global) { services in
                    let model = try await Credential.model(name, services)
                    guard let info = try await services.upstreamCredentials.info(model: model) else { CLI.fail("model '\(model)' has no credential") }
                    if output.isJSON { return try Output.json(info) }
                    Swift.print("\(info.model)  \(info.fingerprint)  set \(Output.date(info.updatedAt))")
                }
            }
        }

        struct Clear: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Remove the credential.")
            @OptionGroup var global: GlobalOptions
            @Argument var name: String

            func run() async throws {
                try await withServices(global) { services in
                    let model = try await Credential.model(name, services)
                    guard try await services.upstreamCredentials.clear(model: model, actor: .cli()) else { CLI.fail("model '\(model)' has no credential") }
                    Swift.print("credential of \(model) removed")
                }
            }
        }

        /// The model's own name (an alias resolved); refused for a model of another engine.
        static func model(_ name: String, _ services: ModelGateServices) async throws -> String {
            let model = try await ModelControl.checkKnown([name], option: "NAME", pool: services.pool, configuration: services.configuration)[0]
            let rows = try await services.pool.query("SELECT engine FROM models WHERE name = $1", [model])
            if let engine = try rows.first?.decode("engine", as: String.self), engine != "upstream" {
                CLI.fail("'\(model)' is served by the \(engine) engine; only upstream models take a credential")
            }
            return model
        }

        /// The secret from `file` or stdin, without its trailing line break. From a terminal it
        /// is read without echo.
        static func read(file: String?) throws -> String {
            var text: String
            if let file {
                guard let data = FileManager.default.contents(atPath: file) else { CLI.fail("cannot read \(file)") }
                text = String(decoding: data, as: UTF8.self)
            } else if isatty(STDIN_FILENO) == 1 {
                FileHandle.standardError.write(Data("credential (not echoed): ".utf8))
                var settings = termios()
                tcgetattr(STDIN_FILENO, &settings)
                var silent = settings
                silent.c_lflag &= ~tcflag_t(ECHO)
                tcsetattr(STDIN_FILENO, TCSANOW, &silent)
                text = Swift.readLine(strippingNewline: true) ?? ""
                tcsetattr(STDIN_FILENO, TCSANOW, &settings)
                FileHandle.standardError.write(Data("\n".utf8))
            } else {
                text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
            }
            while text.hasSuffix("\n") || text.hasSuffix("\r") { text.removeLast() }
            guard !text.isEmpty else { CLI.fail("no credential given (pipe it on stdin or pass --file)") }
            return text
        }
    }
}
