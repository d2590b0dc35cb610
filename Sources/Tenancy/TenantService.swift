import Audit
import Encryption
import Foundation
import Postgres

public struct Tenant: Sendable, Equatable, Encodable {
    public var id: UUID
    public var slug: String
    public var displayName: String
    /// Decrypted on read; nil when absent, when listing, or after deletion (crypto-shredded).
    public var contactEmail: String?
    public var billingDetails: String?
    public var plan: String
    public var status: TenantStatus
    public var payloadLogging: Bool
    public var createdAt: Date
    public var updatedAt: Date
    public var deletedAt: Date?

    enum CodingKeys: String, CodingKey {
        case id, slug, plan, status
        case displayName = "display_name"
        case contactEmail = "contact_email"
        case billingDetails = "billing_details"
        case payloadLogging = "payload_logging"
        case createdAt = "created_at"
        case updatedAt = "updated_at"
        case deletedAt = "deleted_at"
    }

    /// Absent values are explicit `null`s, as API clients expect.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id.uuidString.lowercased(), forKey: .id)
        try container.encode(slug, forKey: .slug)
        try container.encode(displayName, forKey: .displayName)
        try container.encode(contactEmail, forKey: .contactEmail)
        try container.encode(billingDetails, forKey: .billingDetails)
        try container.encode(plan, forKey: .plan)
        try container.encode(status, forKey: .status)
        try container.encode(payloadLogging, forKey: .payloadLogging)
        try container.encode(createdAt, forKey: .createdAt)
        try container.encode(updatedAt, forKey: .updatedAt)
        try container.encode(deletedAt, forKey: .deletedAt)
    }
}

/// Changes to a tenant; nil fields stay as they are (an empty string clears an optional field).
public struct TenantChanges: Sendable {
    public var displayName: String?
    public var contactEmail: String?
    public var billingDetails: String?
    public var plan: String?
    public var payloadLogging: Bool?

    public init(displayName: String? = nil, contactEmail: String? = nil, billingDetails: String? = nil, plan: String? = nil, payloadLogging: Bool? = nil) {
        self.displayName = displayName
        self.contactEmail = contactEmail
        self.billingDetails = billingDetails
        self.plan = plan
        self.payloadLogging = payloadLogging
    }
}

/// Tenant lifecycle. Contact and billing details are sealed with the tenant's own data key;
/// deleting a tenant destroys that key (crypto-shredding) while usage and billing rows stay.
public struct TenantService: Sendable {
    let pool: PostgresPool
    let keyRing: KeyRing
    let defaultPlan: String
    let notifier = AuthNotifier()

    public init(pool: PostgresPool, keyRing: KeyRing, defaultPlan: String = "free") {
        self.pool = pool
        self.keyRing = keyRing
        self.defaultPlan = defaultPlan
    }

    // MARK: Create and read

    public func create(
        slug: String, displayName: String, contactEmail: String? = nil, billingDetails: String? = nil,
        plan: String? = nil, actor: AuditActor
    ) async throws -> Tenant {
        try Validate.slug(slug)
        try Validate.displayName(displayName)
        if let contactEmail { try Validate.email(contactEmail) }
        if let billingDetails { try Validate.billing(billingDetails) }
        let plan = plan ?? defaultPlan
        try Validate.plan(plan)
        let id = UUID()
        let (cipher, wrapped) = try keyRing.newDataKey(tenant: id, version: 1)
        let rowID = id.uuidString.lowercased()
        let sealedEmail = try contactEmail.map { try cipher.seal($0, SealContext(table: "tenants", column: "contact_email", rowID: rowID)) }
        let sealedBilling = try billingDetails.map { try cipher.seal($0, SealContext(table: "tenants", column: "billing_details", rowID: rowID)) }
        do {
            try await pool.transaction { connection in
                try connection.execute(
                    """
                    INSERT INTO tenants (id, slug, display_name, contact_email, billing_details, plan)
                    VALUES ($1, $2, $3, $4, $5, $6)
                    """, [id, slug, displayName, sealedEmail, sealedBilling, plan])
                try PostgresDataKeyStore.insert(wrapped, connection)
                try AuditLog.append(
                    connection, actor: actor, tenant: id, action: "tenant.create", target: "tenant:\(rowID)",
                    details: ["slug": slug, "plan": plan, "data_key_version": "1", "master_key_version": String(wrapped.masterVersion)])
            }
        } catch let error as PostgresError where error.isUniqueViolation {
            throw TenancyError.conflict("a tenant with slug '\(slug)' already exists")
        } catch let error as PostgresError where error.isForeignKeyViolation {
            throw TenancyError.invalid(field: "plan", message: "unknown plan '\(plan)' (see 'modelgate plan list')")
        }
        return try await get(id)
    }

