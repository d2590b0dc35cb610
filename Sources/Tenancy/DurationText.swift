import Foundation

/// Durations and expiries as people type them, the same in the CLI (`--expires 30d`,
/// `--grace 24h`) and the HTTP API (`"expires": "30d"`).
public enum DurationText {
    /// The longest duration accepted: 100 years (a product past Int.max trapped once:
    /// `--grace 999999999999999d`).
    public static let maximumSeconds = 100 * 365 * 86_400

    /// `24h`, `30m`, `90s`, `7d` or plain seconds; `field` names the option or field in errors.
    public static func duration(_ text: String, field: String) throws -> Duration {
        let units: [Character: Int] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        var seconds: Int?
        if let value = Int(text), value >= 0 {
            seconds = value
        } else if let unit = text.last, let multiplier = units[unit], let value = Int(text.dropLast()), value >= 0 {
            let (product, overflow) = value.multipliedReportingOverflow(by: multiplier)
            seconds = overflow ? Int.max : product
        }
        guard let seconds else { throw TenancyError.invalid(field: field, message: "'\(text)' is not a duration (examples: 90s, 30m, 24h, 7d)") }
        guard seconds <= maximumSeconds else { throw TenancyError.invalid(field: field, message: "'\(text)' is longer than 100 years") }
        return .seconds(seconds)
    }

    /// An ISO 8601 time, or a duration from now (`30d`).
    public static func expiry(_ text: String, field: String) throws -> Date {
        if let date = ISO8601DateFormatter().date(from: text) { return date }
        let span = try duration(text, field: field)
        return Date().addingTimeInterval(Double(span.components.seconds))
    }
}
