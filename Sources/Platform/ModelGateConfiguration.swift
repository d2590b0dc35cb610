import Configuration
import Foundation
import Logging
import SystemPackage

/// Every setting of ModelGate, with its default.
///
/// Sources, strongest first: environment variables (`MODELGATE_` + the key in upper snake case:
/// `server.port` is `MODELGATE_SERVER_PORT`), the file given with `--config FILE`,
/// `config/modelgate.json` in the working directory when present, then the built-in defaults
/// below (which `config/modelgate.json` repeats, and a test keeps the two equal).
public struct ModelGateConfiguration: Sendable, Equatable {
    public struct Database: Sendable, Equatable {
        /// libpq connection string or URL. Empty: start a local cluster under `localDirectory`.
        public var url: String = ""
        public var poolSize: Int = 8
        public var connectTimeoutSeconds: Int = 5
        public var statementTimeoutMs: Int = 30_000
        public var localDirectory: String = ".modelgate/postgres"
    }

    public struct Server: Sendable, Equatable {
        public var host: String = "127.0.0.1"
        public var port: Int = 8080
        /// How long in-flight requests may run after SIGTERM before they are cancelled.
        public var shutdownGraceSeconds: Int = 30
        /// After SIGTERM, `/readyz` answers 503 this long before the listener closes, so a load
        /// balancer stops sending first.
        public var drainDelayMs: Int = 1000
        public var maxBodyBytes: Int = 10 * 1024 * 1024
        /// Deadline of one inference request (504 after it; streams are exempt).
        public var requestTimeoutSeconds: Int = 120
        /// A connection that completes no request part for this long is closed: an idle
        /// keep-alive connection, or a client trickling its request headers (slowloris).
        /// Responses being written (streams) are exempt.
        public var idleTimeoutSeconds: Int = 75
        /// `none`: `/metrics` is open (bind to a private interface); `operator`: it needs an
        /// operator key (scope admin), as Prometheus' `authorization` setting sends it; `auto`:
        /// `operator` when the server listens beyond the loopback interface, else `none`.
        public var metricsAuth: String = "auto"
        /// OpenAI parameters a model's engine does not support (`tools`, `response_format`,
        /// `logit_bias`, ...) are a 400 naming them; `true` drops them instead, as LiteLLM's
        /// `drop_params` does.
        public var dropUnsupportedParams: Bool = false

        /// Whether `GET /metrics` needs an operator key under this configuration.
        public var metricsNeedOperatorKey: Bool {
            switch metricsAuth {
            case "operator": true
            case "none": false
            default: !["127.0.0.1", "::1", "localhost"].contains(host.lowercased()) && !host.hasPrefix("127.")
            }
        }
    }

    public struct Log: Sendable, Equatable {
        public var level: Logger.Level = .info
        public var format: LogFormat = .text
    }

    public enum LogFormat: String, Sendable, Equatable, CaseIterable {
        case text, json
    }

    public struct Models: Sendable, Equatable {
        public var directory: String = "models"
    }

    public struct Keyring: Sendable, Equatable {
        /// Master-key file (mode 0600). Created on first start in zero-config mode.
        public var file: String = ".modelgate/keyring.json"
    }

    public struct Limits: Sendable, Equatable {
        /// Plan given to tenants created without one.
        public var defaultPlan: String = "free"
        /// The largest image (width x height) decoded for classification (at most the decoder's
        /// own bound, 40 million).
        public var maxImagePixels: Int = 40_000_000
        /// The most pixels one request's images may hold together; checked from their headers
        /// before any is decoded.
        public var maxImagePixelsPerRequest: Int = 100_000_000
    }

