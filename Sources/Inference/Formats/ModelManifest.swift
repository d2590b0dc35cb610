import Foundation

/// `model.json`: our manifest next to a model's original files (a Hugging Face folder, a
/// torchvision state dict...), saying which engine runs it and how.
///
/// ```json
/// {"engine": "transformer-lm", "task": "text-generation", "display_name": "GPT-2 small",
///  "version": "1", "context_length": 1024,
///  "files": {"weights": "model.safetensors", "config": "config.json"},
///  "defaults": {"max_tokens": 16, "temperature": 1.0}}
/// ```
public struct ModelManifest: Codable, Sendable, Equatable {
    public var engine: String
    public var task: String
    public var displayName: String?
    public var version: String?
    public var contextLength: Int?
    public var files: [String: String]?
    public var defaults: [String: Double]?
    /// Engine-specific settings (pooling, normalisation, preprocessing, chat template...).
    public var options: [String: JSONValue]?
    /// "public" (default) or the tenant slugs allowed to see the model.
    public var visibility: Visibility?
    /// Whether an instance without this model ready is not ready (`/readyz` answers 503).
    public var required: Bool?
    /// Other names the model answers to (`"text-davinci-002"`), everywhere a model name is
    /// accepted; usage, prices and allow-lists use the model's own name.
    public var aliases: [String]?

    public enum Visibility: Codable, Sendable, Equatable {
        case `public`
        case tenants([String])

        public init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let text = try? container.decode(String.self), text == "public" {
                self = .public
            } else {
                self = .tenants(try container.decode([String].self))
            }
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .public: try container.encode("public")
            case .tenants(let list): try container.encode(list)
            }
        }
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case engine, task, version, files, defaults, options, visibility, required, aliases
        case displayName = "display_name"
        case contextLength = "context_length"
    }

    /// The task of an engine that does only one, for manifests that leave `task` out.
    static let defaultTasks = ["transformer-lm": "text-generation", "transformer-encoder": "embeddings", "resnet": "image-classification"]

    /// The sampling defaults a manifest may set, and the roles its `files` may name.
    static let defaultKeys: Set<String> = ["max_tokens", "temperature", "top_p", "top_k"]
    static let fileRoles: Set<String> = ["weights", "config", "vocab", "merges", "labels", "tokenizer"]

    /// Reads `model.json`. A key it does not know — a typo, at the top level, in `defaults` or
    /// in `files` — fails the load naming it (the engine checks `options`, see `checkOptions`).
    public static func load(directory: String) throws -> ModelManifest {
        let path = directory + "/model.json"
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ModelLoadError(file: path, reason: "missing model manifest")
        }
        guard let object = try? JSONDecoder().decode([String: JSONValue].self, from: data) else {
            throw ModelLoadError(file: path, reason: "not a JSON object")
        }
        let known = Set(CodingKeys.allCases.map(\.rawValue))
        for key in object.keys.sorted() where !known.contains(key) {
            throw ModelLoadError(file: path, reason: "unknown key '\(key)' (known: \(known.sorted().joined(separator: ", ")))")
        }
        for (section, allowed) in [("defaults", defaultKeys), ("files", fileRoles)] {
            for key in (object[section]?.object ?? [:]).keys.sorted() where !allowed.contains(key) {
                throw ModelLoadError(file: path, reason: "unknown key '\(section).\(key)' (known: \(allowed.sorted().joined(separator: ", ")))")
            }
        }
        // The native engines each do one task: theirs is the default.
        var complete = object
        if complete["task"] == nil, let engine = complete["engine"]?.string {
            guard let task = defaultTasks[engine] else {
                throw ModelLoadError(file: path, reason: "missing key 'task' (engine '\(engine)' has no default task)")
            }
            complete["task"] = .string(task)
        }
        do {
            return try JSONDecoder().decode(ModelManifest.self, from: JSONEncoder().encode(complete))
        } catch {
            throw ModelLoadError(file: path, reason: "invalid manifest: \(error)")
        }
    }

    /// Refuses an `options` key the engine does not read (`max_btach` would be ignored in
    /// silence otherwise).
    package func checkOptions(allowed: Set<String>, in directory: String) throws {
        for key in (options ?? [:]).keys.sorted() where !allowed.contains(key) {
            throw ModelLoadError(
                file: directory + "/model.json",
                reason: "unknown key 'options.\(key)' for engine \(engine) (known: \(allowed.sorted().joined(separator: ", ")))")
        }
    }

    /// `options.flood_rest`: how many times as long as its request a flooding tenant's slot rests
    /// while another tenant's requests run (`TenantShares.rest`); 2 when absent, 0 for none.
    package func floodRest(in directory: String) throws -> Double {
        guard let value = options?["flood_rest"] else { return 2 }
        guard let rest = value.number, rest >= 0, rest.isFinite else {
            throw ModelLoadError(file: directory + "/model.json", reason: "options.flood_rest must be a number of at least 0")
        }
        return rest
    }

    /// `defaults`: what a generation request that leaves them out gets (`max_tokens`,
    /// `temperature`, `top_p`, `top_k`), checked as a request's own values are.
    package func samplingDefaults(in directory: String) throws -> SamplingParameters {
        let file = directory + "/model.json"
        func whole(_ key: String) throws -> Int? {
            guard let value = defaults?[key] else { return nil }
            guard let int = Int(exactly: value) else { throw ModelLoadError(file: file, reason: "defaults.\(key) must be a whole number") }
            return int
        }
        var parameters = SamplingParameters()
        parameters.maxTokens = try whole("max_tokens")
        parameters.topK = try whole("top_k") ?? 0
        parameters.temperature = defaults?["temperature"] ?? 1
        parameters.topP = defaults?["top_p"] ?? 1
        do {
            try parameters.validate()
        } catch let error as GenerationError {
            throw ModelLoadError(file: file, reason: "defaults.\(error)")
        }
        return parameters
    }

    /// `options.weight_format`: `f32` (the default), `bf16`, or `q8_0` or `q4_0` (quantized at
    /// load as llama.cpp's reference quantizers do; matrices whose inputs are not whole blocks
    /// of 32 stay float32). A GGUF file's quantized matrices keep the file's format whatever it says.
    package func weightFormat(in directory: String) throws -> PackedMatrix.Format {
        guard let value = options?["weight_format"] else { return .f32 }
        guard let name = value.string, let format = PackedMatrix.Format(rawValue: name), [.f32, .bf16, .q8_0, .q4_0].contains(format) else {
            throw ModelLoadError(file: directory + "/model.json", reason: "options.weight_format must be \"f32\", \"bf16\", \"q8_0\" or \"q4_0\"")
        }
        return format
    }

    /// `options.kv_cache_format`: what a text model's key/value cache holds (f32 unless f16).
    package func cacheFormat(in directory: String) throws -> AttentionCache.Format {
        guard let value = options?["kv_cache_format"] else { return .f32 }
        guard let name = value.string, let format = AttentionCache.Format(rawValue: name) else {
            throw ModelLoadError(file: directory + "/model.json", reason: "options.kv_cache_format must be \"f32\" or \"f16\"")
        }
        return format
    }

    /// The file for `role` (e.g. "weights"), or `fallback`, as a path in `directory`.
    public func file(_ role: String, default fallback: String, in directory: String) -> String {
        directory + "/" + (files?[role] ?? fallback)
    }
}

