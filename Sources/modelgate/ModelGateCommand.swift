import ArgumentParser
import Foundation
import Logging
import Platform

@main
struct ModelGateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "modelgate",
        abstract: "ModelGate: a self-hosted, multi-tenant, OpenAI-compatible model gateway.",
        subcommands: [
            ServeCommand.self, MigrateCommand.self, DatabaseCommand.self, TenantCommand.self, KeyCommand.self,
            AdminKeyCommand.self, AuditCommand.self, KeyringCommand.self, PlanCommand.self, LimitsCommand.self,
            PriceCommand.self, UsageCommand.self, BillingCommand.self, ModelCommand.self,
        ])
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
}
