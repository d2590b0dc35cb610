import Foundation
import NIOHTTP1
import Postgres
import Tenancy
import TestSupport
import Testing

/// What a request is refused for and how answers are shaped: requests that are not understood
/// are refused naming the field, and responses satisfy OpenAI's published schemas.
@Suite struct APIDetailsEndToEndTests {
    func error(_ result: HTTPResult) -> [String: Any] { result.json["error"] as? [String: Any] ?? [:] }

    /// Unknown fields are errors, not ignored: `"models"` for `"allowed_models"` once created a
    /// key that could use every model. The CLI's names are accepted as documented aliases.
    @Test func keyAndAdminRoutesRefuseFieldsTheyDoNotKnow() async throws {
        try await GatewayFixture.with { fixture in
            let base = fixture.server.baseURL
            let admin = try await fixture.key(tenant: fixture.tenantA, scopes: [.keysManage, .inference])
            let typo = try await HTTP.send(.POST, base + "/v1/keys", key: admin, json: ["name": "x", "scopes": ["inference"], "expires_in": "30d"])
            #expect(typo.status == 400, "\(typo.body)")
            #expect(error(typo)["param"] as? String == "expires_in")
            #expect(error(typo)["code"] as? String == "unknown_parameter")
            let nestedTypo = try await HTTP.send(.POST, base + "/v1/keys", key: admin, json: ["name": "x", "limits": ["requests_per_minit": 5]])
            #expect(nestedTypo.status == 400, "\(nestedTypo.body)")
            #expect(error(nestedTypo)["param"] as? String == "limits.requests_per_minit")
            // The CLI's names: models and expires.
            let aliased = try await HTTP.send(.POST, base + "/v1/keys", key: admin, json: ["name": "x", "models": ["shakespeare"], "expires": "30d"])
            #expect(aliased.status == 201, "\(aliased.body)")
            #expect(aliased.json["allowed_models"] as? [String] == ["shakespeare"])
            let expiry = (aliased.json["expires_at"] as? String).flatMap { ISO8601DateFormatter().date(from: $0) }
            #expect(expiry.map { abs($0.timeIntervalSinceNow - 30 * 86_400) < 600 } == true, "\(aliased.body)")
            let restricted = try #require(aliased.json["key"] as? String)
            let other = try await HTTP.send(.POST, base + "/v1/completions", key: restricted, json: ["model": "cifar", "prompt": "x"])
            #expect(other.status == 404, "the alias must restrict the key: \(other.body)")
            let both = try await HTTP.send(.POST, base + "/v1/keys", key: admin, json: ["name": "x", "models": ["a"], "allowed_models": ["a"]])
            #expect(both.status == 400)
            // Operator routes too, and they take slugs wherever they take a tenant id.
            let operatorKey = fixture.harness.operatorKey
            let tenant = try await HTTP.send(.POST, base + "/admin/v1/tenants", key: operatorKey, json: ["slug": "strict-x", "display_name": "X", "contact": "a@b.c"])
            #expect(tenant.status == 400, "\(tenant.body)")
            #expect(error(tenant)["param"] as? String == "contact")
            let bySlug = try await HTTP.send(.GET, base + "/admin/v1/tenants/\(fixture.tenantA.slug)", key: operatorKey)
            #expect(bySlug.status == 200, "\(bySlug.body)")
            #expect(bySlug.json["id"] as? String == fixture.tenantA.id.uuidString.lowercased())
            let keysBySlug = try await HTTP.send(.GET, base + "/admin/v1/tenants/\(fixture.tenantA.slug)/keys", key: operatorKey)
            #expect(keysBySlug.status == 200)
            let audit = try await HTTP.send(.GET, base + "/admin/v1/audit?tenant=\(fixture.tenantA.slug)", key: operatorKey)
            #expect(audit.status == 200, "\(audit.body)")
            #expect(try await HTTP.send(.GET, base + "/admin/v1/tenants/no-such-slug", key: operatorKey).status == 404)
        }
    }