/// A JSON value for free-form manifest options and configs.
public enum JSONValue: Codable, Sendable, Equatable {
    case string(String), number(Double), bool(Bool), array([JSONValue]), object([String: JSONValue]), null

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([JSONValue].self) { self = .array(value) }
        else { self = .object(try container.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .bool(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        case .null: try container.encodeNil()
        }
    }

    public var string: String? { if case .string(let value) = self { value } else { nil } }
    public var number: Double? { if case .number(let value) = self { value } else { nil } }
    /// A whole number that fits an `Int` (JSON's 1e300 or 2.5 is not one).
    public var int: Int? { number.flatMap { Int(exactly: $0) } }
    /// A whole number of at least 1: every count and size in a manifest or config.
    package var positiveInt: Int? { int.flatMap { $0 >= 1 ? $0 : nil } }
    public var bool: Bool? { if case .bool(let value) = self { value } else { nil } }
    public var array: [JSONValue]? { if case .array(let value) = self { value } else { nil } }
    public var object: [String: JSONValue]? { if case .object(let value) = self { value } else { nil } }
}

/// A Hugging Face `config.json`, read loosely (each architecture names its fields).
package struct HFConfig: Sendable {
    package let values: [String: JSONValue]
    package let path: String

    package init(path: String) throws {
        self.path = path
        guard let data = FileManager.default.contents(atPath: path) else { throw ModelLoadError(file: path, reason: "missing") }
        guard let values = try? JSONDecoder().decode([String: JSONValue].self, from: data) else {
            throw ModelLoadError(file: path, reason: "not a JSON object")
        }
        self.values = values
    }

    /// The first of `keys` present, as a whole number of at least 1 (these are all sizes and
    /// counts: a 0, negative or fractional one is an error, not a crash later).
    package func int(_ keys: String...) throws -> Int {
        for key in keys {
            guard let value = values[key] else { continue }
            guard let int = value.positiveInt else { throw ModelLoadError(file: path, reason: "\(key) must be a whole number of at least 1") }
            return int
        }
        throw ModelLoadError(file: path, reason: "missing integer \(keys.joined(separator: " or "))")
    }

    package func double(_ key: String, default fallback: Double) -> Double { values[key]?.number ?? fallback }
    package func string(_ key: String) -> String? { values[key]?.string }
}

extension [String: JSONValue] {
    /// `self[key]` as a whole number of at least 1; nil when absent, an error naming the option
    /// (in `file`) when it is anything else.
    func positiveInt(_ key: String, file: String) throws -> Int? {
        guard let value = self[key] else { return nil }
        guard let int = value.positiveInt else { throw ModelLoadError(file: file, reason: "options.\(key) must be a whole number of at least 1") }
        return int
    }
}

/// A tokenizer with ids past the model's embeddings is a broken folder: its extra tokens would
/// silently read the last embedding. (Fewer is fine: some models pad their embeddings.)
func checkVocabulary(tokenizer size: Int, file: String, model vocabulary: Int) throws {
    guard size <= vocabulary else {
        throw ModelLoadError(file: file, reason: "token ids run to \(size - 1), past the model's \(vocabulary) embeddings")
    }
}
