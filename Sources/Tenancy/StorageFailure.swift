import Encryption
import Postgres

/// Why a service call failed in the storage below it (the database, the keyring), in the terms
/// a caller maps to its own answers — the gateway to HTTP statuses — without knowing either.
public enum StorageFailure: Sendable, Equatable {
    /// The database cannot be reached (connection lost, pool exhausted or closed): retry.
    case unavailable(String)
    /// A statement ran past its timeout and was cancelled.
    case timedOut
    /// A value breaks a uniqueness constraint.
    case duplicate
    /// A value the database cannot hold or a constraint it breaks: the caller's values are at
    /// fault (validation should have caught it first). The reason names no value.
    case invalidValue(String)
    /// The master or data keys cannot open or seal something: a server problem.
    case keyring(String)

    /// The failure `error` stands for, or nil when it is not a storage failure.
    public init?(_ error: any Error) {
        switch error {
        case let error as PostgresError where error.isConnectionError || error.kind == .poolTimeout || error.kind == .poolClosed:
            self = .unavailable(error.kind.rawValue)
        case let error as PostgresError where error.isQueryCanceled:
            self = .timedOut
        case let error as PostgresError where error.isUniqueViolation:
            self = .duplicate
        case let error as PostgresError where error.sqlState?.hasPrefix("22") == true || error.sqlState?.hasPrefix("23") == true:
            self = .invalidValue(error.sqlState == "22021" ? "a text value contains a NUL character or invalid UTF-8" : "a value is out of range or invalid")
        case let error as KeyringError:
            self = .keyring("\(error)")
        default:
            return nil
        }
    }
}
