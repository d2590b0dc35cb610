/// How to reach PostgreSQL and how the pool behaves.
public struct PostgresConfiguration: Sendable {
    /// A libpq connection string: a URL (`postgresql://user@host:5432/db?sslmode=disable`) or
    /// key=value pairs (`host=/tmp port=5432 dbname=modelgate`).
    public var connectionString: String
    /// Connections in the pool; each has its own thread for blocking libpq calls.
    public var poolSize: Int
    /// Seconds libpq waits for a connection to be established (libpq treats values below 2 as 2).
    public var connectTimeoutSeconds: Int
    /// Server-side `statement_timeout` in milliseconds (0 = none).
    public var statementTimeoutMilliseconds: Int
    /// How long a caller waits for a free connection before failing with `.poolTimeout`.
    public var acquireTimeoutSeconds: Double
    /// `application_name` shown in `pg_stat_activity`.
    public var applicationName: String

    public init(
        connectionString: String,
        poolSize: Int = 8,
        connectTimeoutSeconds: Int = 5,
        statementTimeoutMilliseconds: Int = 30_000,
        acquireTimeoutSeconds: Double = 10,
        applicationName: String = "modelgate"
    ) {
        self.connectionString = connectionString
        self.poolSize = poolSize
        self.connectTimeoutSeconds = connectTimeoutSeconds
        self.statementTimeoutMilliseconds = statementTimeoutMilliseconds
        self.acquireTimeoutSeconds = acquireTimeoutSeconds
        self.applicationName = applicationName
    }

    /// The same server, another database (the connection string's own dbname is overridden).
    public func database(_ name: String) -> PostgresConfiguration {
        var copy = self
        copy.databaseOverride = name
        return copy
    }

    var databaseOverride: String?

    /// Keyword/value pairs for `PQconnectdbParams` (with `expand_dbname`, so the connection
    /// string is expanded first and the later keywords override it).
    var connectParameters: [(String, String)] {
        var parameters: [(String, String)] = [("dbname", connectionString)]
        if let databaseOverride { parameters.append(("dbname", databaseOverride)) }
        parameters.append(("connect_timeout", String(max(connectTimeoutSeconds, 1))))
        parameters.append(("application_name", applicationName))
        parameters.append((
            "options",
            "-c statement_timeout=\(statementTimeoutMilliseconds) -c TimeZone=UTC -c DateStyle=ISO -c client_min_messages=warning"
        ))
        parameters.append(("client_encoding", "UTF8"))
        return parameters
    }
}