    public struct Metering: Sendable, Equatable {
        /// The write-ahead usage spool (fsync'd; replayed at start).
        public var spoolDirectory: String = ".modelgate/spool"
        /// Raw usage events older than this are deleted (hourly rollups stay).
        public var retentionDays: Int = 400
        /// A crashed instance's reservations are returned after this long.
        public var reservationTtlSeconds: Int = 600
        /// Stored responses of `Idempotency-Key` requests (sealed) are deleted after this long.
        public var idempotencyRetentionHours: Int = 24
        /// Payload logs of tenants that opted in (sealed) are deleted after this long.
        public var payloadRetentionDays: Int = 30
    }

    public var database = Database()
    public var server = Server()
    public var log = Log()
    public var models = Models()
    public var keyring = Keyring()
    public var limits = Limits()
    public var metering = Metering()

    public init() {}

    /// Every key this configuration understands, with its default rendered as JSON would hold it.
    static let keys: [(key: String, kind: ConfigType)] = [
        ("database.url", .string),
        ("database.poolSize", .int),
        ("database.connectTimeoutSeconds", .int),
        ("database.statementTimeoutMs", .int),
        ("database.localDirectory", .string),
        ("server.host", .string),
        ("server.port", .int),
        ("server.shutdownGraceSeconds", .int),
        ("server.drainDelayMs", .int),
        ("server.idleTimeoutSeconds", .int),
        ("server.metricsAuth", .string),
        ("server.dropUnsupportedParams", .bool),
        ("server.maxBodyBytes", .int),
        ("server.requestTimeoutSeconds", .int),
        ("log.level", .string),
        ("log.format", .string),
        ("models.directory", .string),
        ("keyring.file", .string),
        ("limits.defaultPlan", .string),
        ("limits.maxImagePixels", .int),
        ("limits.maxImagePixelsPerRequest", .int),
        ("metering.spoolDirectory", .string),
        ("metering.retentionDays", .int),
        ("metering.reservationTtlSeconds", .int),
        ("metering.idempotencyRetentionHours", .int),
        ("metering.payloadRetentionDays", .int),
    ]

    /// Loads the configuration. Throws `ConfigurationError` naming the offending key.
    public static func load(
        configFile: String? = nil,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        workingDirectory: String = FileManager.default.currentDirectoryPath
    ) async throws -> ModelGateConfiguration {
        var providers: [any ConfigProvider] = []
        let modelgateEnvironment = environment.filter { $0.key.hasPrefix("MODELGATE_") }
        try validateEnvironment(modelgateEnvironment.keys)
        providers.append(
            EnvironmentVariablesProvider(
                environmentVariables: modelgateEnvironment,
                secretsSpecifier: .specific(["MODELGATE_DATABASE_URL"])
            ).prefixKeys(with: "modelgate"))
        var files: [String] = []
        if let configFile { files.append(configFile) }
        let defaultFile = (workingDirectory as NSString).appendingPathComponent("config/modelgate.json")
        if FileManager.default.fileExists(atPath: defaultFile) { files.append(defaultFile) }
        for file in files {
            try validateKeys(inFile: file)
            do {
                providers.append(try await FileProvider<JSONSnapshot>(filePath: FilePath(file)))
            } catch {
                throw ConfigurationError("cannot read configuration file \(file): \(error)")
            }
        }
        providers.append(InMemoryProvider(name: "defaults", values: Self.defaultValues))
        return try ModelGateConfiguration(reader: ConfigReader(providers: providers))
    }

    /// A variable that names a configuration section but no key in it is a typo that would
    /// otherwise be ignored in silence (MODELGATE_SERVER_DRAINDELAYMS for ..._DRAIN_DELAY_MS).
    static func validateEnvironment(_ names: some Sequence<String>) throws {
        let known = Set(keys.map { environmentName(for: $0.key) })
        let sections = Set(keys.map { "MODELGATE_" + $0.key.split(separator: ".")[0].uppercased() + "_" })
        for name in names.sorted() where !known.contains(name) {
            guard let section = sections.first(where: { name.hasPrefix($0) }) else { continue }
            let squashed = name.replacingOccurrences(of: "_", with: "")
            let suggestion = known.first { $0.replacingOccurrences(of: "_", with: "") == squashed }
                ?? known.filter { $0.hasPrefix(section) }.sorted().joined(separator: ", ")
            throw ConfigurationError("unknown setting \(name) in the environment (known: \(suggestion))")
        }
    }