    /// OpenAI's own behaviour: an unknown parameter is a 400 naming it; a parameter OpenAI
    /// defines that this model's engine does not support is a 400 saying so — unless the
    /// operator chose to drop such parameters.
    @Test func openAIRoutesRefuseUnknownAndUnsupportedParameters() async throws {
        try await GatewayFixture.with { fixture in
            let base = fixture.server.baseURL
            let unknown = try await HTTP.send(.POST, base + "/v1/completions", key: fixture.keyA, json: ["model": "shakespeare", "prompt": "A", "max_token": 3])
            #expect(unknown.status == 400)
            #expect(error(unknown)["code"] as? String == "unknown_parameter")
            #expect(error(unknown)["param"] as? String == "max_token")
            let nested = try await HTTP.send(
                .POST, base + "/v1/chat/completions", key: fixture.keyA,
                json: ["model": "shakespeare", "messages": [["role": "user", "content": "hi", "contnet": "x"]]])
            #expect(error(nested)["param"] as? String == "messages[0].contnet", "\(nested.body)")
            for (name, value) in [("tools", [["type": "function", "function": ["name": "f"]]] as Any), ("response_format", ["type": "json_object"]),
                                  ("logit_bias", ["50": 5])] {
                let refused = try await HTTP.send(
                    .POST, base + "/v1/chat/completions", key: fixture.keyA,
                    json: ["model": "shakespeare", "messages": [["role": "user", "content": "hi"]], "max_tokens": 2, name: value])
                #expect(refused.status == 400, "\(name): \(refused.body)")
                #expect(error(refused)["code"] as? String == "unsupported_parameter")
                #expect(error(refused)["param"] as? String == name)
            }
            let suffix = try await HTTP.send(.POST, base + "/v1/completions", key: fixture.keyA, json: ["model": "shakespeare", "prompt": "A", "suffix": "B"])
            #expect(error(suffix)["code"] as? String == "unsupported_parameter")
            let image = try await HTTP.send(
                .POST, base + "/v1/chat/completions", key: fixture.keyA,
                json: ["model": "shakespeare", "messages": [["role": "user", "content": [["type": "image_url", "image_url": ["url": "data:,"]]]]]])
            #expect(error(image)["param"] as? String == "messages[0].content[0]", "\(image.body)")
            // What asks for nothing is accepted: an empty logit_bias, store false, a name.
            let harmless = try await HTTP.send(
                .POST, base + "/v1/chat/completions", key: fixture.keyA,
                json: ["model": "shakespeare", "messages": [["role": "user", "content": "hi", "name": "ann"]], "max_tokens": 2, "logit_bias": [:] as [String: Int],
                       "store": false, "user": "u-1"])
            #expect(harmless.status == 200, "\(harmless.body)")
            // Nothing refused was billed.
            #expect(try await fixture.events(fixture.tenantA).count == 1)
        }
        try await GatewayFixture.with(extraEnvironment: ["MODELGATE_SERVER_DROP_UNSUPPORTED_PARAMS": "true"]) { fixture in
            let dropped = try await HTTP.send(
                .POST, fixture.server.baseURL + "/v1/chat/completions", key: fixture.keyA,
                json: ["model": "shakespeare", "messages": [["role": "user", "content": "hi"]], "max_tokens": 2, "tools": [["type": "function"]],
                       "response_format": ["type": "json_object"]])
            #expect(dropped.status == 200, "\(dropped.body)")
            let unknown = try await HTTP.send(
                .POST, fixture.server.baseURL + "/v1/completions", key: fixture.keyA, json: ["model": "shakespeare", "prompt": "A", "bogus": 1])
            #expect(unknown.status == 400, "unknown parameters are refused whatever the setting")
        }
    }

    /// Errors name the parameter at fault as OpenAI does, and scoring a prompt works.
    @Test func errorsNameTheParameterAndEchoScoresAPrompt() async throws {
        try await GatewayFixture.with { fixture in
            let base = fixture.server.baseURL
            let long = String(repeating: "KING HENRY ", count: 200)
            let tooLong = try await HTTP.send(.POST, base + "/v1/completions", key: fixture.keyA, json: ["model": "shakespeare", "prompt": long])
            #expect(tooLong.status == 400)
            #expect(error(tooLong)["code"] as? String == "context_length_exceeded")
            #expect(error(tooLong)["param"] as? String == "prompt", "\(tooLong.body)")
            let chatTooLong = try await HTTP.send(
                .POST, base + "/v1/chat/completions", key: fixture.keyA, json: ["model": "shakespeare", "messages": [["role": "user", "content": long]]])
            #expect(error(chatTooLong)["param"] as? String == "messages", "\(chatTooLong.body)")
            let typed = try await HTTP.send(.POST, base + "/v1/completions", key: fixture.keyA, json: ["model": "shakespeare", "prompt": "A", "max_tokens": "5"])
            #expect(error(typed)["message"] as? String == "Invalid type for 'max_tokens': expected an integer, but got a string instead.", "\(typed.body)")
            #expect(error(typed)["param"] as? String == "max_tokens")
            // echo + max_tokens 0: the prompt's log-probabilities, nothing generated.
            let scored = try await HTTP.send(
                .POST, base + "/v1/completions", key: fixture.keyA,
                json: ["model": "shakespeare", "prompt": "ROMEO: my love", "echo": true, "max_tokens": 0, "logprobs": 1])
            #expect(scored.status == 200, "\(scored.body)")
            let choice = (scored.json["choices"] as? [[String: Any]])?.first
            #expect(choice?["text"] as? String == "ROMEO: my love")
            let logprobs = choice?["logprobs"] as? [String: Any]
            let tokens = logprobs?["tokens"] as? [String] ?? []
            #expect(!tokens.isEmpty && tokens.joined() == "ROMEO: my love", "\(scored.body)")
            #expect((logprobs?["token_logprobs"] as? [Any])?.dropFirst().allSatisfy { $0 is Double } == true)
            #expect((scored.json["usage"] as? [String: Any])?["completion_tokens"] as? Int == 0)
            let noEcho = try await HTTP.send(.POST, base + "/v1/completions", key: fixture.keyA, json: ["model": "shakespeare", "prompt": "A", "max_tokens": 0])
            #expect(noEcho.status == 400)
            #expect(error(noEcho)["param"] as? String == "max_tokens")
        }
    }

