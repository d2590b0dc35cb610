import Foundation
import Synchronization

public enum ModelTask: String, Sendable, Codable, CaseIterable {
    case textGeneration = "text-generation"
    case embeddings
    case imageClassification = "image-classification"
}

/// A running model: what each engine hands to the gateway.
public enum Engine: Sendable {
    case text(TextGenerator)
    case embeddings(EmbeddingService)
    case images(ClassificationService)
    /// An engine defined outside this module (one that forwards to other servers, say).
    case external(any ExternalEngine)

    public var task: ModelTask {
        switch self {
        case .text: .textGeneration
        case .embeddings: .embeddings
        case .images: .imageClassification
        case .external(let engine): engine.task
        }
    }

    /// The engine's registered name (`transformer-lm`, ...).
    public var name: String {
        switch self {
        case .text: TransformerLMFactory.name
        case .embeddings: TransformerEncoderFactory.name
        case .images: ResNetFactory.name
        case .external(let engine): engine.name
        }
    }

    /// Whether the engine honours an optional OpenAI parameter (`tools`, `response_format`,
    /// `logit_bias`, `suffix`, ...) beyond those every engine of its task does. The native
    /// engines honour none; an engine that forwards to another server may honour them all.
    public func supports(parameter: String) -> Bool {
        if case .external(let engine) = self { return engine.supports(parameter: parameter) }
        return false
    }

    /// The requests in flight per tenant while several tenants use this model.
    public var shares: TenantShares {
        switch self {
        case .text(let generator): generator.shares
        case .embeddings(let service): service.shares
        case .images(let service): service.shares
        case .external(let engine): engine.shares
        }
    }

    /// Whether the engine's queue would take a request of this fairness key now.
    public func accepts(fairnessKey: String) -> Bool {
        switch self {
        case .text(let generator): generator.accepts(fairnessKey: fairnessKey)
        case .embeddings(let service): service.accepts(fairnessKey: fairnessKey)
        case .images(let service): service.accepts(fairnessKey: fairnessKey)
        case .external(let engine): engine.accepts(fairnessKey: fairnessKey)
        }
    }

    func shutdown() {
        switch self {
        case .text(let generator): generator.shutdown()
        case .embeddings(let service): service.worker.shutdown()
        case .images(let service): service.worker.shutdown()
        case .external(let engine): engine.shutdown()
        }
    }
}

/// An engine another module defines: it is registered, queued fairly, admitted and settled
/// like the native ones; what it runs is its own.
public protocol ExternalEngine: Sendable {
    /// The engine's registered name (`upstream`, ...).
    var name: String { get }
    var task: ModelTask { get }
    /// The requests in flight per tenant while several tenants use this model.
    var shares: TenantShares { get }
    func accepts(fairnessKey: String) -> Bool
    func supports(parameter: String) -> Bool
    /// Called once the registry no longer serves this engine and its requests had time to end.
    func shutdown()
}

/// Builds an engine from a model folder. A new engine is one type and one line in
/// `EngineFactories.native`, or, defined in another module, in the list the composition root
/// gives the registry.
public protocol EngineFactory: Sendable {
    static var name: String { get }
    /// The `options` keys of `model.json` this engine reads; any other is a load error.
    static var optionKeys: Set<String> { get }
    static func load(directory: String, manifest: ModelManifest) throws -> Engine
}

public enum EngineFactories {
    /// The engines of this module; the composition root adds those defined elsewhere.
    public static let native: [any EngineFactory.Type] = [TransformerLMFactory.self, TransformerEncoderFactory.self, ResNetFactory.self]

    static func factory(_ name: String, in all: [any EngineFactory.Type]) -> (any EngineFactory.Type)? { all.first { $0.name == name } }

    /// Checks a model folder without loading its weights: its manifest (known keys, a known
    /// engine, the engine's options) — what `modelgate model load` checks before asking the
    /// servers.
    public static func check(directory: String, factories all: [any EngineFactory.Type] = native) throws -> ModelManifest {
        try checked(directory: directory, factories: all).manifest
    }

