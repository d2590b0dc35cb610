import Foundation
import Platform
import Tenancy

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

    /// `24h`, `30m`, `90s`, `7d` or plain seconds; at most 100 years (a product past Int.max
    /// trapped once: `--grace 999999999999999d`).
    static func duration(_ text: String, option: String) throws -> Duration {
        let units: [Character: Int] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        var seconds: Int?
        if let value = Int(text), value >= 0 {
            seconds = value
        } else if let unit = text.last, let multiplier = units[unit], let value = Int(text.dropLast()), value >= 0 {
            let (product, overflow) = value.multipliedReportingOverflow(by: multiplier)
            seconds = overflow ? Int.max : product
        }
        guard let seconds else { throw TenancyError.invalid(field: option, message: "'\(text)' is not a duration (examples: 90s, 30m, 24h, 7d)") }
        guard seconds <= maximumDuration else { throw TenancyError.invalid(field: option, message: "'\(text)' is longer than 100 years") }
        return .seconds(seconds)
    }

    static let maximumDuration = 100 * 365 * 86_400

    /// An ISO 8601 time, or a duration from now (`30d`).
    static func expiry(_ text: String) throws -> Date {
        if let date = ISO8601DateFormatter().date(from: text) { return date }
        let span = try duration(text, option: "--expires")
        return Date().addingTimeInterval(Double(span.components.seconds))
    }
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
