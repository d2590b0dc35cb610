import Encryption
import Foundation
import Logging
import Metering
import Postgres
import Tenancy

/// The composition root: every service the commands and the gateway use, built once from the
/// configuration.
public struct ModelGateServices: Sendable {
    public let configuration: ModelGateConfiguration
    public let logger: Logger
    public let pool: PostgresPool
    public let migrator: Migrator
    public let keyRing: KeyRing
    public let keyFile: String?
    public let tenants: TenantService
    public let apiKeys: APIKeyService
    public let authenticator: Authenticator
    public let keyringAdministration: KeyringAdministration
    public let meter: Meter
    public let limits: LimitService
    public let prices: PriceBook
    public let reports: Reports
    public let idempotency: IdempotencyStore
    public let payloadLog: PayloadLog
    public let upstreamCredentials: UpstreamCredentials

    /// Opens the database (starting the local cluster in zero-config mode), applies pending
    /// migrations, and loads the master keys.
    /// `spool`: open the usage spool (the server does; the CLI settles nothing and must not take
    /// the spool directory's lock from a server running beside it).
    /// `create`: in zero-config mode, create the local cluster and the key file when missing
    /// (`serve` and `db init` only; every other command fails naming where it looked).
    public static func open(_ configuration: ModelGateConfiguration, logger: Logger, spool: Bool = false, create: Bool = false) async throws -> ModelGateServices {
        let pool = try await DatabaseBootstrap.openPool(configuration, logger: logger, create: create)
        do {
            let migrator = DatabaseBootstrap.migrator(pool, logger: logger)
            try await migrator.migrate()
            let loaded = try KeyringBootstrap.load(configuration, logger: logger, create: create)
            try await KeyringBootstrap.checkFingerprint(loaded.keys, pool: pool)
            let keyFile = loaded.file
            let keyRing = KeyRing(masterKeys: loaded.keys, store: PostgresDataKeyStore(pool: pool)) {
                if let keyFile { return try MasterKeys.load(file: keyFile) }
                return try KeyringBootstrap.load(configuration, logger: logger).keys
            }
            let meter = Meter(
                pool: pool, spool: spool ? try UsageSpool(directory: configuration.metering.spoolDirectory) : nil, logger: logger,
                reservationTTLSeconds: configuration.metering.reservationTtlSeconds)
            let authenticator = Authenticator(pool: pool, keyHasher: loaded.keys.keyHasher, logger: logger) { change in
                switch change {
                case .tenant(let tenant):
                    keyRing.dropCache(tenant: tenant)
                    meter.forgetRates(tenant: tenant)
                case .key(let key):
                    meter.forgetRates(key: key)
                case .everything:
                    keyRing.dropCache()
                    meter.forgetRates()
                }
            }
            return ModelGateServices(
                configuration: configuration, logger: logger, pool: pool, migrator: migrator, keyRing: keyRing,
                keyFile: keyFile,
                tenants: TenantService(pool: pool, keyRing: keyRing, defaultPlan: configuration.limits.defaultPlan),
                apiKeys: APIKeyService(pool: pool, keyHasher: loaded.keys.keyHasher), authenticator: authenticator,
                keyringAdministration: KeyringAdministration(pool: pool, keyRing: keyRing, keyFile: keyFile),
                meter: meter, limits: LimitService(pool: pool, notifier: LimitInvalidation()), prices: PriceBook(pool: pool), reports: Reports(pool: pool),
                idempotency: IdempotencyStore(pool: pool, keyRing: keyRing), payloadLog: PayloadLog(pool: pool, keyRing: keyRing),
                upstreamCredentials: UpstreamCredentials(pool: pool, keyRing: keyRing))
        } catch {
            await pool.shutdown()
            throw error
        }
    }

    /// Deletes what is kept only for a while — stored idempotent responses, payload logs, raw
    /// usage events past their retention — at start and every ten minutes, until cancelled.
    public func runRetention(interval: Duration = .seconds(600)) async {
        let metering = configuration.metering
        while !Task.isCancelled {
            do {
                let idempotent = try await idempotency.expire(hours: metering.idempotencyRetentionHours)
                let payloads = try await payloadLog.expire(days: metering.payloadRetentionDays)
                let events = try await reports.applyRetention(days: metering.retentionDays)
                if idempotent + payloads + events > 0 {
                    logger.info("retention", metadata: ["idempotency_keys": "\(idempotent)", "payload_logs": "\(payloads)", "usage_events": "\(events)"])
                }
            } catch {
                logger.warning("retention pass failed; trying again later", metadata: ["error": "\(String(reflecting: type(of: error)))"])
            }
            try? await Task.sleep(for: interval)
        }
    }

    public func close() async {
        await pool.shutdown()
    }
}
