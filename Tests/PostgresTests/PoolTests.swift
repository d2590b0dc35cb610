import Foundation
import Postgres
import Testing
import TestSupport

@Suite struct PoolTests {
    @Test func transactionRolledBackOnErrorLeavesNoRows() async throws {
        let database = try await TestDatabase.createEmpty()
        try await withCleanup({ await database.drop() }) {
            let pool = database.pool
            try await pool.execute("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)")
            struct Boom: Error {}
            await #expect(throws: Boom.self) {
                try await pool.transaction { connection in
                    try connection.execute("INSERT INTO items VALUES (1, 'a')")
                    try connection.execute("INSERT INTO items VALUES (2, 'b')")
                    throw Boom()
                }
            }
            await #expect(throws: PostgresError.self) {
                try await pool.transaction { connection in
                    try connection.execute("INSERT INTO items VALUES (3, 'c')")
                    try connection.execute("INSERT INTO items VALUES (3, 'duplicate')")
                }
            }
            let count = try await pool.query("SELECT count(*) AS n FROM items")[0].decode("n", as: Int.self)
            #expect(count == 0)
            // The connection is clean afterwards: a committed transaction works.
            try await pool.transaction { connection in try connection.execute("INSERT INTO items VALUES (4, 'd')") }
            #expect(try await pool.query("SELECT count(*) AS n FROM items")[0].decode("n", as: Int.self) == 1)
        }
    }

    @Test func errorsCarrySQLState() async throws {
        let database = try await TestDatabase.createEmpty(poolSize: 1)
        try await withCleanup({ await database.drop() }) {
            let pool = database.pool
            try await pool.execute("CREATE TABLE slugs (slug text PRIMARY KEY)")
            try await pool.execute("INSERT INTO slugs VALUES ($1)", ["acme"])
            do {
                try await pool.execute("INSERT INTO slugs VALUES ($1)", ["acme"])
                Issue.record("duplicate insert succeeded")
            } catch let error as PostgresError {
                #expect(error.isUniqueViolation)
                #expect(error.constraint == "slugs_pkey")
                #expect(!error.isConnectionError)
                #expect(!error.description.contains("acme") || error.detail?.contains("acme") == true)
            }
            do {
                try await pool.query("SELEC 1")
                Issue.record("syntax error accepted")
            } catch let error as PostgresError {
                #expect(error.sqlState == "42601")
            }
        }
    }

    @Test func statementTimeoutCancelsLongQueries() async throws {
        let database = try await TestDatabase.create(poolSize: 1, statementTimeoutMilliseconds: 200)
        try await withCleanup({ await database.drop() }) {
            try await database.pool.query("SELECT 1")  // connected before the clock starts
            let started = ContinuousClock.now
            do {
                try await database.pool.query("SELECT pg_sleep(60)")
                Issue.record("pg_sleep(60) was not cancelled")
            } catch let error as PostgresError {
                #expect(error.isQueryCanceled)
            }
            // Cancelled after 200 ms; the bound leaves room for a loaded CI machine.
            #expect(ContinuousClock.now - started < .seconds(20))
        }
    }

    @Test func twoHundredConcurrentQueriesOnAPoolOfEightComplete() async throws {
        let database = try await TestDatabase.createEmpty(poolSize: 8)
        try await withCleanup({ await database.drop() }) {
            let pool = database.pool
            let total = try await withThrowingTaskGroup(of: Int.self) { group in
                for value in 0..<200 {
                    group.addTask {
                        let rows = try await pool.query("SELECT $1::int8 + 1 AS v, pg_sleep(0.002)", [value])
                        return try rows[0].decode("v", as: Int.self)
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(total == (1...200).reduce(0, +))
            let statistics = pool.statistics
            #expect(statistics.inUse == 0)
            #expect(statistics.waiting == 0)
            #expect(statistics.queries >= 200)
        }
    }

    @Test func serializableRetryResolvesConflicts() async throws {
        let database = try await TestDatabase.createEmpty(poolSize: 8)
        try await withCleanup({ await database.drop() }) {
            let pool = database.pool
            try await pool.execute("CREATE TABLE counter (id int PRIMARY KEY, value int NOT NULL)")
            try await pool.execute("INSERT INTO counter VALUES (1, 0)")
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<20 {
                    group.addTask {
                        try await pool.serializableTransaction { connection in
                            let value = try connection.query("SELECT value FROM counter WHERE id = 1")[0].decode("value", as: Int.self)
                            try connection.execute("UPDATE counter SET value = $1 WHERE id = 1", [value + 1])
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(try await pool.query("SELECT value FROM counter")[0].decode("value", as: Int.self) == 20)
        }
    }

    @Test func listenDeliversNotificationsFromAnotherConnection() async throws {
        let database = try await TestDatabase.createEmpty(poolSize: 2)
        try await withCleanup({ await database.drop() }) {
            let pool = database.pool
            var iterator = pool.notifications(channels: ["modelgate_test"]).makeAsyncIterator()
            #expect(await iterator.next() == .listening)
            try await pool.transaction { connection in
                try connection.execute("SELECT pg_notify('modelgate_test', $1)", ["tenant:42 ünicode"])
            }
            try await pool.notify(channel: "other_channel", payload: "ignored")
            try await pool.notify(channel: "modelgate_test", payload: "second")
            #expect(await iterator.next() == .notification(.init(channel: "modelgate_test", payload: "tenant:42 ünicode")))
            #expect(await iterator.next() == .notification(.init(channel: "modelgate_test", payload: "second")))
        }
    }

    @Test(.timeLimit(.minutes(1))) func cancelledWaiterDoesNotRunItsQuery() async throws {
        let database = try await TestDatabase.createEmpty(poolSize: 1)
        try await withCleanup({ await database.drop() }) {
            let pool = database.pool
            try await pool.execute("CREATE TABLE marks (n int)")
            // The pool's only connection stays busy until the test lets it go: it waits for an
            // advisory lock held through another pool. (A timed blocker, pg_sleep, could finish
            // before a loaded machine let the test see the waiter queue, and the test then spun.)
            let holder = PostgresPool(configuration: database.configuration)
            try await holder.execute("SELECT pg_advisory_lock(7)")  // held by the session until the holder closes
            let blocker = Task { try await pool.query("SELECT pg_advisory_lock(7), pg_advisory_unlock(7)") }
            #expect(await eventually(every: .milliseconds(5)) { pool.statistics.inUse > 0 }, "the blocker never took a connection")
            let waiter = Task { try await pool.execute("INSERT INTO marks VALUES (1)") }
            #expect(await eventually(every: .milliseconds(5)) { pool.statistics.waiting > 0 }, "the waiter never queued")
            waiter.cancel()
            await #expect(throws: CancellationError.self) { try await waiter.value }
            await holder.shutdown()  // closing the holder's connection releases the lock
            _ = try await blocker.value
            #expect(try await pool.query("SELECT count(*) AS n FROM marks")[0].decode("n", as: Int.self) == 0)
        }
    }
}

/// Tests that stop and restart PostgreSQL run on a cluster of their own.
@Suite struct PoolHealingTests {
    @Test func poolServesQueriesAgainAfterServerRestartAndFailsFastWhileDown() async throws {
        let server = try await PrivateCluster()
        let pool = PostgresPool(configuration: server.configuration(poolSize: 4, connectTimeoutSeconds: 2))
        // Warm every connection.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<8 { group.addTask { try await pool.query("SELECT pg_sleep(0.05)") } }
            try await group.waitForAll()
        }

        // Restart (pg_ctl stop + start): every pooled connection is now dead.
        try await server.stop()
        try await server.start()
        for value in 0..<10 {
            let rows = try await pool.query("SELECT $1::int8 AS v", [value])
            #expect(try rows[0].decode("v", as: Int.self) == value)
        }

        // Down: queries fail with a connection error, well before the pool's 10 s acquire
        // timeout (a refused connect is immediate and the connect timeout is 2 s; the bound
        // leaves a loaded machine room, as a run beside two CPU hogs took 3.8 s).
        try await server.stop()
        let started = ContinuousClock.now
        do {
            try await pool.query("SELECT 1")
            Issue.record("query succeeded with the server stopped")
        } catch let error as PostgresError {
            #expect(error.isConnectionError)
        }
        #expect(ContinuousClock.now - started < .seconds(8))

        // Back up: the same pool heals.
        try await server.start()
        #expect(try await pool.query("SELECT 7 AS v")[0].decode("v", as: Int.self) == 7)
        await pool.shutdown()
        await #expect(throws: PostgresError.self) { try await pool.query("SELECT 1") }
        await server.destroy()
    }

    @Test func listenerReportsReconnectAfterServerRestart() async throws {
        let server = try await PrivateCluster()
        let pool = PostgresPool(configuration: server.configuration(poolSize: 2))
        var iterator = pool.notifications(channels: ["events"]).makeAsyncIterator()
        #expect(await iterator.next() == .listening)
        try await server.stop()
        try await server.start()
        #expect(await iterator.next() == .reconnected)
        try await pool.notify(channel: "events", payload: "after restart")
        #expect(await iterator.next() == .notification(.init(channel: "events", payload: "after restart")))
        await pool.shutdown()
        await server.destroy()
    }
}
