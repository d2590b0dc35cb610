import ArgumentParser
import Platform

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the gateway (starts a local PostgreSQL when no database URL is configured).")

    @OptionGroup var global: GlobalOptions

    @Option(help: "Listen address (default from server.host).")
    var host: String?

    @Option(help: "Listen port (default from server.port).")
    var port: Int?

    @Option(help: "Log format: text or json.")
    var logFormat: String?

    func run() async throws {
        let configuration = try await global.load { environment in
            if let host { environment["MODELGATE_SERVER_HOST"] = host }
            if let port { environment["MODELGATE_SERVER_PORT"] = String(port) }
            if let logFormat { environment["MODELGATE_LOG_FORMAT"] = logFormat }
        }
        await CLI.run {
            try await ModelGateServer.run(configuration, logger: CLI.logger())
        }
    }
}
