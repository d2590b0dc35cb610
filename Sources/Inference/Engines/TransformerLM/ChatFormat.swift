import Foundation

/// A chat message as a chat template sees it.
public struct ChatTurn: Sendable, Equatable {
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// How a text model turns chat messages into its prompt, and where its answer ends: the
/// model's own chat template (from `tokenizer_config.json`), or, for models without one (GPT-2,
/// the Shakespeare demo), the `plain` format.
public struct ChatFormat: Sendable {
    enum Kind: Sendable {
        case plain
        case template(ChatTemplate, specialTokens: [String: String])
    }

    let kind: Kind

    /// The role names of the plain template.
    static let plainNames: [String: String] = [
        "system": "System", "developer": "System", "user": "User", "assistant": "Assistant", "tool": "Tool", "function": "Tool",
    ]

    /// `System: ...`, `User: ...`, `Assistant: ...` turns separated by blank lines, ending with
    /// `Assistant:`; generation stops at the next `\n\nUser:`.
    public static let plain = ChatFormat(kind: .plain)

    /// A model's own template; `specialTokens` are what it sees as `bos_token`, `eos_token`...
    package static func template(_ template: ChatTemplate, specialTokens: [String: String]) -> ChatFormat {
        ChatFormat(kind: .template(template, specialTokens: specialTokens))
    }

    /// Where generation stops besides the request's own stop sequences (a templated model
    /// stops at its end-of-turn tokens instead).
    public var stopSequences: [String] {
        if case .plain = kind { return ["\n\nUser:"] }
        return []
    }

    /// The prompt for `turns`. Throws `invalidParameter` naming the first message whose role
    /// the plain format does not know, or with the refusal of the model's template (Gemma's
    /// has no system role, for one).
    package func render(_ turns: [ChatTurn]) throws -> ChatTemplate.Rendered {
        guard !turns.isEmpty else { throw GenerationError.invalidParameter("messages", "must not be empty") }
        switch kind {
        case .plain:
            var text = ""
            for (index, turn) in turns.enumerated() {
                guard let name = Self.plainNames[turn.role] else {
                    throw GenerationError.invalidParameter("messages[\(index)].role", "unknown role '\(turn.role)'")
                }
                text += "\(name): \(turn.content)\n\n"
            }
            text += "Assistant:"
            return ChatTemplate.Rendered(text: text, markup: Array(repeating: false, count: text.utf8.count))
        case .template(let template, let specialTokens):
            do {
                return try template.render(turns, specialTokens: specialTokens)
            } catch let error as JinjaTemplateError {
                throw GenerationError.invalidParameter("messages", error.message)
            }
        }
    }

    /// The chat format of a model folder: `options.chat_format` (`"plain"`, or `"template"`, the
    /// default) and the `chat_template` of `tokenizer_config.json`, where there is one.
    static func load(directory: String, option: String?) throws -> ChatFormat {
        let manifest = directory + "/model.json"
        switch option {
        case "plain": return .plain
        case nil, "template": break
        default: throw ModelLoadError(file: manifest, reason: "options.chat_format must be \"template\" or \"plain\"")
        }
        let path = directory + "/tokenizer_config.json"
        guard let data = FileManager.default.contents(atPath: path) else { return .plain }
        let config: LiteralJSON
        do {
            config = try LiteralJSON.parse(Array(data))
        } catch {
            throw ModelLoadError(file: path, reason: "\(error)")
        }
        // A string, or a list of named templates (the one named "default").
        var source = config["chat_template"]?.string
        if source == nil, let named = config["chat_template"]?.array {
            source = named.first { $0["name"]?.string == "default" }?["template"]?.string
        }
        guard let source else { return .plain }
        var special: [String: String] = [:]
        for name in ["bos_token", "eos_token", "unk_token", "pad_token"] {
            if let token = config[name]?.string ?? config[name]?["content"]?.string { special[name] = token }
        }
        return try compiled(source, specialTokens: special, file: path, key: "chat_template")
    }

    /// The chat format of a GGUF model: `options.chat_format` and the file's
    /// `tokenizer.chat_template`, with its BOS and EOS tokens' text.
    static func load(gguf file: GGUFFile, directory: String, option: String?) throws -> ChatFormat {
        switch option {
        case "plain": return .plain
        case nil, "template": break
        default: throw ModelLoadError(file: directory + "/model.json", reason: "options.chat_format must be \"template\" or \"plain\"")
        }
        guard let source = file.metadata["tokenizer.chat_template"]?.text else { return .plain }
        let tokens = (try? file.strings("tokenizer.ggml.tokens")) ?? []
        var special: [String: String] = [:]
        for (name, key) in [("bos_token", "tokenizer.ggml.bos_token_id"), ("eos_token", "tokenizer.ggml.eos_token_id")] {
            if let id = file.metadata[key]?.int, tokens.indices.contains(id) { special[name] = String(decoding: tokens[id], as: UTF8.self) }
        }
        return try compiled(source, specialTokens: special, file: file.path, key: "tokenizer.chat_template")
    }

    private static func compiled(_ source: String, specialTokens: [String: String], file: String, key: String) throws -> ChatFormat {
        do {
            return .template(try ChatTemplate(source: source), specialTokens: specialTokens)
        } catch {
            throw ModelLoadError(
                file: file, reason: "\(key): \(error); set options.chat_format to \"plain\" in model.json to serve the model without it")
        }
    }
}