    /// Checks a model folder and loads it as a server would, then stops the engine again:
    /// `modelgate model check`. `loaded` runs while the engine is up. Returns the engine's task.
    public static func checkByLoading(directory: String, factories all: [any EngineFactory.Type] = native, loaded: () -> Void = {}) throws -> ModelTask {
        let (manifest, factory) = try checked(directory: directory, factories: all)
        let engine = try factory.load(directory: directory, manifest: manifest)
        defer { engine.shutdown() }
        loaded()
        try checkTask(engine, manifest: manifest, directory: directory)
        return engine.task
    }

    private static func checked(directory: String, factories all: [any EngineFactory.Type]) throws -> (manifest: ModelManifest, factory: any EngineFactory.Type) {
        guard FileManager.default.fileExists(atPath: directory) else {
            throw ModelLoadError(file: directory, reason: "no such model folder")
        }
        let manifest = try ModelManifest.load(directory: directory)
        guard let factory = factory(manifest.engine, in: all) else {
            throw ModelLoadError(
                file: directory + "/model.json", reason: "unknown engine '\(manifest.engine)' (known: \(all.map { $0.name }.joined(separator: ", ")))")
        }
        try manifest.checkOptions(allowed: factory.optionKeys, in: directory)
        return (manifest, factory)
    }

    /// A loaded engine must do the task its model.json names.
    static func checkTask(_ engine: Engine, manifest: ModelManifest, directory: String) throws {
        guard engine.task.rawValue == manifest.task else {
            throw ModelLoadError(file: directory + "/model.json", reason: "engine \(manifest.engine) does \(engine.task.rawValue), not \(manifest.task)")
        }
    }
}

/// Embeddings on a batching worker thread.
public final class EmbeddingService: Sendable {
    public let encoder: BertEncoder
    let worker: BatchWorker<[Int], [Float]>
    /// The requests in flight per tenant while several use this model.
    public let shares: TenantShares

    init(encoder: BertEncoder, maxBatch: Int = 64, capacity: Int = 512, floodRest: Double = 2) {
        self.encoder = encoder
        shares = TenantShares(slots: maxBatch, capacity: capacity, rest: floodRest)
        worker = BatchWorker(name: "embeddings", maxBatch: maxBatch, capacity: capacity) { sequences in
            encoder.embed(tokenIDs: sequences)
        }
    }

    /// Tokenises (`[CLS] ... [SEP]`, truncated to the model's length).
    public func tokenize(_ text: String) -> [Int] { encoder.tokenizer.encode(text, maxLength: encoder.config.maxSequenceLength) }

    public func embed(_ sequences: [[Int]], fairnessKey: String) async throws -> [[Float]] {
        try await worker.submit(sequences, key: fairnessKey)
    }

    public var waiting: Int { worker.waiting }
    public func accepts(fairnessKey: String) -> Bool { worker.accepts(key: fairnessKey) }
}

/// Image classification on a batching worker thread (images decoded and preprocessed by the caller).
public final class ClassificationService: Sendable {
    public let classifier: ImageClassifier
    let worker: BatchWorker<[Float], [Float]>
    /// The requests in flight per tenant while several use this model.
    public let shares: TenantShares

    init(classifier: ImageClassifier, maxBatch: Int = 16, capacity: Int = 256, floodRest: Double = 2) {
        self.classifier = classifier
        shares = TenantShares(slots: maxBatch, capacity: capacity, rest: floodRest)
        worker = BatchWorker(name: "images", maxBatch: maxBatch, capacity: capacity) { images in
            let size = classifier.preprocessing.crop
            return classifier.model.forward(images.flatMap { $0 }, n: images.count, height: size.height, width: size.width)
        }
    }

    public func prepare(_ encoded: [UInt8]) throws -> [Float] { try classifier.prepare(encoded) }

    /// Top-k labels per prepared image.
    public func classify(_ images: [[Float]], topK: Int, fairnessKey: String) async throws -> [[Prediction]] {
        let logits = try await worker.submit(images, key: fairnessKey)
        return logits.map { row in
            var probabilities = row
            probabilities.withUnsafeMutableBufferPointer { if let base = $0.baseAddress { Kernels.softmax(base, count: $0.count) } }
            return Sampler.topIndices(probabilities, count: max(1, min(topK, probabilities.count))).map {
                Prediction(label: classifier.labels[$0], score: probabilities[$0])
            }
        }
    }

