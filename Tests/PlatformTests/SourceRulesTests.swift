import Foundation
import Testing

/// Rules about the code itself that a compiler does not check: raw key material stays out of
/// the public API, and no test leaves its cleanup to an unawaited task.
@Suite struct SourceRulesTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Every Swift file under `folder`, as (path relative to the root, lines without comments).
    static func swiftFiles(under folder: String) throws -> [(path: String, lines: [String])] {
        let base = root.appendingPathComponent(folder)
        guard let walker = FileManager.default.enumerator(at: base, includingPropertiesForKeys: nil) else { return [] }
        var files: [(String, [String])] = []
        for case let url as URL in walker where url.pathExtension == "swift" {
            let text = try String(contentsOf: url, encoding: .utf8)
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
                let code = line.range(of: "//").map { line[..<$0.lowerBound] } ?? line[...]
                return String(code)
            }
            files.append((String(url.path.dropFirst(root.path.count + 1)), lines))
        }
        return files.sorted { $0.0 < $1.0 }
    }

    /// Declarations that handle raw key bytes: reachable from tests and benchmarks (`package`),
    /// never from another product's code (`public`).
    @Test func rawKeyCryptoIsNotPublicAPI() throws {
        let files = try Self.swiftFiles(under: "Sources")
        #expect(files.count > 50, "the sources were found at \(Self.root.path)")
        let rawKeyDeclarations = try [
            #"func\s+seal\(_\s+plaintext:\s*\[UInt8\],\s*key:"#,  // AES256GCM under a caller's key
            #"func\s+open\(_\s+sealed:\s*\[UInt8\],\s*key:"#,
            #"func\s+unwrapAll\("#,  // KeyRing: every data key in the clear
            #"func\s+unwrap\(_\s+(wrapped|entry):"#,  // MasterKeys, KeyRing: one key in the clear
            #"(let|var)\s+pepper\b"#,  // the API-key pepper travels inside KeyHasher only
            #"pepper:\s*\[UInt8\]"#,
        ].map { try Regex($0) }
        let exposure = try Regex(#"\b(public|open)\s"#)
        var found: [String] = []
        var exposed: [String] = []
        for (path, lines) in files {
            for (number, line) in lines.enumerated() where rawKeyDeclarations.contains(where: { line.contains($0) }) {
                found.append("\(path):\(number + 1)")
                if line.contains(exposure) { exposed.append("\(path):\(number + 1): \(line)") }
            }
        }
        #expect(found.count >= 7, "the rule still finds the declarations it guards: \(found)")
        #expect(exposed.isEmpty, "raw key material in the public API:\n\(exposed.joined(separator: "\n"))")
    }

    /// `defer { Task { await cleanup() } }` returns before the cleanup has run: the next test
    /// may find the last one's server, cluster or port still there. Tests use `withCleanup`.
    @Test func noTestLeavesItsCleanupToAnUnawaitedTask() throws {
        let files = try Self.swiftFiles(under: "Tests")
        #expect(files.count > 20, "the tests were found at \(Self.root.path)")
        let unawaited = try Regex(#"defer\s*\{\s*Task\b"#)
        var offenders: [String] = []
        for (path, lines) in files {
            // Joined, so a `defer {` whose `Task` sits on the next line is caught as well.
            let code = lines.joined(separator: "\n")
            for match in code.matches(of: unawaited) {
                let line = code[..<match.range.lowerBound].filter { $0 == "\n" }.count + 1
                offenders.append("\(path):\(line)")
            }
        }
        #expect(offenders.isEmpty, "unawaited cleanup at:\n\(offenders.joined(separator: "\n"))")
    }
}