    /// Every response shape against OpenAI's published OpenAPI document (not only against
    /// what the Python client happens to tolerate): clients generated from that document must
    /// decode what ModelGate sends.
    @Test(.enabled(if: OpenAIPython.python != nil, "jsonschema could not be installed; skipping"))
    func responsesSatisfyOpenAIsPublishedSchemas() async throws {
        try await GatewayFixture.with { fixture in
            let base = fixture.server.baseURL
            var checked: [[Any]] = []
            func object(_ result: HTTPResult) -> Any { (try? JSONSerialization.jsonObject(with: Data(result.body.utf8))) ?? [:] }
            let chat = ["model": "shakespeare", "messages": [["role": "user", "content": "Speak."]], "max_tokens": 4] as [String: Any]
            checked.append(["CreateChatCompletionResponse", object(try await HTTP.send(.POST, base + "/v1/chat/completions", key: fixture.keyA, json: chat))])
            let withLogprobs = chat.merging(["logprobs": true, "top_logprobs": 2, "n": 2]) { $1 }
            checked.append(["CreateChatCompletionResponse", object(try await HTTP.send(.POST, base + "/v1/chat/completions", key: fixture.keyA, json: withLogprobs))])
            let completion = ["model": "shakespeare", "prompt": ["A", "B"], "max_tokens": 3, "logprobs": 2] as [String: Any]
            checked.append(["CreateCompletionResponse", object(try await HTTP.send(.POST, base + "/v1/completions", key: fixture.keyA, json: completion))])
            let stream = try await HTTP.send(
                .POST, base + "/v1/chat/completions", key: fixture.keyA,
                json: withLogprobs.merging(["stream": true, "stream_options": ["include_usage": true]]) { $1 })
            for line in stream.body.split(separator: "\n") where line.hasPrefix("data: {") {
                checked.append(["CreateChatCompletionStreamResponse", (try? JSONSerialization.jsonObject(with: Data(line.dropFirst(6).utf8))) ?? [:]])
            }
            checked.append(["ListModelsResponse", object(try await HTTP.send(.GET, base + "/v1/models", key: fixture.keyA))])
            checked.append(["Model", object(try await HTTP.send(.GET, base + "/v1/models/shakespeare", key: fixture.keyA))])
            checked.append(["ErrorResponse", object(try await HTTP.send(.GET, base + "/v1/models/nope", key: fixture.keyA))])
            checked.append(["ErrorResponse", object(try await HTTP.send(.POST, base + "/v1/completions", key: fixture.keyA, json: ["model": "shakespeare", "x": 1]))])
            if MiniLM.directory != nil {
                checked.append(["CreateEmbeddingResponse", object(try await HTTP.send(
                    .POST, base + "/v1/embeddings", key: fixture.keyA, json: ["model": "minilm", "input": ["a", "b"]]))])
            }
            #expect(checked.count >= 10)
            let file = fixture.harness.directory + "/responses.json"
            try JSONSerialization.data(withJSONObject: checked).write(to: URL(fileURLWithPath: file))
            let script = TestModels.repository.path + "/Tests/EndToEndTests/Python/openai_schema_check.py"
            let schemas = TestModels.repository.path + "/Tests/EndToEndTests/Fixtures/openai-response-schemas.json"
            let arguments = [try #require(OpenAIPython.python), script, schemas, file]
            let (status, output) = try await onOwnThread { try ChildProcess.run("/usr/bin/env", arguments) }
            #expect(status == 0, "\(output)")
        }
    }
}