    public var waiting: Int { worker.waiting }
    public func accepts(fairnessKey: String) -> Bool { worker.accepts(key: fairnessKey) }
}

package enum TransformerLMFactory: EngineFactory {
    package static let name = "transformer-lm"
    package static let optionKeys: Set<String> = ["max_batch", "queue_capacity", "flood_rest", "weight_format", "chat_format", "kv_cache_mb", "kv_cache_format"]

    /// A GGUF file as a whole model: the network, its tokenizer and its chat template.
    package static func loadGGUF(
        path: String, directory: String, format: PackedMatrix.Format = .f32, cacheFormat: AttentionCache.Format = .f32, chatOption: String? = nil
    ) throws -> (any CausalLM, BPETokenizer, ChatFormat) {
        let gguf = try GGUFFile(path: path)
        // The tokenizer first: what building it takes for a while (the vocabulary's strings
        // twice) is then taken before the weights are there, not on top of them.
        let tokenizer = try BPETokenizer(gguf: gguf)
        let model: any CausalLM = gguf.metadata["general.architecture"]?.text == "gpt2"
            ? try GPT2Model(gguf: gguf, format: format, cacheFormat: cacheFormat)
            : try LlamaModel(gguf: gguf, format: format, cacheFormat: cacheFormat)
        try checkVocabulary(tokenizer: tokenizer.vocabularySize, file: gguf.path, model: model.vocabularySize)
        return (model, tokenizer, try ChatFormat.load(gguf: gguf, directory: directory, option: chatOption))
    }

    package static func load(directory: String, manifest: ModelManifest) throws -> Engine {
        let options = manifest.options ?? [:], file = directory + "/model.json"
        let maxBatch = try options.positiveInt("max_batch", file: file) ?? 32
        let queueCapacity = try options.positiveInt("queue_capacity", file: file) ?? 256
        let format = try manifest.weightFormat(in: directory)
        let cacheMegabytes = try options.positiveInt("kv_cache_mb", file: file)
        if let cacheMegabytes, cacheMegabytes > 1 << 24 {
            throw ModelLoadError(file: file, reason: "options.kv_cache_mb must be at most \(1 << 24) (16 TB)")
        }
        let available = availableMemory()
        let cacheFormat = try manifest.cacheFormat(in: directory)
        let model: any CausalLM
        let tokenizer: BPETokenizer
        let chatFormat: ChatFormat
        // A GGUF file (`files.weights`, or model.gguf) is a whole model (GPT-2 or the Llama
        // family): weights, tokenizer and chat template. Otherwise GPT-2, or the Llama family (llama, qwen2, mistral), by
        // config.json's model_type.
        let weightsFile = manifest.files?["weights"] ?? (FileManager.default.fileExists(atPath: directory + "/model.gguf") ? "model.gguf" : "model.safetensors")
        if weightsFile.hasSuffix(".gguf") {
            (model, tokenizer, chatFormat) = try loadGGUF(
                path: directory + "/" + weightsFile, directory: directory, format: format, cacheFormat: cacheFormat,
                chatOption: options["chat_format"]?.string)
        } else {
            let modelType = try HFConfig(path: directory + "/config.json").string("model_type") ?? "gpt2"
            model = modelType == "gpt2"
                ? try GPT2Model(directory: directory, weightsFile: weightsFile, format: format, cacheFormat: cacheFormat)
                : try LlamaModel(directory: directory, format: format, cacheFormat: cacheFormat)
            tokenizer = try BPETokenizer(directory: directory)
            let tokenizerFile = FileManager.default.fileExists(atPath: directory + "/tokenizer.json") ? "/tokenizer.json" : "/vocab.json"
            try checkVocabulary(tokenizer: tokenizer.vocabularySize, file: directory + tokenizerFile, model: model.vocabularySize)
            chatFormat = try ChatFormat.load(directory: directory, option: options["chat_format"]?.string)
        }
        // A key/value cache budget is checked against the memory there was before the weights.
        if let cacheMegabytes, let available {
            let needed = model.weightBytes + cacheMegabytes << 20
            if needed > available {
                throw ModelLoadError(
                    file: file,
                    reason: "options.kv_cache_mb: the weights (\(model.weightBytes >> 20) MB) and a \(cacheMegabytes) MB key/value cache need \(needed >> 20) MB, but \(available >> 20) MB of memory is available")
            }
        }
        let defaults = try manifest.samplingDefaults(in: directory)
        return .text(TextGenerator(
            model: model, tokenizer: tokenizer, defaultMaxTokens: defaults.maxTokens ?? 16, defaults: defaults,
            maxBatch: maxBatch, queueCapacity: queueCapacity,
            floodRest: try manifest.floodRest(in: directory), chatFormat: chatFormat,
            stopTokens: try endOfGeneration(directory: directory, tokenizer: tokenizer), cacheBudget: cacheMegabytes.map { $0 << 20 }))
    }
}

