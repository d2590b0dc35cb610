import Encryption
import Foundation
import Logging
import Postgres

/// Finds the master keys: `MODELGATE_KEYRING` (the key file's JSON), else the key file. In
/// zero-config mode (no database URL) a missing key file is created; with a configured
/// database it must exist (`modelgate keyring init` creates one).
public enum KeyringBootstrap {
    public struct Loaded: Sendable {
        public var keys: MasterKeys
        /// Nil when the keys came from the environment.
        public var file: String?
    }

    /// `create`: make a key file in zero-config mode when there is none (`serve`, `db init`).
    public static func load(
        _ configuration: ModelGateConfiguration, logger: Logger,
        environment: [String: String] = ProcessInfo.processInfo.environment, create: Bool = false
    ) throws -> Loaded {
        if let inline = environment["MODELGATE_KEYRING"], !inline.isEmpty {
            return Loaded(keys: try MasterKeys.parse(Data(inline.utf8), source: "MODELGATE_KEYRING"), file: nil)
        }
        let file = configuration.keyring.file
        if FileManager.default.fileExists(atPath: file) {
            return Loaded(keys: try MasterKeys.load(file: file), file: file)
        }
        guard configuration.database.url.isEmpty, create else {
            throw KeyringError.missingKeyFile(
                file + (configuration.database.url.isEmpty
                    ? " (run this where 'modelgate serve' runs, or pass --config)" : " (create it with 'modelgate keyring init', then back it up)"))
        }
        return Loaded(keys: try Self.create(file: file, logger: logger), file: file)
    }

    /// Creates a new key file; refuses to overwrite one.
    public static func create(file: String, logger: Logger) throws -> MasterKeys {
        guard !FileManager.default.fileExists(atPath: file) else {
            throw KeyringError.invalidKeyFile("\(file) already exists; it is never overwritten")
        }
        let keys = try MasterKeys.generate()
        try keys.save(file: file)
        logger.notice(
            "created master key file (mode 0600); back it up: without it encrypted tenant data and API keys are unusable",
            metadata: ["file": "\(file)"])
        return keys
    }

    /// Refuses a key file that does not belong to this database (a different pepper would
    /// silently invalidate every API key). The first start records a fingerprint of the pepper.
    public static func checkFingerprint(_ keys: MasterKeys, pool: PostgresPool) async throws {
        let fingerprint = keys.keyHasher.fingerprint
        // Before recording a first fingerprint, make sure existing data keys open with these keys.
        let sample = try await pool.query(
            """
            SELECT tenant_id, version, master_key_version, wrapped_key FROM tenant_data_keys
            WHERE NOT EXISTS (SELECT 1 FROM settings WHERE key = 'keyring.pepper_fingerprint') LIMIT 1
            """)
        if let row = sample.first {
            let entry = WrappedDataKey(
                tenantID: try row.decode("tenant_id"), version: try row.decode("version"),
                masterVersion: try row.decode("master_key_version"), wrapped: try row.decode("wrapped_key", as: PostgresBytes.self).bytes)
            guard keys.opens(entry) else {
                throw KeyringError.invalidKeyFile("the master key file does not belong to this database (its keys do not open the stored data keys)")
            }
        }
        let stored = try await pool.transaction { connection -> String in
            try connection.execute(
                """
                INSERT INTO settings (key, value) VALUES ('keyring.pepper_fingerprint', to_jsonb($1::text))
                ON CONFLICT (key) DO NOTHING
                """, [fingerprint])
            let rows = try connection.query("SELECT value #>> '{}' AS fingerprint FROM settings WHERE key = 'keyring.pepper_fingerprint'")
            return try rows[0].decode("fingerprint")
        }
        guard stored == fingerprint else {
            throw KeyringError.invalidKeyFile(
                "the master key file does not belong to this database (its pepper differs from the one recorded at first start)")
        }
    }
}
