import Foundation
import Postgres
import Tenancy
import TestSupport
import Testing

/// Model aliases and OpenAI's engine routes: the seed's sample code, written for the openai 0.x
/// client against `text-davinci-002`, runs unchanged against a model that answers to that name.
@Suite struct LegacyEndToEndTests {
    @Test(.enabled(if: OpenAILegacyPython.python != nil, "openai 0.28 could not be installed; skipping"))
    func theSeedsSampleCodeRunsUnchangedThroughAnAlias() async throws {
        try await GatewayFixture.with(aliases: ["text-davinci-002"]) { fixture in
            let script = TestModels.repository.path + "/Tests/EndToEndTests/Python/openai_legacy_check.py"
            let arguments = [try #require(OpenAILegacyPython.python), script, fixture.server.baseURL, fixture.keyA]
            let (status, output) = try await onOwnThread { try ChildProcess.run("/usr/bin/env", arguments) }
            #expect(status == 0, "\(output)\n--- server ---\n\(fixture.server.log.suffix(2000))")
            #expect(output.contains("MODEL text-davinci-002"), "responses echo the name the client sent: \(output)")
            #expect(output.contains("'text-davinci-002'") && output.contains("'shakespeare'"), "\(output)")
            #expect(output.contains("OK"))
            // The official v1 client through the alias too.
            if let python = OpenAIPython.python {
                let check = """
                    import sys
                    from openai import OpenAI
                    client = OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2], max_retries=0)
                    completion = client.completions.create(model="text-davinci-002", prompt="What is the capital of France?", max_tokens=8)
                    chat = client.chat.completions.create(model="text-davinci-002", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
                    assert completion.model == "text-davinci-002" and chat.model == "text-davinci-002", (completion.model, chat.model)
                    assert any(m.id == "text-davinci-002" for m in client.models.list())
                    print("V1 OK")
                    """
                let v1 = [python, "-c", check, fixture.server.baseURL, fixture.keyA]
                let (v1Status, v1Output) = try await onOwnThread { try ChildProcess.run("/usr/bin/env", v1) }
                #expect(v1Status == 0 && v1Output.contains("V1 OK"), "\(v1Output)")
            }
            // Billed under the model's own name.
            let events = try await fixture.events(fixture.tenantA)
            #expect(events.count == (OpenAIPython.python == nil ? 1 : 3))
            #expect(try events.allSatisfy { try $0.decode("model", as: String.self) == "shakespeare" })
            #expect(try events.first?.decode("route", as: String.self) == "/v1/engines/{engine}/completions")
        }
    }

    @Test func aliasesResolveEverywhereAModelNameIsAccepted() async throws {
        try await GatewayFixture.with(aliases: ["text-davinci-002"]) { fixture in
            let base = fixture.server.baseURL
            // The v1 routes take the alias too, and answer with it.
            let completion = try await HTTP.send(
                .POST, base + "/v1/completions", key: fixture.keyA, json: ["model": "text-davinci-002", "prompt": "ROMEO:", "max_tokens": 3])
            #expect(completion.status == 200, "\(completion.body)")
            #expect(completion.json["model"] as? String == "text-davinci-002")
            let chat = try await HTTP.send(
                .POST, base + "/v1/engines/text-davinci-002/chat/completions", key: fixture.keyA,
                json: ["messages": [["role": "user", "content": "Hi"]], "max_tokens": 2])
            #expect(chat.status == 200, "\(chat.body)")
            let mismatch = try await HTTP.send(
                .POST, base + "/v1/engines/text-davinci-002/completions", key: fixture.keyA, json: ["model": "private-lm", "prompt": "A"])
            #expect(mismatch.status == 400)
            // Listed with the model it names; engines too.
            let models = try await HTTP.send(.GET, base + "/v1/models", key: fixture.keyA)
            let listed = models.json["data"] as? [[String: Any]] ?? []
            #expect(listed.contains { $0["id"] as? String == "text-davinci-002" && $0["root"] as? String == "shakespeare" }, "\(models.body)")
            let one = try await HTTP.send(.GET, base + "/v1/models/text-davinci-002", key: fixture.keyA)
            #expect(one.json["root"] as? String == "shakespeare")
            let engines = try await HTTP.send(.GET, base + "/v1/engines", key: fixture.keyA)
            #expect((engines.json["data"] as? [[String: Any]])?.contains { $0["id"] as? String == "text-davinci-002" && $0["object"] as? String == "engine" } == true)
            #expect(try await HTTP.send(.GET, base + "/v1/engines/shakespeare", key: fixture.keyA).status == 200)
            #expect(try await HTTP.send(.GET, base + "/v1/engines/nope", key: fixture.keyA).status == 404)
            // An allow-list and a price given by alias hold the model's own name.
            let admin = try await fixture.key(tenant: fixture.tenantA, scopes: [.keysManage, .inference])
            let restricted = try await HTTP.send(.POST, base + "/v1/keys", key: admin, json: ["name": "r", "models": ["text-davinci-002"]])
            #expect(restricted.json["allowed_models"] as? [String] == ["shakespeare"], "\(restricted.body)")
            let restrictedKey = try #require(restricted.json["key"] as? String)
            for name in ["shakespeare", "text-davinci-002"] {
                let allowed = try await HTTP.send(.POST, base + "/v1/completions", key: restrictedKey, json: ["model": name, "prompt": "A", "max_tokens": 1])
                #expect(allowed.status == 200, "\(name): \(allowed.body)")
            }
            let (priceStatus, priceOutput) = try await fixture.harness.cli(
                ["price", "set", "--model", "text-davinci-002", "--metric", "prompt_tokens", "--price", "3"])
            #expect(priceStatus == 0, "\(priceOutput)")
            let prices = try await fixture.harness.system.pool.query("SELECT model FROM prices")
            #expect(try prices.map { try $0.decode("model", as: String.self) } == ["shakespeare"])
            let events = try await fixture.events(fixture.tenantA)
            #expect(try events.allSatisfy { try $0.decode("model", as: String.self) == "shakespeare" })
        }
    }

    /// Two models claiming one alias: the second one's load fails naming it.
    @Test func twoModelsCannotClaimOneAlias() async throws {
        let models = try TestModels.directory(privateTo: "nobody", aliases: ["davinci"])
        defer { try? FileManager.default.removeItem(atPath: models) }
        let manifest = try String(contentsOfFile: models + "/shakespeare/model.json", encoding: .utf8)  // the same alias
        try FileManager.default.createDirectory(atPath: models + "/twin", withIntermediateDirectories: true)
        for file in ["config.json", "model.safetensors", "vocab.json", "merges.txt"] {
            try FileManager.default.createSymbolicLink(atPath: models + "/twin/" + file, withDestinationPath: models + "/shakespeare/" + file)
        }
        try manifest.write(toFile: models + "/twin/model.json", atomically: true, encoding: .utf8)
        try await GatewayFixture.with(extraEnvironment: ["MODELGATE_MODELS_DIRECTORY": models]) { fixture in
            let ready = try await HTTP.send(.GET, fixture.server.baseURL + "/readyz")
            let states = ready.json["models"] as? [String: String] ?? [:]
            let failed = [states["shakespeare"], states["twin"]].compactMap { $0 }.filter { $0.contains("alias 'davinci' is already taken") }
            #expect(failed.count == 1, "\(ready.body)")
        }
    }
}
