import ArgumentParser
import Foundation
import Inference
import Platform
import Postgres

struct ModelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model", abstract: "The model registry of the running servers.",
        subcommands: [List.self, Show.self, Load.self, Unload.self, Reload.self, Remove.self, Credential.self, Check.self])

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

    /// A model folder loaded here as a server would load it, with no server or database: before
    /// copying it into a fleet's models directory, an operator sees that it loads and what
    /// memory it takes, or the one-line error a server would report.
    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load a model folder as a server would (no server or database needed): its task, load time and peak memory growth.")
        @Argument(help: "The model folder (model.json and its files).") var folder: String
        @OptionGroup var output: OutputFormat

        struct Report: Encodable {
            var folder: String
            var task: String
            var load_seconds: Double
            /// Peak resident memory while loading, less the resident memory before it.
            var memory_growth_bytes: Int
            /// Resident memory once loaded, less the resident memory before it.
            var resident_growth_bytes: Int
        }

        func run() async throws {
            CLI.checkKernels()
            let before = ProcessMemory.residentBytes()
            let start = Date()
            var resident = 0
            let task = try EngineFactories.checkByLoading(directory: folder, factories: ModelDirectory.engines) { resident = ProcessMemory.residentBytes() }
            let report = Report(
                folder: folder, task: task.rawValue, load_seconds: (Date().timeIntervalSince(start) * 100).rounded() / 100,
                memory_growth_bytes: max(0, ProcessMemory.peakResidentBytes() - before), resident_growth_bytes: max(0, resident - before))
            if output.isJSON { return try Output.json(report) }
            Swift.print(
                "\(folder): loads (\(report.task)) in \(report.load_seconds) s; memory growth \(report.resident_growth_bytes >> 20) MiB loaded, \(report.memory_growth_bytes >> 20) MiB at its peak")
        }
    }
}

/// This process's resident memory, from /proc/self/status (0 where it cannot be read).
enum ProcessMemory {
    static func residentBytes() -> Int { procBytes("/proc/self/status", "VmRSS") ?? 0 }
    /// The most it has been resident since it started.
    static func peakResidentBytes() -> Int { procBytes("/proc/self/status", "VmHWM") ?? 0 }
}
