import Foundation
import Postgres
import Testing
import TestSupport

@Suite struct MigratorTests {
    let migrations = [
        Migration(version: 1, name: "first", sql: "CREATE TABLE a (id int PRIMARY KEY); INSERT INTO a VALUES (1);"),
        Migration(version: 2, name: "second", sql: "CREATE TABLE b (id int PRIMARY KEY); INSERT INTO b SELECT id + 1 FROM a;"),
        Migration(version: 3, name: "third", sql: "ALTER TABLE b ADD COLUMN note text; SELECT pg_sleep(0.1);"),
    ]

    @Test func twoConcurrentMigratorsApplyEachMigrationExactlyOnce() async throws {
        let database = try await TestDatabase.createEmpty(poolSize: 2)
        try await withCleanup({ await database.drop() }) {
            let second = PostgresPool(configuration: database.configuration)
            let first = Migrator(pool: database.pool, migrations: migrations)
            let other = Migrator(pool: second, migrations: migrations)
            async let appliedByFirst = first.migrate()
            async let appliedByOther = other.migrate()
            let (a, b) = try await (appliedByFirst, appliedByOther)
            #expect(a.count + b.count == 3)
            #expect(Set(a.map(\.version)).isDisjoint(with: b.map(\.version)))
            let rows = try await database.pool.query("SELECT version FROM schema_migrations ORDER BY version")
            #expect(try rows.map { try $0.decode("version", as: Int.self) } == [1, 2, 3])
            #expect(try await database.pool.query("SELECT count(*) AS n FROM b")[0].decode("n", as: Int.self) == 1)
            #expect(try await first.problem() == nil)
            await second.shutdown()
        }
    }

    @Test func editedMigrationIsRefused() async throws {
        let database = try await TestDatabase.createEmpty(poolSize: 1)
        try await withCleanup({ await database.drop() }) {
            try await Migrator(pool: database.pool, migrations: Array(migrations.prefix(2))).migrate()
            var edited = migrations
            edited[0].sql += "\n-- sneaky edit"
            let migrator = Migrator(pool: database.pool, migrations: edited)
            do {
                try await migrator.migrate()
                Issue.record("edited migration accepted")
            } catch let error as PostgresError {
                #expect(error.kind == .migration)
                #expect(error.message.contains("0001_first.sql"))
            }
            // Nothing else was applied.
            #expect(try await database.pool.query("SELECT count(*) AS n FROM schema_migrations")[0].decode("n", as: Int.self) == 2)
            let states = try await migrator.status().map(\.state)
            #expect(states == [.edited, .applied, .pending])
            #expect(try await migrator.problem()?.contains("edited") == true)
        }
    }

    @Test func failingMigrationRollsBackAndStops() async throws {
        let database = try await TestDatabase.createEmpty(poolSize: 1)
        try await withCleanup({ await database.drop() }) {
            let broken = [migrations[0], Migration(version: 2, name: "broken", sql: "CREATE TABLE c (id int); SELECT * FROM missing;"), migrations[2]]
            await #expect(throws: PostgresError.self) { try await Migrator(pool: database.pool, migrations: broken).migrate() }
            let tables = try await database.pool.query("SELECT to_regclass('c') IS NULL AS gone")
            #expect(try tables[0].decode("gone", as: Bool.self))
            let status = try await Migrator(pool: database.pool, migrations: broken).status().map(\.state)
            #expect(status == [.applied, .pending, .pending])
        }
    }

    @Test func fileNamesParse() {
        #expect(Migration(fileName: "0012_add_usage.sql", sql: "")?.version == 12)
        #expect(Migration(fileName: "0012_add_usage.sql", sql: "")?.name == "add_usage")
        #expect(Migration(fileName: "readme.md", sql: "") == nil)
        #expect(Migration(fileName: "x_y.sql", sql: "") == nil)
        #expect(Migration(version: 3, name: "x", sql: "").fileName == "0003_x.sql")
    }
}
