import ArgumentParser
import Foundation
import Inference
import Logging
import Platform

@main
struct ModelGateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "modelgate",
        abstract: "ModelGate: a self-hosted, multi-tenant, OpenAI-compatible model gateway.",
        version: ModelGateVersion.current,
        subcommands: [
            ServeCommand.self, MigrateCommand.self, DatabaseCommand.self, TenantCommand.self, KeyCommand.self,
            AdminKeyCommand.self, AuditCommand.self, KeyringCommand.self, PlanCommand.self, LimitsCommand.self,
            PriceCommand.self, UsageCommand.self, BillingCommand.self, ModelCommand.self,
        ])
}

extension ModelGateCommand {
    /// A mistyped subcommand (`tenant craete --slug x`) is named, with the nearest one, before
    /// ArgumentParser would complain about the options after it.
    static func main() async {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if let message = SubcommandCheck.problem(arguments, root: Self.self) { CLI.fail(message, code: 64) }
        await main(arguments)
    }
}

/// Finds the first argument that stands where a subcommand must and names none.
enum SubcommandCheck {
    static func problem(_ arguments: [String], root: any ParsableCommand.Type) -> String? {
        var command = root
        var path = [root.configuration.commandName ?? "modelgate"]
        for argument in arguments {
            let subcommands = command.configuration.subcommands
            guard !subcommands.isEmpty, !argument.hasPrefix("-") else { return nil }
            let names = subcommands.map { $0.configuration.commandName ?? $0._commandName }
            guard let index = names.firstIndex(of: argument) else {
                if argument == "help" { return nil }
                let nearest = names.min { distance(argument, $0) < distance(argument, $1) }
                let hint = nearest.map { distance(argument, $0) <= max(2, argument.count / 2) ? "; did you mean '\($0)'?" : "" } ?? ""
                return "unknown subcommand '\(argument)' of '\(path.joined(separator: " "))'\(hint) (see '\(path.joined(separator: " ")) --help')"
            }
            command = subcommands[index]
            path.append(argument)
        }
        return nil
    }

    /// Levenshtein distance.
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var previous = Array(0...b.count)
        for (i, left) in a.enumerated() {
            var current = [i + 1]
            for (j, right) in b.enumerated() {
                current.append(min(previous[j + 1] + 1, current[j] + 1, previous[j] + (left == right ? 0 : 1)))
            }
            previous = current
        }
        return previous[b.count]
    }
}

/// Options every command shares.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "JSON configuration file (overrides config/modelgate.json; environment variables override both).")
    var config: String?

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String?

    /// Loads the configuration or exits with status 2 and one clear line.
    func load(overrides: (inout [String: String]) -> Void = { _ in }) async throws -> ModelGateConfiguration {
        var environment = ProcessInfo.processInfo.environment
        if let logLevel { environment["MODELGATE_LOG_LEVEL"] = logLevel }
        overrides(&environment)
        CLI.checkKernels()
        do {
            let configuration = try await ModelGateConfiguration.load(configFile: config, environment: environment)
            ModelGateLogging.bootstrap(level: configuration.log.level, format: configuration.log.format)
            return configuration
        } catch let error as ConfigurationError {
            CLI.fail(error.description, code: 2)
        }
    }
}

enum CLI {
    /// Prints `modelgate: <message>` on stderr and exits.
    static func fail(_ message: String, code: Int32 = 1) -> Never {
        FileHandle.standardError.write(Data("modelgate: \(message)\n".utf8))
        exit(code)
    }

    /// Runs a command body, turning any error into one line on stderr and exit status 1.
    static func run(_ body: () async throws -> Void) async {
        do {
            try await body()
        } catch let error as ExitCode {
            exit(error.rawValue)
        } catch {
            fail("\(error)")
        }
    }

    static func logger(_ label: String = "modelgate") -> Logger { Logger(label: label) }

    /// Exits with status 2 and one line where MODELGATE_KERNELS is not valid here.
    static func checkKernels() {
        do { try KernelSelection.validate() } catch { fail("\(error)", code: 2) }
    }
}