    init(reader: ConfigReader) throws {
        func string(_ key: String) throws -> String {
            do { return try reader.requiredString(forKey: ConfigKey(stringLiteral: key)) } catch {
                throw ConfigurationError.invalid(key, expected: "a string")
            }
        }
        func int(_ key: String, _ range: ClosedRange<Int>) throws -> Int {
            let value: Int
            do { value = try reader.requiredInt(forKey: ConfigKey(stringLiteral: key)) } catch {
                throw ConfigurationError.invalid(key, expected: "an integer")
            }
            guard range.contains(value) else {
                throw ConfigurationError.invalid(key, expected: "an integer in \(range.lowerBound)...\(range.upperBound), got \(value)")
            }
            return value
        }
        database.url = try string("database.url")
        database.poolSize = try int("database.poolSize", 1...512)
        database.connectTimeoutSeconds = try int("database.connectTimeoutSeconds", 1...600)
        database.statementTimeoutMs = try int("database.statementTimeoutMs", 0...86_400_000)
        database.localDirectory = try string("database.localDirectory")
        server.host = try string("server.host")
        server.port = try int("server.port", 0...65535)
        server.shutdownGraceSeconds = try int("server.shutdownGraceSeconds", 0...3600)
        server.drainDelayMs = try int("server.drainDelayMs", 0...600_000)
        server.idleTimeoutSeconds = try int("server.idleTimeoutSeconds", 1...86_400)
        server.metricsAuth = try string("server.metricsAuth").lowercased()
        guard ["none", "operator", "auto"].contains(server.metricsAuth) else {
            throw ConfigurationError.invalid("server.metricsAuth", expected: "none, operator or auto, got \"\(server.metricsAuth)\"")
        }
        do { server.dropUnsupportedParams = try reader.requiredBool(forKey: "server.dropUnsupportedParams") } catch {
            throw ConfigurationError.invalid("server.dropUnsupportedParams", expected: "true or false")
        }
        server.maxBodyBytes = try int("server.maxBodyBytes", 1024...(1 << 31))
        server.requestTimeoutSeconds = try int("server.requestTimeoutSeconds", 1...3600)
        let levelName = try string("log.level")
        guard let level = Logger.Level(rawValue: levelName.lowercased()) else {
            throw ConfigurationError.invalid(
                "log.level", expected: "one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")), got \"\(levelName)\"")
        }
        log.level = level
        let formatName = try string("log.format")
        guard let format = LogFormat(rawValue: formatName.lowercased()) else {
            throw ConfigurationError.invalid("log.format", expected: "text or json, got \"\(formatName)\"")
        }
        log.format = format
        models.directory = try string("models.directory")
        keyring.file = try string("keyring.file")
        limits.defaultPlan = try string("limits.defaultPlan")
        limits.maxImagePixels = try int("limits.maxImagePixels", 1...40_000_000)
        limits.maxImagePixelsPerRequest = try int("limits.maxImagePixelsPerRequest", 1...(1 << 40))
        metering.spoolDirectory = try string("metering.spoolDirectory")
        metering.retentionDays = try int("metering.retentionDays", 1...36_500)
        metering.reservationTtlSeconds = try int("metering.reservationTtlSeconds", 10...86_400)
        metering.idempotencyRetentionHours = try int("metering.idempotencyRetentionHours", 1...8760)
        metering.payloadRetentionDays = try int("metering.payloadRetentionDays", 1...3650)
        if database.localDirectory.isEmpty { throw ConfigurationError.invalid("database.localDirectory", expected: "a path") }
    }

    static var defaultValues: [AbsoluteConfigKey: ConfigValue] {
        let defaults = ModelGateConfiguration()
        var values: [AbsoluteConfigKey: ConfigValue] = [:]
        for (key, content) in defaults.flattened {
            values[AbsoluteConfigKey(stringLiteral: key)] = ConfigValue(content, isSecret: false)
        }
        return values
    }

    /// The configuration as flat key/value pairs (the shape of `config/modelgate.json`).
    var flattened: [(String, ConfigContent)] {
        [
            ("database.url", .string(database.url)),
            ("database.poolSize", .int(database.poolSize)),
            ("database.connectTimeoutSeconds", .int(database.connectTimeoutSeconds)),
            ("database.statementTimeoutMs", .int(database.statementTimeoutMs)),
            ("database.localDirectory", .string(database.localDirectory)),
            ("server.host", .string(server.host)),
            ("server.port", .int(server.port)),
            ("server.shutdownGraceSeconds", .int(server.shutdownGraceSeconds)),
            ("server.drainDelayMs", .int(server.drainDelayMs)),
            ("server.idleTimeoutSeconds", .int(server.idleTimeoutSeconds)),
            ("server.metricsAuth", .string(server.metricsAuth)),
            ("server.dropUnsupportedParams", .bool(server.dropUnsupportedParams)),
            ("server.maxBodyBytes", .int(server.maxBodyBytes)),
            ("server.requestTimeoutSeconds", .int(server.requestTimeoutSeconds)),
            ("log.level", .string(log.level.rawValue)),
            ("log.format", .string(log.format.rawValue)),
            ("models.directory", .string(models.directory)),
            ("keyring.file", .string(keyring.file)),
            ("limits.defaultPlan", .string(limits.defaultPlan)),
            ("limits.maxImagePixels", .int(limits.maxImagePixels)),
            ("limits.maxImagePixelsPerRequest", .int(limits.maxImagePixelsPerRequest)),
            ("metering.spoolDirectory", .string(metering.spoolDirectory)),
            ("metering.retentionDays", .int(metering.retentionDays)),
            ("metering.reservationTtlSeconds", .int(metering.reservationTtlSeconds)),
            ("metering.idempotencyRetentionHours", .int(metering.idempotencyRetentionHours)),
            ("metering.payloadRetentionDays", .int(metering.payloadRetentionDays)),
        ]
    }

    /// Refuses unknown keys (typos) in a JSON configuration file, naming the first one.
    static func validateKeys(inFile path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError("cannot read configuration file \(path)")
        }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data)
        } catch {
            throw ConfigurationError("configuration file \(path) is not valid JSON")
        }
        guard let root = object as? [String: Any] else {
            throw ConfigurationError("configuration file \(path) must hold a JSON object")
        }
        let known = Set(keys.map(\.key))
        func walk(_ value: [String: Any], prefix: String) throws {
            for (name, child) in value.sorted(by: { $0.key < $1.key }) {
                let key = prefix.isEmpty ? name : prefix + "." + name
                if let nested = child as? [String: Any] {
                    guard known.contains(where: { $0.hasPrefix(key + ".") }) else {
                        throw ConfigurationError("unknown configuration key '\(key)' in \(path)")
                    }
                    try walk(nested, prefix: key)
                } else if !known.contains(key) {
                    throw ConfigurationError("unknown configuration key '\(key)' in \(path)")
                }
            }
        }
        try walk(root, prefix: "")
    }

    /// The environment variable that overrides `key`.
    public static func environmentName(for key: String) -> String {
        var name = "MODELGATE"
        for component in key.split(separator: ".") {
            name += "_"
            var previousLower = false
            for character in component {
                if character.isUppercase && previousLower { name += "_" }
                name += character.uppercased()
                previousLower = character.isLowercase
            }
        }
        return name
    }
}

/// A configuration problem, reported as one line and exit status 2.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public let description: String

    public init(_ description: String) { self.description = description }

    static func invalid(_ key: String, expected: String) -> ConfigurationError {
        ConfigurationError(
            "invalid configuration value for '\(key)' (or \(ModelGateConfiguration.environmentName(for: key))): expected \(expected)")
    }
}
