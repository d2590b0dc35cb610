import Foundation
import Inference
import Postgres
import TestSupport
import Testing

/// A model folder with a `chat_template` in its `tokenizer_config.json` is served with that
/// template: it shapes the prompt (and so the billed prompt tokens), and a conversation it
/// refuses is a 400 with its message. Folders without one keep the plain format.
@Suite struct ChatTemplateEndToEndTests {
    /// Our own small template in the style of real ones (a turn marker, trimmed content, a
    /// refusal of system messages as Gemma's template refuses them).
    static let template = """
        {%- for message in messages %}
            {%- if message['role'] == 'system' %}
                {{- raise_exception('System role not supported') }}
            {%- endif %}
            {{- '<|turn|>' + message['role'] + '\\n' + message['content'] | trim + '<|end|>\\n' }}
        {%- endfor %}
        {%- if add_generation_prompt %}
            {{- '<|turn|>assistant\\n' }}
        {%- endif %}
        """

    @Test func aModelsOwnTemplateShapesThePromptAndItsRefusalIsA400() async throws {
        let models = try TestModels.directory(privateTo: "nobody")
        defer { try? FileManager.default.removeItem(atPath: models) }
        let shakespeare = TestModels.repository.path + "/models/shakespeare"
        let folder = models + "/templated"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        for file in ["config.json", "model.safetensors", "vocab.json", "merges.txt"] {
            try FileManager.default.createSymbolicLink(atPath: folder + "/" + file, withDestinationPath: shakespeare + "/" + file)
        }
        try #"{"engine": "transformer-lm"}"#.write(toFile: folder + "/model.json", atomically: true, encoding: .utf8)
        try JSONSerialization.data(withJSONObject: ["chat_template": Self.template, "eos_token": "<|endoftext|>"])
            .write(to: URL(fileURLWithPath: folder + "/tokenizer_config.json"))
        let tokenizer = try BPETokenizer(directory: shakespeare)

        try await GatewayFixture.with(extraEnvironment: ["MODELGATE_MODELS_DIRECTORY": models]) { fixture in
            let url = fixture.server.baseURL + "/v1/chat/completions"
            let messages = [["role": "user", "content": "  Hello there  "]]
            func promptTokens(_ model: String) async throws -> Int? {
                let answer = try await HTTP.send(.POST, url, key: fixture.keyA, json: ["model": model, "messages": messages, "max_tokens": 3])
                #expect(answer.status == 200, "\(answer.body)")
                let choice = (answer.json["choices"] as? [[String: Any]])?.first
                #expect(["stop", "length"].contains(choice?["finish_reason"] as? String ?? ""))
                return (answer.json["usage"] as? [String: Any])?["prompt_tokens"] as? Int
            }
            let templated = try await promptTokens("templated")
            #expect(templated == tokenizer.encode("<|turn|>user\nHello there<|end|>\n<|turn|>assistant\n").count)
            let plain = try await promptTokens("shakespeare")
            #expect(plain == tokenizer.encode("User:   Hello there  \n\nAssistant:").count)

            let refused = try await HTTP.send(
                .POST, url, key: fixture.keyA, json: ["model": "templated", "messages": [["role": "system", "content": "Be brief."]] + messages])
            #expect(refused.status == 400, "\(refused.body)")
            let error = refused.json["error"] as? [String: Any]
            #expect(error?["message"] as? String == "messages: System role not supported")
            #expect(error?["param"] as? String == "messages")
            #expect(error?["type"] as? String == "invalid_request_error")
        }
    }

    /// A Llama-architecture chat model (the tiny Llama fixture: grouped-query attention, Llama 3
    /// rope scaling, its own tokenizer.json and ChatML template) served to the official client.
    @Test(.enabled(if: OpenAIPython.python != nil, "the openai Python package could not be installed; skipping"))
    func aLlamaArchitectureChatModelServesTheOfficialClient() async throws {
        let models = try TestModels.directory(privateTo: "nobody")
        defer { try? FileManager.default.removeItem(atPath: models) }
        let fixture = TestModels.repository.path + "/Tests/InferenceTests/Fixtures/tiny-llama"
        let folder = models + "/tiny-llama"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        for file in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
            try FileManager.default.createSymbolicLink(atPath: folder + "/" + file, withDestinationPath: fixture + "/" + file)
        }
        try #"{"engine": "transformer-lm"}"#.write(toFile: folder + "/model.json", atomically: true, encoding: .utf8)
        try await GatewayFixture.with(extraEnvironment: ["MODELGATE_MODELS_DIRECTORY": models]) { gateway in
            let script = TestModels.repository.path + "/Tests/EndToEndTests/Python/openai_chat_model_check.py"
            let arguments = [try #require(OpenAIPython.python), script, gateway.server.baseURL, gateway.keyA, "tiny-llama"]
            let (status, output) = try await onOwnThread { [arguments] in try ChildProcess.run("/usr/bin/env", arguments) }
            #expect(status == 0 && output.contains("OK"), "\(output)\n--- server log ---\n\(gateway.server.log.suffix(3000))")
        }
    }

    @Test func aTemplateThatCannotBeParsedFailsTheLoadNamingTheOverride() throws {
        let folder = NSTemporaryDirectory() + "mg-bad-template-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let shakespeare = TestModels.repository.path + "/models/shakespeare"
        for file in ["config.json", "model.safetensors", "vocab.json", "merges.txt"] {
            try FileManager.default.createSymbolicLink(atPath: folder + "/" + file, withDestinationPath: shakespeare + "/" + file)
        }
        try #"{"chat_template": "{% macro turn(m) %}{{ m }}{% endmacro %}"}"#.write(toFile: folder + "/tokenizer_config.json", atomically: true, encoding: .utf8)
        for (options, fails) in [(#"{}"#, true), (#"{"chat_format": "plain"}"#, false), (#"{"chat_format": "jinja"}"#, true)] {
            try #"{"engine": "transformer-lm", "options": \#(options)}"#.write(toFile: folder + "/model.json", atomically: true, encoding: .utf8)
            do {
                let engine = try TransformerLMFactory.load(directory: folder, manifest: try EngineFactories.check(directory: folder))
                if case .text(let generator) = engine { generator.shutdown() }
                #expect(!fails, "\(options) loaded")
            } catch {
                #expect(fails, "\(options): \(error)")
                #expect("\(error)".contains("chat_format"), "\(error)")
            }
        }
    }
}
