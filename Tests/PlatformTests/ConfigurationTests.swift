import Foundation
import Testing
@testable import Platform

@Suite struct ConfigurationTests {
    /// A scratch working directory with an optional `config/modelgate.json`.
    func scratch(defaultFile: String? = nil) throws -> String {
        let directory = NSTemporaryDirectory() + "mg-config-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory + "/config", withIntermediateDirectories: true)
        if let defaultFile {
            try defaultFile.write(toFile: directory + "/config/modelgate.json", atomically: true, encoding: .utf8)
        }
        return directory
    }

    @Test func builtInDefaultsApplyWithNoFileAndNoEnvironment() async throws {
        let configuration = try await ModelGateConfiguration.load(environment: [:], workingDirectory: try scratch())
        #expect(configuration == ModelGateConfiguration())
        #expect(configuration.server.port == 8080)
        #expect(configuration.database.url.isEmpty)
    }

    @Test func committedDefaultFileMatchesBuiltInDefaults() async throws {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let text = try String(contentsOf: repository.appendingPathComponent("config/modelgate.json"), encoding: .utf8)
        let configuration = try await ModelGateConfiguration.load(environment: [:], workingDirectory: try scratch(defaultFile: text))
        #expect(configuration == ModelGateConfiguration())
        // Every known key appears in the file, so it documents all of them.
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: [String: Any]]
        for (key, _) in ModelGateConfiguration.keys {
            let parts = key.split(separator: ".").map(String.init)
            #expect(object?[parts[0]]?[parts[1]] != nil, "config/modelgate.json lacks \(key)")
        }
    }

    @Test func environmentOverridesConfigFileWhichOverridesDefaultFile() async throws {
        let directory = try scratch(defaultFile: #"{"server": {"port": 9000, "host": "0.0.0.0"}, "log": {"level": "debug"}}"#)
        let explicit = directory + "/explicit.json"
        try #"{"server": {"port": 9100}, "database": {"poolSize": 3}}"#.write(toFile: explicit, atomically: true, encoding: .utf8)
        let configuration = try await ModelGateConfiguration.load(
            configFile: explicit,
            environment: ["MODELGATE_DATABASE_POOL_SIZE": "5", "MODELGATE_DATABASE_URL": "postgresql://db/x", "UNRELATED": "1"],
            workingDirectory: directory)
        #expect(configuration.server.port == 9100)  // --config beats config/modelgate.json
        #expect(configuration.server.host == "0.0.0.0")  // from config/modelgate.json
        #expect(configuration.database.poolSize == 5)  // environment beats both
        #expect(configuration.database.url == "postgresql://db/x")
        #expect(configuration.log.level == .debug)
    }

    @Test(arguments: [
        (["MODELGATE_SERVER_PORT": "eighty"], "server.port"),
        (["MODELGATE_SERVER_PORT": "70000"], "server.port"),
        (["MODELGATE_DATABASE_POOL_SIZE": "0"], "database.poolSize"),
        (["MODELGATE_LOG_LEVEL": "loud"], "log.level"),
        (["MODELGATE_LOG_FORMAT": "xml"], "log.format"),
    ])
    func invalidValuesNameTheKey(environment: [String: String], key: String) async throws {
        do {
            _ = try await ModelGateConfiguration.load(environment: environment, workingDirectory: try scratch())
            Issue.record("accepted \(environment)")
        } catch let error as ConfigurationError {
            #expect(error.description.contains(key))
            #expect(!error.description.contains("\n"))
        }
    }

    /// `/metrics` needs an operator key by default once the server listens beyond loopback.
    @Test func metricsNeedAnOperatorKeyByDefaultOffLoopback() async throws {
        func needs(_ environment: [String: String]) async throws -> Bool {
            try await ModelGateConfiguration.load(environment: environment, workingDirectory: try scratch()).server.metricsNeedOperatorKey
        }
        #expect(try await ModelGateConfiguration.load(environment: [:], workingDirectory: try scratch()).server.metricsAuth == "auto")
        #expect(try await needs([:]) == false)
        #expect(try await needs(["MODELGATE_SERVER_HOST": "::1"]) == false)
        #expect(try await needs(["MODELGATE_SERVER_HOST": "0.0.0.0"]) == true)
        #expect(try await needs(["MODELGATE_SERVER_HOST": "10.1.2.3"]) == true)
        #expect(try await needs(["MODELGATE_SERVER_HOST": "0.0.0.0", "MODELGATE_SERVER_METRICS_AUTH": "none"]) == false)
        #expect(try await needs(["MODELGATE_SERVER_METRICS_AUTH": "operator"]) == true)
    }

    @Test func unknownKeysAndBadJSONInFilesAreRefused() async throws {
        let directory = try scratch()
        let typo = directory + "/typo.json"
        try #"{"server": {"prot": 1}}"#.write(toFile: typo, atomically: true, encoding: .utf8)
        await #expect(throws: ConfigurationError.self) {
            try await ModelGateConfiguration.load(configFile: typo, environment: [:], workingDirectory: directory)
        }
        let broken = directory + "/broken.json"
        try #"{"server": "#.write(toFile: broken, atomically: true, encoding: .utf8)
        await #expect(throws: ConfigurationError.self) {
            try await ModelGateConfiguration.load(configFile: broken, environment: [:], workingDirectory: directory)
        }
        let wrongType = directory + "/type.json"
        try #"{"server": {"port": "8080x"}}"#.write(toFile: wrongType, atomically: true, encoding: .utf8)
        await #expect(throws: ConfigurationError.self) {
            try await ModelGateConfiguration.load(configFile: wrongType, environment: [:], workingDirectory: directory)
        }
        await #expect(throws: ConfigurationError.self) {
            try await ModelGateConfiguration.load(configFile: directory + "/missing.json", environment: [:], workingDirectory: directory)
        }
    }

    @Test func aMisspelledEnvironmentSettingIsRefusedWithTheRightName() async throws {
        let directory = try scratch()
        do {
            _ = try await ModelGateConfiguration.load(environment: ["MODELGATE_SERVER_DRAINDELAYMS": "5"], workingDirectory: directory)
            Issue.record("a misspelled setting was ignored")
        } catch let error as ConfigurationError {
            #expect(error.description.contains("MODELGATE_SERVER_DRAIN_DELAY_MS"), "\(error)")
        }
        await #expect(throws: ConfigurationError.self) {
            try await ModelGateConfiguration.load(environment: ["MODELGATE_LOG_COLOUR": "x"], workingDirectory: directory)
        }
        // Variables outside the configuration's sections are other tools' business.
        let configuration = try await ModelGateConfiguration.load(
            environment: ["MODELGATE_KEYRING": "{}", "MODELGATE_PG_USER": "postgres", "MODELGATE_SERVER_DRAIN_DELAY_MS": "5"],
            workingDirectory: directory)
        #expect(configuration.server.drainDelayMs == 5)
    }

    @Test func environmentNamesFollowTheKeys() {
        #expect(ModelGateConfiguration.environmentName(for: "database.poolSize") == "MODELGATE_DATABASE_POOL_SIZE")
        #expect(ModelGateConfiguration.environmentName(for: "server.port") == "MODELGATE_SERVER_PORT")
    }
}