/// `MemAvailable` of /proc/meminfo, in bytes (nil where there is none).
func availableMemory() -> Int? { procBytes("/proc/meminfo", "MemAvailable") }

/// A `Name:  N kB` line of a /proc file (/proc/meminfo, /proc/self/status), in bytes; nil where
/// there is none.
package func procBytes(_ path: String, _ name: String) -> Int? {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix(name + ":") {
        let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
        if fields.count >= 2, let kilobytes = Int(fields[1]) { return kilobytes << 10 }
    }
    return nil
}

/// The tokens that end generation: the tokenizer's end of text and `generation_config.json`'s
/// `eos_token_id` (one id or a list: Llama 3's instruct models end turns with `<|eot_id|>`).
func endOfGeneration(directory: String, tokenizer: BPETokenizer) throws -> Set<Int> {
    var tokens = Set([tokenizer.endOfText].compactMap { $0 })
    let path = directory + "/generation_config.json"
    guard let data = FileManager.default.contents(atPath: path) else { return tokens }
    let config: LiteralJSON
    do {
        config = try LiteralJSON.parse(Array(data))
    } catch {
        throw ModelLoadError(file: path, reason: "\(error)")
    }
    let ids = config["eos_token_id"].map { $0.array ?? [$0] } ?? []
    for id in ids {
        guard let token = id.int, token >= 0, token < tokenizer.vocabularySize else {
            throw ModelLoadError(file: path, reason: "eos_token_id must be token ids of the vocabulary")
        }
        tokens.insert(token)
    }
    return tokens
}

package enum TransformerEncoderFactory: EngineFactory {
    package static let name = "transformer-encoder"
    package static let optionKeys: Set<String> = ["pooling", "normalize", "max_sequence_length", "weights", "flood_rest"]

    package static func load(directory: String, manifest: ModelManifest) throws -> Engine {
        .embeddings(EmbeddingService(
            encoder: try BertEncoder(directory: directory, options: manifest.options ?? [:]), floodRest: try manifest.floodRest(in: directory)))
    }
}

package enum ResNetFactory: EngineFactory {
    package static let name = "resnet"
    package static let optionKeys: Set<String> = ["crop", "input_size", "resize", "mean", "std", "flood_rest"]

    package static func load(directory: String, manifest: ModelManifest) throws -> Engine {
        .images(ClassificationService(
            classifier: try ImageClassifier(directory: directory, manifest: manifest), floodRest: try manifest.floodRest(in: directory)))
    }
}

/// What the registry knows of one model.
public struct ModelInfo: Sendable, Equatable {
    public enum Status: Sendable, Equatable {
        case loading
        case ready
        case failed(String)
        case unloaded

        public var name: String {
            switch self {
            case .loading: "loading"
            case .ready: "ready"
            case .failed: "failed"
            case .unloaded: "unloaded"
            }
        }
    }

    public var name: String
    public var engine: String
    public var task: ModelTask?
    public var version: String
    public var displayName: String
    public var status: Status
    public var contextLength: Int?
    /// nil: public; else the tenant slugs that may see it.
    public var tenants: [String]?
    public var loadedAt: Date?
    public var directory: String
    /// Why the latest load (a reload, say) failed while the version loaded before keeps
    /// serving; nil once a load succeeds.
    package var lastLoadFailure: String? = nil
    /// `"required": true` in the manifest: the instance is not ready without this model.
    public var required = false
    /// Other names the model answers to.
    public var aliases: [String] = []

