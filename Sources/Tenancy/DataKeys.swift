import Audit
import Encryption
import Foundation
import Logging
import Postgres

/// Tenant data keys stored in `tenant_data_keys`.
public struct PostgresDataKeyStore: DataKeyStore {
    let pool: PostgresPool

    public init(pool: PostgresPool) { self.pool = pool }

    /// A tenant's data keys, or (for `OperatorDataKey.id`) the operator's.
    public func wrappedDataKeys(tenant: UUID) async throws -> [WrappedDataKey] {
        let rows =
            tenant == OperatorDataKey.id
            ? try await pool.query("SELECT version, master_key_version, wrapped_key FROM operator_data_keys")
            : try await pool.query("SELECT version, master_key_version, wrapped_key FROM tenant_data_keys WHERE tenant_id = $1", [tenant])
        return try rows.map { row in
            WrappedDataKey(
                tenantID: tenant, version: try row.decode("version"), masterVersion: try row.decode("master_key_version"),
                wrapped: try row.decode("wrapped_key", as: PostgresBytes.self).bytes)
        }
    }

    static func insert(_ key: WrappedDataKey, _ connection: PostgresConnection) throws {
        try connection.execute(
            "INSERT INTO tenant_data_keys (tenant_id, version, master_key_version, wrapped_key) VALUES ($1, $2, $3, $4)",
            [key.tenantID, key.version, key.masterVersion, PostgresBytes(key.wrapped)])
    }
}

/// Master-key rotation and retirement, tenant data-key rotation: `modelgate keyring ...` and
/// `modelgate tenant rotate-key`.
public struct KeyringAdministration: Sendable {
    let pool: PostgresPool
    let keyRing: KeyRing
    /// The key file; nil when the keys come from the environment (they cannot be rewritten).
    let keyFile: String?
    let notifier: AuthNotifier

    public init(pool: PostgresPool, keyRing: KeyRing, keyFile: String?) {
        self.pool = pool
        self.keyRing = keyRing
        self.keyFile = keyFile
        self.notifier = AuthNotifier()
    }

    public struct VersionStatus: Sendable, Equatable, Encodable {
        public var version: Int
        public var primary: Bool
        public var retired: Bool
        public var dataKeys: Int

        enum CodingKeys: String, CodingKey {
            case version, primary, retired
            case dataKeys = "data_keys"
        }
    }

    /// Every master-key version (from the key file and from the database) and how many data keys it wraps.
    public func status() async throws -> (versions: [VersionStatus], rotationInProgress: Int?) {
        let rows = try await pool.query(
            """
            SELECT v, count(*) AS n FROM (
                SELECT master_key_version AS v FROM tenant_data_keys UNION ALL SELECT master_key_version FROM operator_data_keys
            ) keys GROUP BY v
            """)
        var counts: [Int: Int] = [:]
        for row in rows { counts[try row.decode("v")] = try row.decode("n") }
        let keys = keyRing.current
        var versions = keys.versions.map {
            VersionStatus(version: $0.version, primary: $0.version == keys.primaryVersion, retired: $0.retired, dataKeys: counts[$0.version] ?? 0)
        }
        for (version, count) in counts where !keys.knows(version) {
            versions.append(VersionStatus(version: version, primary: false, retired: true, dataKeys: count))
        }
        return (versions.sorted { $0.version < $1.version }, try await rotationTarget())
    }

    public struct RotationReport: Sendable, Equatable {
        public var newVersion: Int
        public var rewrapped: Int
        public var resumed: Bool
    }