    /// Accepts a tenant id or slug; throws `.notFound` for neither.
    public func resolve(_ reference: String) async throws -> UUID {
        if let id = UUID(uuidString: reference) {
            let rows = try await pool.query("SELECT id FROM tenants WHERE id = $1", [id])
            if let row = rows.first { return try row.decode("id") }
        }
        let rows = try await pool.query("SELECT id FROM tenants WHERE slug = $1", [reference.lowercased()])
        guard let row = rows.first else { throw TenancyError.notFound("no tenant '\(reference)'") }
        return try row.decode("id")
    }

    /// The tenant with its sealed fields opened.
    public func get(_ id: UUID) async throws -> Tenant {
        let rows = try await pool.query("SELECT * FROM tenants WHERE id = $1", [id])
        guard let row = rows.first else { throw TenancyError.notFound("no tenant \(id.uuidString.lowercased())") }
        var tenant = try Self.decode(row)
        let sealedEmail = try row.decode("contact_email", as: PostgresBytes?.self)
        let sealedBilling = try row.decode("billing_details", as: PostgresBytes?.self)
        if tenant.status != .deleted, sealedEmail != nil || sealedBilling != nil {
            let cipher = try await keyRing.cipher(for: id)
            let rowID = id.uuidString.lowercased()
            tenant.contactEmail = try sealedEmail.map {
                try cipher.openString(SealedValue(stored: $0.bytes), SealContext(table: "tenants", column: "contact_email", rowID: rowID))
            }
            tenant.billingDetails = try sealedBilling.map {
                try cipher.openString(SealedValue(stored: $0.bytes), SealContext(table: "tenants", column: "billing_details", rowID: rowID))
            }
        }
        return tenant
    }

    /// Tenants without their sealed fields (listing does not decrypt).
    public func list(includeDeleted: Bool = false) async throws -> [Tenant] {
        let rows = try await pool.query(
            "SELECT * FROM tenants WHERE $1 OR status <> 'deleted' ORDER BY created_at, slug", [includeDeleted])
        return try rows.map(Self.decode)
    }

    // MARK: Change

    public func update(_ id: UUID, _ changes: TenantChanges, actor: AuditActor) async throws -> Tenant {
        if let displayName = changes.displayName { try Validate.displayName(displayName) }
        if let email = changes.contactEmail, !email.isEmpty { try Validate.email(email) }
        if let billing = changes.billingDetails, !billing.isEmpty { try Validate.billing(billing) }
        if let plan = changes.plan { try Validate.plan(plan) }
        let current = try await get(id)
        guard current.status != .deleted else { throw TenancyError.notFound("no tenant \(id.uuidString.lowercased())") }
        let cipher = try await keyRing.cipher(for: id)
        let rowID = id.uuidString.lowercased()
        func seal(_ value: String?, _ column: String) throws -> SealedValue?? {
            guard let value else { return .none }  // unchanged
            if value.isEmpty { return .some(nil) }  // cleared
            return .some(try cipher.seal(value, SealContext(table: "tenants", column: column, rowID: rowID)))
        }
        let email = try seal(changes.contactEmail, "contact_email")
        let billing = try seal(changes.billingDetails, "billing_details")
        var changed: [String] = []
        if changes.displayName != nil { changed.append("display_name") }
        if email != nil { changed.append("contact_email") }
        if billing != nil { changed.append("billing_details") }
        if changes.plan != nil { changed.append("plan") }
        if changes.payloadLogging != nil { changed.append("payload_logging") }
        let fields = changed.joined(separator: ",")
        let notifier = self.notifier
        do {
        try await pool.transaction { connection in
            try connection.execute(
                """
                UPDATE tenants SET
                    display_name = coalesce($2, display_name),
                    contact_email = CASE WHEN $3 THEN $4 ELSE contact_email END,
                    billing_details = CASE WHEN $5 THEN $6 ELSE billing_details END,
                    plan = coalesce($7, plan),
                    payload_logging = coalesce($8, payload_logging),
                    updated_at = now()
                WHERE id = $1
                """,
                [id, changes.displayName, email != nil, email ?? nil, billing != nil, billing ?? nil, changes.plan, changes.payloadLogging])
            var details = ["fields": fields]
            if let plan = changes.plan { details["plan"] = plan }
            try AuditLog.append(connection, actor: actor, tenant: id, action: "tenant.update", target: "tenant:\(rowID)", details: details)
            // Keys cache their tenant's plan and payload logging: drop them everywhere.
            if changes.plan != nil || changes.payloadLogging != nil { try notifier.tenantChanged(id, connection) }
        }
        } catch let error as PostgresError where error.isForeignKeyViolation {
            throw TenancyError.invalid(field: "plan", message: "unknown plan '\(changes.plan ?? "")' (see 'modelgate plan list')")
        }
        return try await get(id)
    }

