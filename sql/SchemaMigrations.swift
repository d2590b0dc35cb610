import Postgres

/// ModelGate's schema migrations, embedded in the binary.
public enum SchemaMigrations {
    /// Every migration in `sql/migrations`, in order.
    public static let all: [Migration] = embedded.compactMap { fileName, bytes in
        Migration(fileName: fileName, sql: String(decoding: bytes, as: UTF8.self))
    }

    /// File names and contents. SwiftPM embeds each file as `PackageResources.<mangled name>`.
    static let embedded: [(String, [UInt8])] = [
        ("0001_init.sql", PackageResources._001_init_sql),
        ("0002_tenancy.sql", PackageResources._002_tenancy_sql),
        ("0003_metering.sql", PackageResources._003_metering_sql),
        ("0004_gateway.sql", PackageResources._004_gateway_sql),
        ("0005_sealed_content.sql", PackageResources._005_sealed_content_sql),
        ("0006_unlimited_overrides.sql", PackageResources._006_unlimited_overrides_sql),
        ("0007_model_aliases.sql", PackageResources._007_model_aliases_sql),
        ("0008_upstream_credentials.sql", PackageResources._008_upstream_credentials_sql),
        ("0009_usage_source.sql", PackageResources._009_usage_source_sql),
        ("0010_model_endpoints.sql", PackageResources._010_model_endpoints_sql),
    ]

    /// File names of the embedded migrations (tests compare them with the folder).
    public static var fileNames: [String] { embedded.map(\.0) }
}