    /// Adds a new primary master key to the key file and rewraps every data key under it, in
    /// batches (each its own transaction, so the database stays available). If a previous
    /// rotation was interrupted, this resumes it instead of adding another version.
    public func rotate(
        actor: AuditActor, batchSize: Int = 100, pauseBetweenBatches: Duration = .zero
    ) async throws -> RotationReport {
        guard let keyFile else {
            throw TenancyError.conflict(
                "master keys come from MODELGATE_KEYRING; rotate by adding a version there, then run 'keyring rotate' with a key file")
        }
        var resumed = false
        let target: Int
        if let inProgress = try await rotationTarget(), keyRing.current.primaryVersion == inProgress {
            target = inProgress
            resumed = true
        } else {
            var keys = try MasterKeys.load(file: keyFile)
            target = try keys.addPrimary()
            try keys.save(file: keyFile)
            keyRing.update(keys)
            try await pool.transaction { connection in
                try connection.execute(
                    """
                    INSERT INTO settings (key, value) VALUES ('keyring.rotation', $1)
                    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
                    """, [PostgresJSON(text: "{\"target\": \(target)}")])
                try AuditLog.append(
                    connection, actor: actor, tenant: nil, action: "keyring.rotate", target: "master_key:\(target)",
                    details: ["new_primary_version": String(target)])
            }
        }
        var rewrapped = 0
        let keyRing = self.keyRing
        while true {
            let count = try await pool.transaction { connection -> Int in
                let rows = try connection.query(
                    """
                    SELECT tenant_id, version, master_key_version, wrapped_key FROM tenant_data_keys
                    WHERE master_key_version <> $1 ORDER BY tenant_id, version LIMIT $2 FOR UPDATE SKIP LOCKED
                    """, [target, batchSize])
                for row in rows {
                    let entry = WrappedDataKey(
                        tenantID: try row.decode("tenant_id"), version: try row.decode("version"),
                        masterVersion: try row.decode("master_key_version"),
                        wrapped: try row.decode("wrapped_key", as: PostgresBytes.self).bytes)
                    let fresh = try keyRing.rewrap(entry)
                    try connection.execute(
                        """
                        UPDATE tenant_data_keys SET master_key_version = $3, wrapped_key = $4, rewrapped_at = now()
                        WHERE tenant_id = $1 AND version = $2
                        """, [entry.tenantID, entry.version, fresh.masterVersion, PostgresBytes(fresh.wrapped)])
                }
                return rows.count
            }
            rewrapped += count
            if count < batchSize { break }
            if pauseBetweenBatches > .zero { try await Task.sleep(for: pauseBetweenBatches) }
        }
        // The operator's data keys (a handful of versions): one transaction.
        rewrapped += try await pool.transaction { connection -> Int in
            let rows = try connection.query(
                "SELECT version, master_key_version, wrapped_key FROM operator_data_keys WHERE master_key_version <> $1 FOR UPDATE", [target])
            for row in rows {
                let fresh = try keyRing.rewrap(WrappedDataKey(
                    tenantID: OperatorDataKey.id, version: try row.decode("version"), masterVersion: try row.decode("master_key_version"),
                    wrapped: try row.decode("wrapped_key", as: PostgresBytes.self).bytes))
                try connection.execute(
                    "UPDATE operator_data_keys SET master_key_version = $2, wrapped_key = $3, rewrapped_at = now() WHERE version = $1",
                    [fresh.version, fresh.masterVersion, PostgresBytes(fresh.wrapped)])
            }
            return rows.count
        }
        keyRing.dropCache(tenant: OperatorDataKey.id)
        let total = rewrapped
        let wasResumed = resumed
        try await pool.transaction { connection in
            try connection.execute("DELETE FROM settings WHERE key = 'keyring.rotation'")
            try AuditLog.append(
                connection, actor: actor, tenant: nil, action: "keyring.rotate.complete", target: "master_key:\(target)",
                details: ["rewrapped_data_keys": String(total), "resumed": String(wasResumed)])
        }
        return RotationReport(newVersion: target, rewrapped: total, resumed: resumed)
    }

