import ArgumentParser
import Foundation
import Synchronization
import Platform
import Tenancy

/// `--format table|json|csv` on every command that prints data, with `--json` kept as the
/// short spelling of `--format json` (scripts and the README use it).
struct OutputFormat: ParsableArguments {
    @Option(help: "Output: table, json or csv.") var format: ReportFormat?
    @Flag(help: "JSON output (the same as --format json).") var json = false

    /// The format asked for; every table of the command renders in it.
    var value: ReportFormat { json ? .json : (format ?? .table) }
    var isJSON: Bool { value == .json }

    /// One command per process: what `TextTable.render` uses.
    private static let chosen = Mutex<ReportFormat>(.table)
    static var current: ReportFormat { chosen.withLock { $0 } }

    mutating func validate() throws {
        if json, let format, format != .json { throw ValidationError("--json and --format \(format.rawValue) contradict each other") }
        let value = self.value
        Self.chosen.withLock { $0 = value }
    }
}

enum Output {
    static func json<Value: Encodable>(_ value: Value) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        print(String(decoding: try encoder.encode(value), as: UTF8.self))
    }

    static func date(_ date: Date?) -> String {
        guard let date else { return "-" }
        return ISO8601DateFormatter().string(from: date)
    }

    /// `24h`, `30m`, `90s`, `7d` or plain seconds.
    static func duration(_ text: String, option: String) throws -> Duration { try DurationText.duration(text, field: option) }

    /// An ISO 8601 time, or a duration from now (`30d`).
    static func expiry(_ text: String) throws -> Date { try DurationText.expiry(text, field: "--expires") }
}

/// Opens the services for one CLI command and closes them afterwards.
func withServices(_ global: GlobalOptions, _ body: (ModelGateServices) async throws -> Void) async throws {
    let configuration = try await global.load()
    await CLI.run {
        let services = try await ModelGateServices.open(configuration, logger: CLI.logger())
        do {
            try await body(services)
        } catch {
            await services.close()
            throw error
        }
        await services.close()
    }
}
