import Foundation
import Postgres
import Testing
import TestSupport

@Suite struct TypeRoundTripTests {
    struct Document: Codable, Equatable {
        var name: String
        var tags: [String]
        var price: Int
    }

    @Test func everySupportedTypeRoundTripsIncludingNullsAndUnicode() async throws {
        let database = try await TestDatabase.createEmpty()
        try await withCleanup({ await database.drop() }) {
            let pool = database.pool
            try await pool.execute("""
                CREATE TABLE everything (
                    id serial PRIMARY KEY, i int8, i4 int4, b bool, d float8, s text, u uuid, t timestamptz,
                    bytes bytea, texts text[], uuids uuid[], doc jsonb)
                """)
            let uuid = UUID()
            let otherUUID = UUID()
            let date = Date(timeIntervalSince1970: 1_764_374_400.123456)
            let unicode = "héllo wörld — 日本語 🧪👩‍👩‍👧 e\u{301} \"quoted\" back\\slash {braces},comma"
            let bytes = PostgresBytes([0, 1, 2, 0xff, 0x7f, 0x80, 0])
            let document = Document(name: "ünï", tags: ["a", "b c"], price: 9_000_000_000_001)
            try await pool.execute(
                "INSERT INTO everything (i, i4, b, d, s, u, t, bytes, texts, uuids, doc) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
                [Int.max, Int32.min, true, 3.141592653589793, unicode, uuid, date, bytes,
                 [unicode, "", "NULL", "x"], [uuid, otherUUID], try PostgresJSON(document)])
            try await pool.execute(
                "INSERT INTO everything (i, i4, b, d, s, u, t, bytes, texts, uuids, doc) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
                [Int?.none, Int32?.none, Bool?.none, Double?.none, String?.none, UUID?.none, Date?.none,
                 PostgresBytes?.none, [String]?.none, [UUID]?.none, PostgresJSON?.none])

            let rows = try await pool.query("SELECT * FROM everything ORDER BY id")
            #expect(rows.count == 2)
            let full = rows[0]
            #expect(try full.decode("i", as: Int.self) == Int.max)
            #expect(try full.decode("i4", as: Int32.self) == Int32.min)
            #expect(try full.decode("b", as: Bool.self) == true)
            #expect(try full.decode("d", as: Double.self) == 3.141592653589793)
            #expect(try full.decode("s", as: String.self) == unicode)
            #expect(try full.decode("u", as: UUID.self) == uuid)
            let decodedDate = try full.decode("t", as: Date.self)
            #expect(abs(decodedDate.timeIntervalSince1970 - date.timeIntervalSince1970) < 0.000_001)
            #expect(try full.decode("bytes", as: PostgresBytes.self) == bytes)
            #expect(try full.decode("texts", as: [String].self) == [unicode, "", "NULL", "x"])
            #expect(try full.decode("uuids", as: [UUID].self) == [uuid, otherUUID])
            #expect(try full.decodeJSON("doc", as: Document.self) == document)

            let empty = rows[1]
            #expect(try empty.decode("i", as: Int?.self) == nil)
            #expect(try empty.decode("i4", as: Int32?.self) == nil)
            #expect(try empty.decode("b", as: Bool?.self) == nil)
            #expect(try empty.decode("d", as: Double?.self) == nil)
            #expect(try empty.decode("s", as: String?.self) == nil)
            #expect(try empty.decode("u", as: UUID?.self) == nil)
            #expect(try empty.decode("t", as: Date?.self) == nil)
            #expect(try empty.decode("bytes", as: PostgresBytes?.self) == nil)
            #expect(try empty.decode("texts", as: [String]?.self) == nil)
            #expect(try empty.decode("uuids", as: [UUID]?.self) == nil)
            #expect(empty.isNull("doc"))
            // A NULL decoded as a non-optional is a typed error, not a crash or a default.
            #expect(throws: PostgresError.self) { try empty.decode("i", as: Int.self) }
            #expect(throws: PostgresError.self) { try full.decode("s", as: Int.self) }
            #expect(throws: PostgresError.self) { try full.decode("no_such_column", as: Int.self) }
        }
    }

    @Test func timestampsComeBackInUTCWhateverTheSessionZone() async throws {
        let database = try await TestDatabase.createEmpty(poolSize: 1)
        try await withCleanup({ await database.drop() }) {
            let rows = try await database.pool.query(
                "SELECT '2026-03-01 12:34:56.5+05:30'::timestamptz AS t, now() AS n, 'infinity'::timestamptz AS inf")
            let date = try rows[0].decode("t", as: Date.self)
            #expect(date == Date(timeIntervalSince1970: 1_772_348_696.5))
            #expect(abs(try rows[0].decode("n", as: Date.self).timeIntervalSinceNow) < 60)
            #expect(try rows[0].decode("inf", as: Date.self) == .distantFuture)
        }
    }

    /// Times far from now go through both ways: years of five and six digits and BC years, as
    /// the server writes them (one such key expiry made every listing of its tenant's keys
    /// fail), and times past PostgreSQL's range or not finite go as infinity (they trapped).
    @Test func timesFarFromNowRoundTripAndTimesPastTheRangeAreInfinite() async throws {
        let database = try await TestDatabase.createEmpty(poolSize: 1)
        try await withCleanup({ await database.drop() }) {
            let written = try await database.pool.query(
                """
                SELECT '99999-01-01 00:00:00+00'::timestamptz AS five, '294276-12-31 23:59:59+00'::timestamptz AS six,
                       '0044-03-15 12:00:00+00 BC'::timestamptz AS bc, '0001-01-01 00:00:00+00'::timestamptz AS first
                """)
            // Seconds from 1970 in the proleptic Gregorian calendar (what timegm counts).
            #expect(try written[0].decode("five", as: Date.self) == Date(timeIntervalSince1970: 3_093_496_444_800))
            #expect(try written[0].decode("six", as: Date.self) == Date(timeIntervalSince1970: 9_224_318_015_999))
            #expect(try written[0].decode("bc", as: Date.self) == Date(timeIntervalSince1970: -63_517_780_800))
            #expect(try written[0].decode("first", as: Date.self) == Date(timeIntervalSince1970: -62_135_596_800))
            for seconds in [3_093_496_444_800.0, -63_517_780_800, -62_135_596_800, 9_224_318_015_999, 1_764_374_400.25] {
                let back = try await database.pool.query("SELECT $1::timestamptz AS t", [Date(timeIntervalSince1970: seconds)])
                #expect(try back[0].decode("t", as: Date.self) == Date(timeIntervalSince1970: seconds), "\(seconds)")
            }
            for (seconds, infinite) in [(1e300, "infinity"), (-1e300, "-infinity"), (.infinity, "infinity"), (.nan, "-infinity")] as [(Double, String)] {
                let rows = try await database.pool.query("SELECT $1::timestamptz::text AS t", [Date(timeIntervalSince1970: seconds)])
                #expect(try rows[0].decode("t", as: String.self) == infinite, "\(seconds)")
            }
        }
    }

    @Test func textWithNulIsRefusedNotTruncated() async throws {
        let database = try await TestDatabase.createEmpty(poolSize: 1)
        try await withCleanup({ await database.drop() }) { () async throws in
            await #expect(throws: PostgresError.self) {
                try await database.pool.query("SELECT $1::text", ["a\u{0}b"])
            }
        }
    }
}