    /// Destroys a master-key version's material in the key file. Refused for the primary and
    /// while any data key is still wrapped by it.
    public func retire(version: Int, actor: AuditActor) async throws {
        guard let keyFile else { throw TenancyError.conflict("master keys come from MODELGATE_KEYRING; remove the version there") }
        var keys = try MasterKeys.load(file: keyFile)
        guard keys.knows(version) else { throw TenancyError.notFound("master key version \(version) is not in \(keyFile)") }
        guard !keys.isRetired(version) else { throw TenancyError.conflict("master key version \(version) is already retired") }
        guard version != keys.primaryVersion else {
            throw TenancyError.conflict("master key version \(version) is the primary; run 'keyring rotate' first")
        }
        let rows = try await pool.query(
            """
            SELECT (SELECT count(*) FROM tenant_data_keys WHERE master_key_version = $1)
                 + (SELECT count(*) FROM operator_data_keys WHERE master_key_version = $1) AS n
            """, [version])
        let wrapped: Int = try rows[0].decode("n")
        guard wrapped == 0 else {
            throw TenancyError.conflict(
                "\(wrapped) data key(s) are still wrapped by master key version \(version); run 'keyring rotate' to finish rewrapping first")
        }
        try keys.retire(version)
        try keys.save(file: keyFile)
        keyRing.update(keys)
        try await pool.transaction { connection in
            try AuditLog.append(
                connection, actor: actor, tenant: nil, action: "keyring.retire", target: "master_key:\(version)")
        }
    }

    public struct TenantKeyRotationReport: Sendable, Equatable {
        public var newVersion: Int
        public var resealed: Int
        public var destroyedVersions: [Int]
    }

    /// Creates a new data-key version for the tenant, re-seals its sealed rows in batches, then
    /// destroys the old versions (until then they still open old rows).
    public func rotateTenantKey(_ tenant: UUID, actor: AuditActor, batchSize: Int = 100) async throws -> TenantKeyRotationReport {
        keyRing.dropCache(tenant: tenant)
        let existing = try await keyRing.cipher(for: tenant)
        let newVersion = (existing.versions.max() ?? 0) + 1
        let (cipher, wrapped) = try keyRing.newDataKey(tenant: tenant, version: newVersion, alongside: existing)
        try await pool.transaction { connection in
            try PostgresDataKeyStore.insert(wrapped, connection)
            try AuditLog.append(
                connection, actor: actor, tenant: tenant, action: "tenant.rotate_key", target: "tenant:\(tenant.uuidString.lowercased())",
                details: ["new_data_key_version": String(newVersion), "master_key_version": String(wrapped.masterVersion)])
        }
        var resealed = 0
        for column in SealedColumns.all {
            while true {
                let count = try await pool.transaction { connection -> Int in
                    let rows = try connection.query(
                        """
                        SELECT \(column.idColumn)::text AS row_id, \(column.column) AS sealed FROM \(column.table)
                        WHERE \(column.tenantColumn) = $1 AND \(column.column) IS NOT NULL
                          AND substring(\(column.column) FROM 2 FOR 4) <> int4send($2::int4)
                        LIMIT $3 FOR UPDATE
                        """, [tenant, Int32(newVersion), batchSize])
                    for row in rows {
                        let rowID: String = try row.decode("row_id")
                        let context = SealContext(table: column.table, column: column.column, rowID: rowID)
                        let old = try SealedValue(stored: try row.decode("sealed", as: PostgresBytes.self).bytes)
                        let fresh = try cipher.seal(try cipher.open(old, context), context)
                        try connection.execute(
                            "UPDATE \(column.table) SET \(column.column) = $1 WHERE \(column.idColumn) = $2::uuid", [fresh, rowID])
                    }
                    return rows.count
                }
                resealed += count
                if count < batchSize { break }
            }
        }
        let destroyed = existing.versions
        let notifier = self.notifier
        try await pool.transaction { connection in
            try connection.execute("DELETE FROM tenant_data_keys WHERE tenant_id = $1 AND version < $2", [tenant, newVersion])
            try notifier.tenantChanged(tenant, connection)
        }
        keyRing.dropCache(tenant: tenant)
        return TenantKeyRotationReport(newVersion: newVersion, resealed: resealed, destroyedVersions: destroyed)
    }

    private func rotationTarget() async throws -> Int? {
        let rows = try await pool.query("SELECT (value->>'target')::int AS target FROM settings WHERE key = 'keyring.rotation'")
        return try rows.first?.decode("target", as: Int?.self)
    }
}