    public func suspend(_ id: UUID, actor: AuditActor) async throws -> Tenant {
        try await setStatus(id, from: .active, to: .suspended, action: "tenant.suspend", actor: actor)
    }

    public func resume(_ id: UUID, actor: AuditActor) async throws -> Tenant {
        try await setStatus(id, from: .suspended, to: .active, action: "tenant.resume", actor: actor)
    }

    private func setStatus(_ id: UUID, from: TenantStatus, to: TenantStatus, action: String, actor: AuditActor) async throws -> Tenant {
        let notifier = self.notifier
        let changed = try await pool.transaction { connection -> Bool in
            let count = try connection.execute(
                "UPDATE tenants SET status = $2, updated_at = now() WHERE id = $1 AND status = $3",
                [id, to.rawValue, from.rawValue])
            guard count == 1 else { return false }
            try AuditLog.append(connection, actor: actor, tenant: id, action: action, target: "tenant:\(id.uuidString.lowercased())")
            try notifier.tenantChanged(id, connection)
            return true
        }
        let tenant = try await get(id)
        if !changed {
            if tenant.status == .deleted { throw TenancyError.notFound("no tenant \(id.uuidString.lowercased())") }
            throw TenancyError.conflict("tenant \(tenant.slug) is \(tenant.status.rawValue), not \(from.rawValue)")
        }
        return tenant
    }

    public struct DeletionReport: Sendable, Equatable {
        public var revokedKeys: Int
        public var shreddedDataKeys: Int
    }

    /// Deletes a tenant: revokes its keys, deletes its sealed rows, and destroys its data keys
    /// (crypto-shredding: any copy of its sealed data, in a dump or backup, can no longer be
    /// opened). The tenant row stays, without personal data, so usage and invoices stay valid.
    public func delete(_ id: UUID, actor: AuditActor) async throws -> DeletionReport {
        let notifier = self.notifier
        let report = try await pool.transaction { connection -> DeletionReport? in
            let rows = try connection.query("SELECT status FROM tenants WHERE id = $1 FOR UPDATE", [id])
            guard let row = rows.first, try row.decode("status", as: String.self) != TenantStatus.deleted.rawValue else {
                return nil
            }
            let revoked = try connection.execute(
                "UPDATE api_keys SET revoked_at = now() WHERE tenant_id = $1 AND revoked_at IS NULL", [id])
            try connection.execute("DELETE FROM tenant_secrets WHERE tenant_id = $1", [id])
            try connection.execute("DELETE FROM payload_logs WHERE tenant_id = $1", [id])
            try connection.execute("DELETE FROM idempotency_keys WHERE tenant_id = $1", [id])
            try connection.execute(
                """
                UPDATE tenants SET status = 'deleted', deleted_at = now(), updated_at = now(),
                    contact_email = NULL, billing_details = NULL, payload_logging = false
                WHERE id = $1
                """, [id])
            let shredded = try connection.execute("DELETE FROM tenant_data_keys WHERE tenant_id = $1", [id])
            try AuditLog.append(
                connection, actor: actor, tenant: id, action: "tenant.delete", target: "tenant:\(id.uuidString.lowercased())",
                details: ["revoked_keys": String(revoked), "shredded_data_keys": String(shredded)])
            try notifier.tenantChanged(id, connection)
            return DeletionReport(revokedKeys: revoked, shreddedDataKeys: shredded)
        }
        keyRing.dropCache(tenant: id)
        guard let report else { throw TenancyError.notFound("no tenant \(id.uuidString.lowercased())") }
        return report
    }

