import Foundation
import Testing

/// `../shared` beside the project: reference data that tests use when present.
enum SharedData {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let root = ProcessInfo.processInfo.environment["MODELGATE_SHARED"] ?? repository.deletingLastPathComponent().appendingPathComponent("shared").path

    static func path(_ relative: String) -> String? {
        let full = root + "/" + relative
        return FileManager.default.fileExists(atPath: full) ? full : nil
    }

    static var fixtures: String {
        Bundle.module.resourcePath.map { $0 + "/Fixtures" } ?? repository.appendingPathComponent("Tests/InferenceTests/Fixtures").path
    }
}
