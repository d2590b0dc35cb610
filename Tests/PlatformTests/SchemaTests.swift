import Foundation
import Postgres
import SchemaMigrations
import Testing
import TestSupport

@Suite struct SchemaTests {
    @Test func embeddedMigrationsMatchTheFolder() throws {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let files = try FileManager.default.contentsOfDirectory(atPath: repository.path + "/sql/migrations")
            .filter { $0.hasSuffix(".sql") }.sorted()
        #expect(SchemaMigrations.fileNames.sorted() == files)
        #expect(SchemaMigrations.all.count == files.count)
        for migration in SchemaMigrations.all {
            let text = try String(contentsOfFile: repository.path + "/sql/migrations/" + migration.fileName, encoding: .utf8)
            #expect(text == migration.sql)
        }
        #expect(SchemaMigrations.all.map(\.version) == Array(1...SchemaMigrations.all.count))
    }

    @Test func templateDatabaseIsFullyMigrated() async throws {
        let database = try await TestDatabase.create(poolSize: 1)
        try await withCleanup({ await database.drop() }) { () async throws in
            let migrator = Migrator(pool: database.pool, migrations: SchemaMigrations.all)
            #expect(try await migrator.problem() == nil)
            #expect(try await migrator.migrate().isEmpty)
        }
    }
}