    // MARK: Secrets

    /// Stores (or replaces) a tenant-supplied secret, sealed.
    public func setSecret(_ tenant: UUID, name: String, value: String, actor: AuditActor) async throws {
        guard name.range(of: "^[A-Za-z0-9_.-]{1,100}$", options: .regularExpression) != nil else {
            throw TenancyError.invalid(field: "name", message: "1-100 characters of letters, digits, '_', '.', '-'")
        }
        let cipher = try await keyRing.cipher(for: tenant)
        let existing = try await pool.query("SELECT id FROM tenant_secrets WHERE tenant_id = $1 AND name = $2", [tenant, name])
        let id = try existing.first?.decode("id", as: UUID.self) ?? UUID()
        let sealed = try cipher.seal(value, SealContext(table: "tenant_secrets", column: "value", rowID: id.uuidString.lowercased()))
        try await pool.transaction { connection in
            try connection.execute(
                """
                INSERT INTO tenant_secrets (id, tenant_id, name, value) VALUES ($1, $2, $3, $4)
                ON CONFLICT (id) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
                """, [id, tenant, name, sealed])
            try AuditLog.append(
                connection, actor: actor, tenant: tenant, action: "tenant.secret.set", target: "secret:\(name)")
        }
    }

    public func secret(_ tenant: UUID, name: String) async throws -> String {
        let rows = try await pool.query("SELECT id, value FROM tenant_secrets WHERE tenant_id = $1 AND name = $2", [tenant, name])
        guard let row = rows.first else { throw TenancyError.notFound("no secret '\(name)'") }
        let id: UUID = try row.decode("id")
        let cipher = try await keyRing.cipher(for: tenant)
        return try cipher.openString(
            SealedValue(stored: try row.decode("value", as: PostgresBytes.self).bytes),
            SealContext(table: "tenant_secrets", column: "value", rowID: id.uuidString.lowercased()))
    }

    static func decode(_ row: PostgresRow) throws -> Tenant {
        Tenant(
            id: try row.decode("id"), slug: try row.decode("slug"), displayName: try row.decode("display_name"),
            contactEmail: nil, billingDetails: nil, plan: try row.decode("plan"),
            status: TenantStatus(rawValue: try row.decode("status")) ?? .suspended,
            payloadLogging: try row.decode("payload_logging"), createdAt: try row.decode("created_at"),
            updatedAt: try row.decode("updated_at"), deletedAt: try row.decode("deleted_at"))
    }
}

enum Validate {
    static func slug(_ slug: String) throws {
        guard slug.range(of: "^[a-z0-9][a-z0-9-]{1,62}$", options: .regularExpression) != nil else {
            throw TenancyError.invalid(field: "slug", message: "2-63 characters: lower-case letters, digits and '-', starting with a letter or digit")
        }
    }

    static func displayName(_ name: String) throws {
        guard (1...200).contains(name.count), !name.contains(where: { $0.isNewline }) else {
            throw TenancyError.invalid(field: "display_name", message: "1-200 characters on one line")
        }
    }

    static func email(_ email: String) throws {
        let parts = email.split(separator: "@", omittingEmptySubsequences: false)
        guard email.count <= 254, parts.count == 2, !parts[0].isEmpty, parts[1].contains("."),
            !email.contains(where: { $0.isWhitespace })
        else {
            throw TenancyError.invalid(field: "contact_email", message: "not an e-mail address")
        }
    }

    static func billing(_ text: String) throws {
        guard text.count <= 2000 else { throw TenancyError.invalid(field: "billing_details", message: "at most 2000 characters") }
    }

    static func plan(_ plan: String) throws {
        guard plan.range(of: "^[a-z0-9][a-z0-9_-]{0,62}$", options: .regularExpression) != nil else {
            throw TenancyError.invalid(field: "plan", message: "a plan name (lower-case letters, digits, '-', '_')")
        }
    }
}
