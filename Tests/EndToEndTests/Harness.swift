import AsyncHTTPClient
import Audit
import Foundation
import NIOCore
import NIOHTTP1
import Tenancy
import TestSupport

/// A response as the tests see it.
struct HTTPResult {
    var status: Int
    var headers: HTTPHeaders
    var body: String

    var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] ?? [:]
    }

    var errorCode: String? { (json["error"] as? [String: Any])?["code"] as? String }
}

enum HTTP {
    static func send(
        _ method: HTTPMethod, _ url: String, key: String? = nil, json: Any? = nil, headers: [(String, String)] = [],
        client: HTTPClient = .shared, timeout: Duration = .seconds(30)
    ) async throws -> HTTPResult {
        var request = HTTPClientRequest(url: url)
        request.method = method
        if let key { request.headers.add(name: "Authorization", value: "Bearer \(key)") }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let json {
            // A String or Data is sent as it is (already JSON, or deliberately not); anything else is serialised.
            let data = try (json as? Data) ?? (json as? String).map { Data($0.utf8) } ?? JSONSerialization.data(withJSONObject: json)
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: data))
        }
        let response = try await client.execute(request, timeout: .init(timeout))
        let body = try await response.body.collect(upTo: 16 << 20)
        return HTTPResult(status: Int(response.status.code), headers: response.headers, body: String(buffer: body))
    }
}

/// One test database, its master keys, and any number of `modelgate serve` processes on it.
final class ServerHarness: Sendable {
    let system: TestTenancy
    let directory: String
    let operatorKey: String

    static func start(database: TestDatabase? = nil) async throws -> ServerHarness {
        let system = try await TestTenancy.create(database: database)
        let directory = "/tmp/mg-e2e-" + UUID().uuidString.prefix(8).lowercased()
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let created = try await system.apiKeys.create(tenant: nil, NewAPIKey(name: "op", scopes: [.admin]), issuer: .operator(AuditActor("test")))
        return ServerHarness(system: system, directory: directory, operatorKey: created.secret)
    }

    private init(system: TestTenancy, directory: String, operatorKey: String) {
        self.system = system
        self.directory = directory
        self.operatorKey = operatorKey
    }

    var environment: [String: String] {
        ["MODELGATE_DATABASE_URL": system.database.connectionString, "MODELGATE_KEYRING": system.keyringJSON]
    }

    /// Starts a server and waits until `/readyz` answers 200.
    func server(extraEnvironment: [String: String] = [:]) async throws -> ModelGateProcess {
        let process = try ModelGateProcess(in: directory, environment: environment.merging(extraEnvironment) { $1 })
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if !process.isRunning { throw HarnessError("serve exited early:\n\(process.log)") }
            if let result = try? await HTTP.send(.GET, process.baseURL + "/readyz"), result.status == 200 { return process }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw HarnessError("serve never became ready:\n\(process.log)")
    }

    /// Runs a CLI command against this database.
    func cli(_ arguments: [String], extraEnvironment: [String: String] = [:]) async throws -> (status: Int32, output: String) {
        try await ModelGateProcess.run(arguments, in: directory, environment: environment.merging(extraEnvironment) { $1 })
    }

    func stop() async {
        await system.drop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Runs `body` with a fresh harness and stops it afterwards — awaited, also when `body`
    /// throws, so no later test sees its database or processes.
    static func with<Result>(database: TestDatabase? = nil, _ body: (ServerHarness) async throws -> Result) async throws -> Result {
        let harness = try await start(database: database)
        do {
            let result = try await body(harness)
            await harness.stop()
            return result
        } catch {
            await harness.stop()
            throw error
        }
    }
}


struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
