import AsyncHTTPClient
import Foundation
import Testing
import TestSupport

@Suite struct ServeLifecycleTests {
    func emptyDirectory() throws -> String {
        let directory = "/tmp/mg-e2e-" + UUID().uuidString.prefix(8).lowercased()
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory
    }

    func get(_ url: String) async throws -> (Int, String) {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 1 << 20)
        return (Int(response.status.code), String(buffer: body))
    }

    @Test func zeroConfigServeBecomesReadyAndExitsCleanlyOnSIGTERM() async throws {
        let directory = try emptyDirectory()
        let server = try ModelGateProcess(in: directory)
        var ready = false
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline, server.isRunning {
            if let (status, _) = try? await get(server.baseURL + "/readyz"), status == 200 {
                ready = true
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(ready, "never ready; log:\n\(server.log)")
        let (healthStatus, healthBody) = try await get(server.baseURL + "/healthz")
        #expect(healthStatus == 200)
        #expect(healthBody.contains("ok"))
        let (readyStatus, readyBody) = try await get(server.baseURL + "/readyz")
        #expect(readyStatus == 200)
        #expect(readyBody.contains("\"database\":\"ok\""))
        let (missingStatus, missingBody) = try await get(server.baseURL + "/no/such/route")
        #expect(missingStatus == 404)
        #expect(missingBody.contains("\"error\""))
        #expect(server.log.contains("local PostgreSQL"))
        #expect(FileManager.default.fileExists(atPath: directory + "/.modelgate/postgres/data/PG_VERSION")
            || server.log.contains("/var/tmp/modelgate-"))

        // First start in zero-config mode prints an operator key (on stdout, not in the log).
        let printed = server.log.split(whereSeparator: { $0.isWhitespace }).map(String.init).first { $0.hasPrefix("mgk_") }
        let operatorKey = try #require(printed, "no bootstrap key printed:\n\(server.log)")
        let tenants = try await HTTP.send(.GET, server.baseURL + "/admin/v1/tenants", key: operatorKey)
        #expect(tenants.status == 200)
        #expect(FileManager.default.fileExists(atPath: directory + "/.modelgate/keyring.json"))

        server.signal(SIGTERM)
        let status = await server.waitForExit(timeout: .seconds(30))
        #expect(status == 0, "exit status \(String(describing: status)); log:\n\(server.log)")

        // A second start reuses the cluster and the key file and prints no new key.
        let again = try ModelGateProcess(in: directory)
        var readyAgain = false
        while ContinuousClock.now < deadline + .seconds(60), again.isRunning {
            if let (code, _) = try? await get(again.baseURL + "/readyz"), code == 200 { readyAgain = true; break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(readyAgain, "second start never ready:\n\(again.log)")
        #expect(!again.log.contains("mgk_"))
        #expect(try await HTTP.send(.GET, again.baseURL + "/admin/v1/tenants", key: operatorKey).status == 200)
        await again.stopGracefully()

        // The local cluster outlives serve; `db stop` stops it.
        let (stopStatus, stopOut) = try await ModelGateProcess.run(["db", "stop"], in: directory)
        #expect(stopStatus == 0, "\(stopOut)")
        #expect(stopOut.contains("stopped"))
        let (statusCode, statusOut) = try await ModelGateProcess.run(["db", "status"], in: directory)
        #expect(statusCode == 0)
        #expect(statusOut.contains("stopped"))
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Only `serve` and `db init` create a database: any other command run in the wrong
    /// directory says where it looked, and creates nothing (no cluster, no key file, no
    /// PostgreSQL left running).
    @Test func commandsOtherThanServeAndInitNeverCreateADatabase() async throws {
        let directory = try emptyDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for command in [["tenant", "list"], ["key", "list", "--tenant", "x"], ["migrate"], ["audit", "verify"]] {
            let (status, output) = try await ModelGateProcess.run(command, in: directory)
            #expect(status != 0, "\(command): \(output)")
            let lines = output.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n")
            #expect(lines.count == 1, "\(command): \(output)")
            #expect(output.contains("no ModelGate database in") && output.contains(".modelgate/postgres"), "\(command): \(output)")
            #expect(!FileManager.default.fileExists(atPath: directory + "/.modelgate"), "\(command) created files")
        }
        let (initStatus, initOutput) = try await ModelGateProcess.run(["db", "init"], in: directory)
        #expect(initStatus == 0, "\(initOutput)")
        #expect(initOutput.contains("created local PostgreSQL"), "\(initOutput)")
        let (listStatus, listOutput) = try await ModelGateProcess.run(["tenant", "list"], in: directory)
        #expect(listStatus == 0, "\(listOutput)")
        #expect(!listOutput.contains("using running local PostgreSQL"), "that line is for debug logs: \(listOutput)")
        let (againStatus, again) = try await ModelGateProcess.run(["db", "init"], in: directory)
        #expect(againStatus == 0)
        #expect(again.contains("exists"), "\(again)")
        let (stopStatus, _) = try await ModelGateProcess.run(["db", "stop"], in: directory)
        #expect(stopStatus == 0)
    }

    @Test func invalidConfigurationExitsWithStatusTwoAndOneLine() async throws {
        let directory = try emptyDirectory()
        let (status, stderr) = try await ModelGateProcess.run(
            ["serve"], in: directory, environment: ["MODELGATE_SERVER_PORT": "not-a-port"])
        #expect(status == 2)
        #expect(stderr.contains("server.port"))
        #expect(stderr.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").count == 1)
        try? FileManager.default.removeItem(atPath: directory)
    }
}

@Suite struct MigrateCommandTests {
    @Test func migrateAgainstAConfiguredDatabaseNeverStartsALocalCluster() async throws {
        let database = try await TestDatabase.createEmpty(poolSize: 1)
        try await withCleanup({ await database.drop() }) {
            let directory = "/tmp/mg-e2e-" + UUID().uuidString.prefix(8).lowercased()
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let environment = ["MODELGATE_DATABASE_URL": database.connectionString]

            let (pendingStatus, pending) = try await ModelGateProcess.run(["migrate", "--status"], in: directory, environment: environment)
            #expect(pendingStatus == 0, "\(pending)")
            #expect(pending.contains("0001") && pending.contains("pending"))

            let (applyStatus, applied) = try await ModelGateProcess.run(["migrate"], in: directory, environment: environment)
            #expect(applyStatus == 0, "\(applied)")
            #expect(applied.contains("0001_init.sql"))
            let (againStatus, again) = try await ModelGateProcess.run(["migrate"], in: directory, environment: environment)
            #expect(againStatus == 0)
            #expect(again.contains("up to date"))

            let (status, statusOutput) = try await ModelGateProcess.run(["migrate", "--status"], in: directory, environment: environment)
            #expect(status == 0)
            #expect(statusOutput.contains("applied") && !statusOutput.contains("pending"))
            #expect(!FileManager.default.fileExists(atPath: directory + "/.modelgate"))

            // An unreachable configured database is one clear line and a non-zero exit, not a hang.
            let (downStatus, down) = try await ModelGateProcess.run(
                ["migrate"], in: directory, environment: ["MODELGATE_DATABASE_URL": "host=/nonexistent port=1 dbname=x"])
            #expect(downStatus == 1)
            #expect(down.contains("connection"))
        }
    }
}
