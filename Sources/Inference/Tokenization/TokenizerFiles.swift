import Foundation

/// Reading a `BPETokenizer` from the files models come with: a Hugging Face `tokenizer.json`
/// (with `tokenizer_config.json`), GPT-2's `vocab.json` + `merges.txt`, or a GGUF file's
/// `tokenizer.ggml.*` metadata. What a file describes that ModelGate cannot reproduce exactly
/// fails the load, naming the file and the field.
extension BPETokenizer {
    /// The tokenizer of a model folder: `tokenizer.json` where there is one, else GPT-2's files.
    public convenience init(directory: String) throws {
        if FileManager.default.fileExists(atPath: directory + "/tokenizer.json") {
            try self.init(huggingFace: directory)
        } else {
            try self.init(gpt2Directory: directory)
        }
    }

    /// GPT-2's byte-level BPE from `vocab.json` and `merges.txt`.
    convenience init(gpt2Directory directory: String) throws {
        let vocabPath = directory + "/vocab.json"
        let mergesPath = directory + "/merges.txt"
        guard let mergesText = try? String(contentsOfFile: mergesPath, encoding: .utf8) else {
            throw ModelLoadError(file: mergesPath, reason: "missing or not UTF-8")
        }
        let vocab = try Self.readJSON(vocabPath)
        var merges: [(String, String)] = []
        for line in mergesText.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("#version") { continue }
            let parts = line.split(separator: " ")
            guard parts.count == 2 else { throw ModelLoadError(file: mergesPath, reason: "malformed merge line '\(line)'") }
            merges.append((String(parts[0]), String(parts[1])))
        }
        let ids = try Self.idTable(vocab) { ModelLoadError(file: vocabPath, reason: "\($0)") }
        self.init(gpt2Tokens: ids, merges: merges)
    }

    /// GPT-2's configuration over `vocabulary` and `merges` in GPT-2's printable byte form.
    public convenience init(vocabulary: [String: Int], merges: [(String, String)]) {
        self.init(gpt2Tokens: Dictionary(vocabulary.map { ($1, $0) }, uniquingKeysWith: { first, _ in first }), merges: merges)
    }

    private convenience init(gpt2Tokens ids: [Int: String], merges: [(String, String)]) {
        var configuration = Configuration(tokens: Self.tokenList(ids), merges: .ranked(merges), symbols: .bytes, preTokenizer: .gpt2(individualDigits: false))
        configuration.endOfText = ids.first { $0.value == "<|endoftext|>" }?.key
        self.init(configuration)
    }

    /// A JSON file, its object members kept as written (`LiteralJSON`).
    private static func readJSON(_ path: String) throws -> LiteralJSON {
        guard let data = FileManager.default.contents(atPath: path) else { throw ModelLoadError(file: path, reason: "missing") }
        do {
            return try LiteralJSON.parse(Array(data))
        } catch {
            throw ModelLoadError(file: path, reason: "\(error)")
        }
    }

    /// Id -> token from a JSON object of token -> id, each token as the file spells it.
    private static func idTable(_ object: LiteralJSON?, invalid: (String) -> ModelLoadError) throws -> [Int: String] {
        guard let members = object?.members else { throw invalid("not an object of token -> id") }
        var ids: [Int: String] = [:]
        for (token, value) in members {
            guard let id = value.int, id >= 0, id < 10_000_000 else { throw invalid("token '\(token)' has no valid id") }
            ids[id] = token
        }
        return ids
    }

    /// Tokens by id (ids the file skips are empty).
    private static func tokenList(_ ids: [Int: String]) -> [String] {
        var tokens = [String](repeating: "", count: (ids.keys.max() ?? -1) + 1)
        for (id, token) in ids { tokens[id] = token }
        return tokens
    }

    // MARK: Hugging Face tokenizer.json

    /// A Hugging Face tokenizer: `tokenizer.json`, and `tokenizer_config.json` where present
    /// (beginning/end-of-text tokens, whether a prompt starts with the former).
    convenience init(huggingFace directory: String) throws {
        let path = directory + "/tokenizer.json"
        let root = try Self.readJSON(path)
        func fail(_ field: String, _ reason: String) -> ModelLoadError { ModelLoadError(file: path, reason: "\(field): \(reason)") }
        guard let model = root["model"], model.members != nil else { throw fail("model", "missing") }
        guard model["type"]?.string == "BPE" else {
            throw fail("model.type", "'\(model["type"]?.string ?? "none")' is not supported (BPE is)")
        }
        var ids = try Self.idTable(model["vocab"]) { fail("model.vocab", $0) }
        var added: [AddedToken] = []
        for (index, entry) in (root["added_tokens"]?.array ?? []).enumerated() {
            guard let id = entry["id"]?.int, id >= 0, id < 10_000_000, let content = entry["content"]?.string else {
                throw fail("added_tokens[\(index)]", "needs an id and content")
            }
            ids[id] = content
            added.append(AddedToken(id: id, content: content, special: entry["special"]?.bool ?? false))
        }
        let tokens = Self.tokenList(ids)
        var merges: [(String, String)] = []
        for (index, merge) in (model["merges"]?.array ?? []).enumerated() {
            if let line = merge.string {
                let parts = line.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw fail("model.merges[\(index)]", "'\(line)' is not two tokens") }
                merges.append((String(parts[0]), String(parts[1])))
            } else if let pair = merge.array, pair.count == 2, let first = pair[0].string, let second = pair[1].string {
                merges.append((first, second))
            } else {
                throw fail("model.merges[\(index)]", "is neither \"a b\" nor [\"a\", \"b\"]")
            }
        }

        // The normalizer and pre-tokenizer decide the symbols and the split.
        var normalizeNFC = false
        var prependSpace = false
        var replacesSpaces = false
        func normalizer(_ value: LiteralJSON?, field: String) throws {
            guard let object = value, !object.isNull else { return }
            switch object["type"]?.string {
            case "Sequence":
                for (index, item) in (object["normalizers"]?.array ?? []).enumerated() { try normalizer(item, field: "\(field).normalizers[\(index)]") }
            case "NFC": normalizeNFC = true
            case "Prepend" where object["prepend"]?.string == "\u{2581}": prependSpace = true
            case "Replace" where object["pattern"]?["String"]?.string == " " && object["content"]?.string == "\u{2581}":
                replacesSpaces = true
            default: throw fail(field, "normalizer '\(object["type"]?.string ?? "?")' is not supported")
            }
        }
        try normalizer(root["normalizer"], field: "normalizer")
        var byteLevel = false
        var preTokenizer = PreTokenizer.none
        var individualDigits = false
        func pre(_ value: LiteralJSON?, field: String) throws {
            guard let object = value, !object.isNull else { return }
            switch object["type"]?.string {
            case "Sequence":
                for (index, item) in (object["pretokenizers"]?.array ?? []).enumerated() { try pre(item, field: "\(field).pretokenizers[\(index)]") }
            case "ByteLevel":
                byteLevel = true
                guard object["add_prefix_space"]?.bool != true else { throw fail(field, "ByteLevel add_prefix_space is not supported") }
                if object["use_regex"]?.bool ?? true { preTokenizer = .gpt2(individualDigits: individualDigits) }
            case "Digits":
                guard object["individual_digits"]?.bool == true else { throw fail(field, "Digits without individual_digits is not supported") }
                individualDigits = true
            case "Split":
                guard let pattern = object["pattern"]?["Regex"]?.string, let known = PreTokenizer.matching(pattern: pattern),
                    (object["behavior"]?.string ?? "Isolated") == "Isolated", object["invert"]?.bool != true
                else { throw fail(field, "this Split pattern is not one ModelGate knows (GPT-2's, Llama 3's or Qwen2's)") }
                preTokenizer = known
            case "Metaspace":
                guard (object["replacement"]?.string ?? "\u{2581}") == "\u{2581}", object["split"]?.bool != true else {
                    throw fail(field, "Metaspace with another replacement or split is not supported")
                }
                replacesSpaces = true
                prependSpace = (object["prepend_scheme"]?.string ?? "always") != "never" && (object["add_prefix_space"]?.bool ?? true)
            default: throw fail(field, "pre-tokenizer '\(object["type"]?.string ?? "?")' is not supported")
            }
        }
        try pre(root["pre_tokenizer"], field: "pre_tokenizer")
        let byteFallback = model["byte_fallback"]?.bool ?? false
        let symbols: Symbols
        if byteLevel {
            symbols = .bytes
        } else if replacesSpaces || byteFallback {
            symbols = .characters(addPrefixSpace: prependSpace)
        } else {
            throw fail("pre_tokenizer", "neither byte-level nor SentencePiece-style (▁ for spaces): not supported")
        }

        var configuration = Configuration(tokens: tokens, merges: .ranked(merges), symbols: symbols, preTokenizer: preTokenizer)
        configuration.ignoreMerges = model["ignore_merges"]?.bool ?? false
        configuration.normalizeNFC = normalizeNFC
        configuration.addedTokens = added
        configuration.controlTokens = Set(added.filter(\.special).map(\.id))
        if let unknown = model["unk_token"]?.string { configuration.unknownToken = ids.first { $0.value.utf8.elementsEqual(unknown.utf8) }?.key }
        func tokenID(_ content: String) -> Int? { added.first { $0.content.utf8.elementsEqual(content.utf8) }?.id }

        // Beginning and end of text, from tokenizer_config.json where there is one.
        let configPath = directory + "/tokenizer_config.json"
        var beginName: String?, endName: String?
        var addBegin: Bool?
        if FileManager.default.fileExists(atPath: configPath) {
            let config = try Self.readJSON(configPath)
            func name(_ value: LiteralJSON?) -> String? { value?.string ?? value?["content"]?.string }
            beginName = name(config["bos_token"])
            endName = name(config["eos_token"])
            addBegin = config["add_bos_token"]?.bool
        }
        // A post-processor that puts a special token first adds the beginning of text.
        if let processor = root["post_processor"], !processor.isNull {
            let steps = processor["type"]?.string == "Sequence" ? processor["processors"]?.array ?? [] : [processor]
            for step in steps where step["type"]?.string == "TemplateProcessing" {
                if let id = step["single"]?.array?.first?["SpecialToken"]?["id"]?.string {
                    addBegin = addBegin ?? true
                    beginName = beginName ?? id
                }
            }
        }
        configuration.beginOfText = beginName.flatMap(tokenID)
        configuration.endOfText = endName.flatMap(tokenID) ?? tokenID("<|endoftext|>")
        configuration.addBeginOfText = (addBegin ?? false) && configuration.beginOfText != nil
        self.init(configuration)
    }

    // MARK: GGUF

    /// The tokenizer a GGUF file describes (`tokenizer.ggml.*`): byte-level BPE (`gpt2`) with
    /// the split pattern `tokenizer.ggml.pre` names, or SentencePiece (`llama`) with scores.
    convenience init(gguf file: GGUFFile) throws {
        func fail(_ key: String, _ reason: String) -> ModelLoadError { ModelLoadError(file: file.path, reason: "metadata '\(key)': \(reason)") }
        let kind = try file.require("tokenizer.ggml.model").text
        let tokens = try file.strings("tokenizer.ggml.tokens").map { String(decoding: $0, as: UTF8.self) }
        let types = file.metadata["tokenizer.ggml.token_type"] == nil ? [] : try file.numbers("tokenizer.ggml.token_type").map { Int($0) }
        guard types.isEmpty || types.count == tokens.count else {
            throw fail("tokenizer.ggml.token_type", "\(types.count) entries for \(tokens.count) tokens")
        }
        var configuration: Configuration
        switch kind {
        case "gpt2":
            let pre = file.metadata["tokenizer.ggml.pre"]?.text ?? "default"
            let preTokenizer: PreTokenizer
            var ignoreMerges = false
            var normalizeNFC = false
            switch pre {
            case "llama3", "llama-v3", "llama-bpe":
                preTokenizer = .llama3(maxDigits: 3)
                ignoreMerges = true
            case "qwen2":
                // Qwen2's own tokenizer normalizes to NFC (llama.cpp does not; Hugging Face does).
                preTokenizer = .llama3(maxDigits: 1)
                normalizeNFC = true
            case "gpt-2", "phi-2": preTokenizer = .gpt2(individualDigits: false)
            case "smollm": preTokenizer = .gpt2(individualDigits: true)
            default: throw fail("tokenizer.ggml.pre", "'\(pre)' is not supported (llama-bpe, qwen2, gpt-2 and smollm are)")
            }
            var merges: [(String, String)] = []
            // A vocabulary of single bytes has no merges (gguf-py writes no key for an empty list).
            let listed = file.metadata["tokenizer.ggml.merges"] == nil ? [] : try file.strings("tokenizer.ggml.merges")
            for (index, merge) in listed.enumerated() {
                let parts = merge.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw fail("tokenizer.ggml.merges", "entry \(index) is not two tokens") }
                merges.append((String(decoding: parts[0], as: UTF8.self), String(decoding: parts[1], as: UTF8.self)))
            }
            configuration = Configuration(tokens: tokens, merges: .ranked(merges), symbols: .bytes, preTokenizer: preTokenizer)
            configuration.ignoreMerges = ignoreMerges
            configuration.normalizeNFC = normalizeNFC
        case "llama":
            let scores = try file.numbers("tokenizer.ggml.scores").map { Float($0) }
            guard scores.count == tokens.count else { throw fail("tokenizer.ggml.scores", "\(scores.count) entries for \(tokens.count) tokens") }
            let prefix: Bool
            if case .bool(let value) = file.metadata["tokenizer.ggml.add_space_prefix"] { prefix = value } else { prefix = true }
            configuration = Configuration(tokens: tokens, merges: .scored(scores), symbols: .characters(addPrefixSpace: prefix), preTokenizer: .none)
        default:
            throw fail("tokenizer.ggml.model", "'\(kind ?? "?")' is not supported (gpt2 and llama are)")
        }
        // Token types (llama.cpp's): 2 unknown, 3 control, 4 user-defined.
        for (id, type) in types.enumerated() where type == 2 || type == 3 || type == 4 {
            configuration.addedTokens.append(AddedToken(id: id, content: tokens[id], special: type != 4))
            if type == 3 { configuration.controlTokens.insert(id) }
        }
        func id(_ key: String) throws -> Int? {
            guard let value = file.metadata[key] else { return nil }
            guard let id = value.int, id >= 0, id < tokens.count else { throw fail(key, "not a token id") }
            return id
        }
        configuration.beginOfText = try id("tokenizer.ggml.bos_token_id")
        configuration.endOfText = try id("tokenizer.ggml.eos_token_id")
        configuration.unknownToken = try id("tokenizer.ggml.unknown_token_id")
        if case .bool(let value) = file.metadata["tokenizer.ggml.add_bos_token"] {
            configuration.addBeginOfText = value
        } else {
            configuration.addBeginOfText = kind == "llama" || ["llama3", "llama-v3", "llama-bpe"].contains(file.metadata["tokenizer.ggml.pre"]?.text ?? "")
        }
        configuration.addBeginOfText = configuration.addBeginOfText && configuration.beginOfText != nil
        self.init(configuration)
    }
}