    /// What operators are told beside the status: why a model failed, or why its latest load
    /// did while an earlier version serves.
    public var reason: String? {
        if case .failed(let why) = status { return why }
        return lastLoadFailure.map { "the latest load failed: \($0); the version loaded before keeps serving" }
    }

    public func visible(to tenant: String?) -> Bool {
        guard let tenants else { return true }
        guard let tenant else { return false }
        return tenants.contains(tenant)
    }
}

/// The models of a model directory (`<dir>/<name>/model.json`): loaded at start, and loaded,
/// unloaded or reloaded at run time. A reload builds the new version first and swaps it in;
/// requests already holding the old engine finish on it.
public final class ModelRegistry: Sendable {
    public let directory: String
    /// The engines a manifest may name.
    public let factories: [any EngineFactory.Type]
    private let state = Mutex<[String: (info: ModelInfo, engine: Engine?)]>([:])

    public init(directory: String, factories: [any EngineFactory.Type] = EngineFactories.native) {
        self.directory = directory
        self.factories = factories
    }

    /// Names of the model folders present on disk.
    public func discover() -> [String] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return [] }
        return entries.filter { FileManager.default.fileExists(atPath: directory + "/" + $0 + "/model.json") }.sorted()
    }

    /// Loads every model found (each on its own thread); a failure is recorded, not thrown.
    public func loadAll() async {
        await withTaskGroup(of: Void.self) { group in
            for name in discover() {
                group.addTask { _ = try? await self.load(name) }
            }
        }
    }

    /// Loads (or reloads) one model. On failure the previous engine, if any, keeps serving.
    @discardableResult
    public func load(_ name: String) async throws -> ModelInfo {
        guard name.range(of: "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", options: .regularExpression) != nil else {
            throw ModelLoadError(file: name, reason: "invalid model name")
        }
        let folder = directory + "/" + name
        let manifest: ModelManifest
        do {
            manifest = try ModelManifest.load(directory: folder)
        } catch {
            record(failed: name, folder: folder, manifest: nil, reason: "\(error)")
            throw error
        }
        var info = ModelInfo(
            name: name, engine: manifest.engine, task: ModelTask(rawValue: manifest.task), version: manifest.version ?? "1",
            displayName: manifest.displayName ?? name, status: .loading, contextLength: manifest.contextLength,
            tenants: Self.tenants(manifest.visibility), loadedAt: nil, directory: folder, required: manifest.required ?? false,
            aliases: manifest.aliases ?? [])
        // Claimed under the lock that records the model: two models loading at once cannot
        // both take one alias.
        let conflict = state.withLock { models -> String? in
            if let conflict = Self.aliasConflict(name, aliases: info.aliases, in: models) { return conflict }
            // While a new version loads, a serving one stays as it is.
            if models[name]?.engine == nil { models[name] = (info, nil) }
            return nil
        }
        if let conflict {
            record(failed: name, folder: folder, manifest: manifest, reason: conflict)
            throw ModelLoadError(file: folder + "/model.json", reason: conflict)
        }
        guard let factory = EngineFactories.factory(manifest.engine, in: factories) else {
            let reason = "unknown engine '\(manifest.engine)' (known: \(factories.map { $0.name }.joined(separator: ", ")))"
            record(failed: name, folder: folder, manifest: manifest, reason: reason)
            throw ModelLoadError(file: folder + "/model.json", reason: reason)
        }
        do {
            try manifest.checkOptions(allowed: factory.optionKeys, in: folder)
            let engine = try await Task.detached { try factory.load(directory: folder, manifest: manifest) }.value
            do { try EngineFactories.checkTask(engine, manifest: manifest, directory: folder) } catch {
                engine.shutdown()
                throw error
            }
            info.status = .ready
            info.loadedAt = Date()
            let old = state.withLock { models -> Engine? in
                let old = models[name]?.engine
                models[name] = (info, engine)
                return old
            }
            // Let requests that hold the old engine finish on it before stopping it.
            if let old {
                Task.detached {
                    try? await Task.sleep(for: .seconds(120))
                    old.shutdown()
                }
            }
            return info
        } catch {
            record(failed: name, folder: folder, manifest: manifest, reason: "\(error)")
            throw error
        }
    }

    /// Stops serving a model (requests already running finish).
    public func unload(_ name: String) throws {
        let engine = try state.withLock { models -> Engine? in
            guard var entry = models[name] else { throw ModelLoadError(file: name, reason: "no such model") }
            entry.info.status = .unloaded
            entry.info.lastLoadFailure = nil
            let engine = entry.engine
            entry.engine = nil
            models[name] = entry
            return engine
        }
        if let engine {
            Task.detached {
                try? await Task.sleep(for: .seconds(120))
                engine.shutdown()
            }
        }
    }

    private func record(failed name: String, folder: String, manifest: ModelManifest?, reason: String) {
        state.withLock { models in
            if var existing = models[name], existing.engine != nil {
                existing.info.status = .ready  // the previous version keeps serving
                existing.info.lastLoadFailure = reason
                models[name] = existing
                return
            }
            models[name] = (
                ModelInfo(
                    name: name, engine: manifest?.engine ?? "?", task: manifest.flatMap { ModelTask(rawValue: $0.task) },
                    version: manifest?.version ?? "?", displayName: manifest?.displayName ?? name, status: .failed(reason),
                    contextLength: manifest?.contextLength, tenants: Self.tenants(manifest?.visibility), loadedAt: nil, directory: folder,
                    required: manifest?.required ?? false),  // a failed model claims no alias
                nil
            )
        }
    }

    public func models() -> [ModelInfo] {
        state.withLock { $0.values.map(\.info).sorted { $0.name < $1.name } }
    }

    /// What the registry knows of a model, by its name or one of its aliases.
    public func info(_ name: String) -> ModelInfo? { state.withLock { Self.entry(name, in: $0)?.info } }

    /// The serving engine of a ready model (by its name or an alias).
    public func engine(_ name: String) -> (ModelInfo, Engine)? {
        state.withLock { models in
            guard let entry = Self.entry(name, in: models), let engine = entry.engine else { return nil }
            return (entry.info, engine)
        }
    }

    /// The model's own name for a name or alias; nil for neither.
    public func canonicalName(_ name: String) -> String? { info(name)?.name }

    private static func entry(_ name: String, in models: [String: (info: ModelInfo, engine: Engine?)]) -> (info: ModelInfo, engine: Engine?)? {
        if let entry = models[name] { return entry }
        return models.values.first { $0.info.aliases.contains(name) }
    }

    /// Why `name` may not take `aliases`: an alias that another model has as its name or
    /// alias, or an invalid one. Nil when they are fine.
    private static func aliasConflict(_ name: String, aliases: [String], in models: [String: (info: ModelInfo, engine: Engine?)]) -> String? {
        for alias in aliases {
            guard alias.range(of: "^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$", options: .regularExpression) != nil, alias != name else {
                return "invalid alias '\(alias)'"
            }
        }
        guard Set(aliases).count == aliases.count else { return "an alias is listed twice" }
        for (other, entry) in models.sorted(by: { $0.key < $1.key }) where other != name {
            for alias in aliases where alias == other || entry.info.aliases.contains(alias) {
                return "alias '\(alias)' is already taken by model '\(other)'"
            }
            if entry.info.aliases.contains(name) { return "model '\(other)' has '\(name)' as an alias" }
        }
        return nil
    }

    /// Stops serving a model and forgets it (`modelgate model remove`): it is listed no more
    /// until it is loaded again.
    public func remove(_ name: String) {
        let engine = state.withLock { models in models.removeValue(forKey: name)?.engine }
        if let engine {
            Task.detached {
                try? await Task.sleep(for: .seconds(120))
                engine.shutdown()
            }
        }
    }

    /// Reasons of models that failed to load (for readiness).
    public var failures: [String: String] {
        state.withLock { models in
            var failures: [String: String] = [:]
            for (name, entry) in models { if case .failed(let reason) = entry.info.status { failures[name] = reason } }
            return failures
        }
    }

    static func tenants(_ visibility: ModelManifest.Visibility?) -> [String]? {
        if case .tenants(let list) = visibility { return list }
        return nil
    }
}
