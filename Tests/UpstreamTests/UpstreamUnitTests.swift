import Foundation
import Inference
import NIOCore
import Testing

@testable import Upstream

/// `options` of a manifest, written as JSON.
private func options(_ json: String) throws -> [String: JSONValue] {
    try JSONDecoder().decode([String: JSONValue].self, from: Data(json.utf8))
}

private func settings(_ json: String, task: ModelTask = .textGeneration) throws -> UpstreamSettings {
    try UpstreamSettings(options: try options(json), task: task, file: "m/model.json")
}

@Suite struct UpstreamSettingsTests {
    @Test func baseURLsAreNormalisedAndOnlyHostAndPortAreShown() throws {
        let parsed = try settings(
            #"{"endpoints": ["http://10.0.0.5:8080", {"url": "https://fleet.example/v1/", "weight": 3}, "http://h/api/v1"]}"#)
        #expect(parsed.endpoints.map(\.base) == ["http://10.0.0.5:8080/v1", "https://fleet.example/v1", "http://h/api/v1"])
        #expect(parsed.endpoints.map(\.label) == ["10.0.0.5:8080", "fleet.example:443", "h:80"])
        #expect(parsed.endpoints.map(\.weight) == [1, 3, 1])
        #expect(parsed.routes == [.completions, .chat])
        #expect(try settings(#"{"endpoints": ["http://h"]}"#, task: .embeddings).routes == [.embeddings])
        #expect(parsed.requestTimeout == .seconds(600) && parsed.healthPath == "/models")
    }

    @Test(arguments: [
        (#"{}"#, "options.endpoints must list"),
        (#"{"endpoints": []}"#, "options.endpoints must list"),
        (#"{"endpoints": ["ftp://h"]}"#, "options.endpoints[0] must be an http(s) base URL"),
        (#"{"endpoints": ["http://user:secret@h"]}"#, "without credentials"),
        (#"{"endpoints": ["http://h?key=1"]}"#, "options.endpoints[0]"),
        (#"{"endpoints": ["http://h", {"url": "http://g", "weight": 0}]}"#, "options.endpoints[1].weight"),
        (#"{"endpoints": [{"url": "http://g", "wieght": 2}]}"#, "unknown key 'options.endpoints[0].wieght'"),
        (#"{"endpoints": ["http://h"], "routes": ["embeddings"]}"#, "'embeddings' is not a route of a text-generation model"),
        (#"{"endpoints": ["http://h"], "request_timeout": 0}"#, "options.request_timeout must be a number of seconds"),
        (#"{"endpoints": ["http://h"], "max_concurrent": 2.5}"#, "options.max_concurrent must be a whole number"),
        (#"{"endpoints": ["http://h"], "health_path": "models"}"#, "options.health_path must start with '/'"),
        (#"{"endpoints": ["http://h"], "tokenizer": "../elsewhere"}"#, "options.tokenizer must name a folder"),
        (#"{"endpoints": ["http://h"], "upstream_model": ""}"#, "options.upstream_model"),
    ])
    func aBadManifestIsRefusedNamingItsKey(json: String, message: String) throws {
        let error = try #require(throws: ModelLoadError.self) { try settings(json) }
        #expect(error.reason.contains(message), "\(error.reason)")
        #expect(!error.description.contains("\n") && !error.description.contains("secret"))
    }
}

@Suite struct ServerSentEventsTests {
    static let stream = ": keep-alive\r\nevent: completion\r\ndata: {\"a\":1}\r\n\r\ndata: line one\ndata:line two\nid: 7\n\ndata: [DONE]\r\rdata: tail"

    @Test func eventsAreTheSameHoweverTheBytesAreSplit() throws {
        let bytes = Array(Self.stream.utf8)
        let expected = [#"{"a":1}"#, "line one\nline two", "[DONE]", "tail"]
        for split in 0...bytes.count {
            var parser = ServerSentEvents(maxEventBytes: 1024)
            var events = try parser.feed(ByteBuffer(bytes: bytes[..<split]))
            events += try parser.feed(ByteBuffer(bytes: bytes[split...]))
            events += try parser.finish()
            #expect(events.map { String(decoding: $0, as: UTF8.self) } == expected, "split at \(split)")
        }
    }

    @Test func anEventOverTheLimitIsAnError() throws {
        var parser = ServerSentEvents(maxEventBytes: 16)
        #expect(try parser.feed(ByteBuffer(string: "data: 0123456789\n\n")).count == 1)
        #expect(throws: ServerSentEvents.TooLarge.self) { try parser.feed(ByteBuffer(string: "data: 0123456789\ndata: 0123456789\n")) }
    }
}

@Suite struct EndpointPoolTests {
    func pool(_ endpoints: String, extra: String = "") throws -> EndpointPool {
        EndpointPool(settings: try settings(#"{"endpoints": \#(endpoints), "max_concurrent": 4, "eject_after_failures": 2, "eject_seconds": 10\#(extra)}"#))
    }

    @Test func requestsGoToTheLeastLoadedEndpointForItsWeight() throws {
        let pool = try pool(#"["http://a", {"url": "http://b", "weight": 3}]"#)
        var taken = [0, 0]
        for _ in 0..<4 { taken[try #require(pool.pick(excluding: [])).index] += 1 }
        #expect(taken == [1, 3])
        // Full endpoints (max_concurrent 4) are passed over while another has room.
        taken[try #require(pool.pick(excluding: [])).index] += 1
        taken[try #require(pool.pick(excluding: [])).index] += 1
        #expect(taken == [2, 4])
        #expect(pool.pick(excluding: [1])?.index == 0)
        #expect(pool.pick(excluding: [0, 1]) == nil)
    }

    @Test func anEndpointThatKeepsFailingIsEjectedThenProbedWithBackOff() throws {
        let pool = try pool(#"["http://a", "http://b"]"#)
        let a = pool.endpoints[0]
        let start = ContinuousClock.now
        pool.finish(try #require(pool.pick(excluding: [1], now: start)), failed: true, seconds: 0.1, now: start)
        #expect(pool.status[0].healthy, "one failure is not enough")
        pool.finish(try #require(pool.pick(excluding: [1], now: start)), failed: true, seconds: 0.1, now: start)
        #expect(!pool.status[0].healthy)
        #expect(pool.pick(excluding: [1], now: start + .seconds(9)) == nil, "ejected for 10 s")
        // After 10 s one request probes it; a second does not while the probe runs.
        let probe = try #require(pool.pick(excluding: [1], now: start + .seconds(11)))
        #expect(probe.index == a.index)
        #expect(pool.pick(excluding: [1], now: start + .seconds(11)) == nil)
        // A failed probe ejects it for twice as long.
        pool.finish(probe, failed: true, seconds: 0.1, now: start + .seconds(11))
        #expect(pool.pick(excluding: [1], now: start + .seconds(30)) == nil)
        let second = try #require(pool.pick(excluding: [1], now: start + .seconds(32)))
        pool.finish(second, failed: false, seconds: 0.1, now: start + .seconds(32))
        #expect(pool.status[0].healthy && pool.status[0].outstanding == 0)
        #expect(pool.status[0].requests == 4 && pool.status[0].failures == 3)
        // A health check alone brings an ejected endpoint back.
        pool.probed(1, healthy: false, now: start)
        pool.probed(1, healthy: false, now: start)
        #expect(!pool.status[1].healthy)
        pool.probed(1, healthy: true, now: start)
        #expect(pool.status[1].healthy)
    }
}
