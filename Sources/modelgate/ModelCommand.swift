import ArgumentParser
import Foundation
import Platform
import Postgres

struct ModelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model", abstract: "The model registry of the running servers.",
        subcommands: [List.self, Show.self, Load.self, Unload.self, Reload.self, Remove.self, Credential.self])

    struct Row: Encodable {
        var name: String
        var engine: String
        var task: String?
        var version: String
        var status: String
        var reason: String?
        var visibility: [String]?
        var updated_at: Date
        /// An upstream model's endpoints as a server last reported them.
        var endpoints: [ModelControl.EndpointReport]?
    }

    static func rows(_ services: ModelGateServices, name: String? = nil) async throws -> [Row] {
        try await services.pool.query("SELECT * FROM models WHERE $1::text IS NULL OR name = $1 ORDER BY name", [name]).map {
            Row(name: try $0.decode("name"), engine: try $0.decode("engine"), task: try $0.decode("task"), version: try $0.decode("version"),
                status: try $0.decode("status"), reason: try $0.decode("reason"), visibility: try $0.decode("tenants"), updated_at: try $0.decode("updated_at"),
                endpoints: try $0.decode("endpoints", as: String?.self).flatMap { try? JSONDecoder().decode([ModelControl.EndpointReport].self, from: Data($0.utf8)) })
        }
    }

    static func print(_ rows: [Row], json: Bool) throws {
        if json { return try Output.json(rows) }
        var table = TextTable(["NAME", "ENGINE", "TASK", "VERSION", "STATUS", "VISIBILITY", "UPDATED"])
        for row in rows {
            table.add([row.name, row.engine, row.task ?? "-", row.version, row.status + (row.reason.map { " (\($0))" } ?? ""),
                       row.visibility?.joined(separator: ",") ?? "public", Output.date(row.updated_at)])
        }
        Swift.print(table.render(), terminator: "")
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Models as the servers last reported them.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: OutputFormat
        var json: Bool { output.isJSON }
        func run() async throws {
            try await withServices(global) { services in try ModelCommand.print(try await ModelCommand.rows(services), json: json) }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One model.")
        @OptionGroup var global: GlobalOptions
        @Argument var name: String
        @OptionGroup var output: OutputFormat
        var json: Bool { output.isJSON }
        func run() async throws {
            try await withServices(global) { services in
                let rows = try await ModelCommand.rows(services, name: name)
                guard !rows.isEmpty else { CLI.fail("no model '\(name)' (is a server running with it in its model directory?)") }
                try ModelCommand.print(rows, json: json)
                if !json, let endpoints = rows[0].endpoints {
                    var table = TextTable(["ENDPOINT", "HEALTHY", "OUTSTANDING", "REQUESTS", "FAILURES", "MEAN LATENCY"])
                    for endpoint in endpoints {
                        table.add([
                            endpoint.endpoint, endpoint.healthy ? "yes" : "no (ejected)", String(endpoint.outstanding), String(endpoint.requests),
                            String(endpoint.failures), endpoint.meanLatencyMs.map { "\($0) ms" } ?? "-",
                        ])
                    }
                    Swift.print("\n" + table.render(), terminator: "")
                }
            }
        }
    }

    /// Sends an action to every running server and waits (up to 60 s) for the table to change.
    /// A load or reload first checks the model's folder here, so a typo never reaches them.
    static func send(_ action: String, _ name: String, _ global: GlobalOptions) async throws {
        try await withServices(global) { services in
            if action != "unload" { try ModelControl.checkFolder(name, configuration: services.configuration) }
            let before = try await rows(services, name: name).first?.updated_at ?? .distantPast
            try await services.pool.execute("SELECT pg_notify($1, $2)", [ModelControl.channel, action + ":" + name])
            let deadline = Date().addingTimeInterval(60)
            while Date() < deadline {
                if let row = try await rows(services, name: name).first, row.updated_at > before {
                    try ModelCommand.print([row], json: false)
                    // Failed, or (a reload) failed while the version before keeps serving.
                    if row.status == "failed" || row.reason != nil { throw ExitCode(1) }
                    return
                }
                try await Task.sleep(for: .milliseconds(200))
            }
            CLI.fail("no server reported '\(name)' within 60 s (is one running?)")
        }
    }

    struct Load: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Load a model from the model directory on every server.")
        @OptionGroup var global: GlobalOptions
        @Argument var name: String
        func run() async throws { try await ModelCommand.send("load", name, global) }
    }

    struct Unload: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop serving a model on every server.")
        @OptionGroup var global: GlobalOptions
        @Argument var name: String
        func run() async throws { try await ModelCommand.send("unload", name, global) }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop serving a model on every server and forget it (a failed load's entry, say); its folder stays.")
        @OptionGroup var global: GlobalOptions
        @Argument var name: String
        func run() async throws {
            try await withServices(global) { services in
                guard try await !ModelCommand.rows(services, name: name).isEmpty else { CLI.fail("no model '\(name)' (see 'modelgate model list')") }
                try await services.pool.execute("SELECT pg_notify($1, $2)", [ModelControl.channel, "remove:" + name])
                try await services.pool.execute("DELETE FROM models WHERE name = $1", [name])
                Swift.print("removed \(name)")
            }
        }
    }

    struct Reload: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Load a model's new version and swap it in (running requests finish on the old one).")
        @OptionGroup var global: GlobalOptions
        @Argument var name: String
        func run() async throws { try await ModelCommand.send("reload", name, global) }
    }
}
