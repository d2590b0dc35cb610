/// An error from the PostgreSQL client.
///
/// Carries the server's SQLSTATE when there is one, so callers can tell a unique violation,
/// a serialization failure and a lost connection apart without parsing messages.
/// Messages never contain parameter values.
public struct PostgresError: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        /// Could not connect, or the connection broke (server down, restarted, network).
        case connection
        /// The server rejected or failed a statement; see `sqlState`.
        case server
        /// A value in a result row could not be decoded into the requested Swift type.
        case decoding
        /// No connection became free within the pool's acquire timeout.
        case poolTimeout
        /// The pool was shut down.
        case poolClosed
        /// A migration problem (edited, unknown, or failed migration).
        case migration
        /// The local cluster could not be created, started or stopped.
        case localCluster
    }

    public var kind: Kind
    public var sqlState: String?
    public var message: String
    public var detail: String?
    public var constraint: String?

    public init(_ kind: Kind, _ message: String, sqlState: String? = nil, detail: String? = nil, constraint: String? = nil) {
        self.kind = kind
        self.message = message
        self.sqlState = sqlState
        self.detail = detail
        self.constraint = constraint
    }

    /// `23505`: a UNIQUE or PRIMARY KEY constraint was violated.
    public var isUniqueViolation: Bool { sqlState == "23505" }
    /// `23503`: a foreign key constraint was violated.
    public var isForeignKeyViolation: Bool { sqlState == "23503" }
    /// `40001` or `40P01`: the transaction may succeed if retried.
    public var isSerializationFailure: Bool { sqlState == "40001" || sqlState == "40P01" }
    /// `57014`: cancelled, typically by `statement_timeout`.
    public var isQueryCanceled: Bool { sqlState == "57014" }
    /// The connection could not be made or was lost (SQLSTATE class 08, or server shutdown 57P0x).
    public var isConnectionError: Bool {
        if kind == .connection { return true }
        guard let state = sqlState else { return false }
        return state.hasPrefix("08") || state == "57P01" || state == "57P02" || state == "57P03"
    }

    public var description: String {
        var text = "PostgreSQL \(kind.rawValue) error"
        if let sqlState { text += " [\(sqlState)]" }
        text += ": \(message)"
        if let detail, !detail.isEmpty { text += " (\(detail))" }
        return text
    }
}
