import CLibPQ
import Foundation

/// One libpq connection. Its calls block, so it is only ever used from one thread at a time:
/// a pool worker's dedicated thread (or the listener's). Code inside `pool.withConnection`
/// and `pool.transaction` runs on that thread and may call it synchronously.
public final class PostgresConnection: @unchecked Sendable {
    private var raw: OpaquePointer?
    private let configuration: PostgresConfiguration
    private let onQuery: (@Sendable () -> Void)?

    /// Opens a connection; throws `.connection` with libpq's message when the server cannot be reached.
    public init(configuration: PostgresConfiguration, onQuery: (@Sendable () -> Void)? = nil) throws {
        self.configuration = configuration
        self.onQuery = onQuery
        self.raw = try Self.connect(configuration)
    }

    deinit {
        if let raw { PQfinish(raw) }
    }

    private static func connect(_ configuration: PostgresConfiguration) throws -> OpaquePointer {
        let parameters = configuration.connectParameters
        let keywords = parameters.map { strdup($0.0) }
        let values = parameters.map { strdup($0.1) }
        defer {
            keywords.forEach { free($0) }
            values.forEach { free($0) }
        }
        var keywordPointers: [UnsafePointer<CChar>?] = keywords.map { UnsafePointer($0) }
        var valuePointers: [UnsafePointer<CChar>?] = values.map { UnsafePointer($0) }
        keywordPointers.append(nil)
        valuePointers.append(nil)
        guard let connection = PQconnectdbParams(keywordPointers, valuePointers, 1) else {
            throw PostgresError(.connection, "out of memory allocating a connection")
        }
        if PQstatus(connection) != CONNECTION_OK {
            let message = Self.errorMessage(connection)
            PQfinish(connection)
            throw PostgresError(.connection, message.isEmpty ? "could not connect" : message)
        }
        // libpq prints server notices on stderr by default; they are not ours to print.
        PQsetNoticeProcessor(connection, { _, _ in }, nil)
        return connection
    }

    private static func errorMessage(_ connection: OpaquePointer?) -> String {
        guard let connection, let text = PQerrorMessage(connection) else { return "" }
        return String(cString: text).trimmingCharacters(in: .whitespacesAndNewlines)
            .replacingOccurrences(of: "\n", with: "; ")
    }

    /// True when the connection is open and was not reported broken.
    public var isOpen: Bool {
        guard let raw else { return false }
        return PQstatus(raw) == CONNECTION_OK
    }

    /// Detects a connection the server has closed while it sat idle (restart, crash, admin
    /// termination) without sending a query: the socket turns readable with EOF or an error.
    func isAliveWhenIdle() -> Bool {
        guard let raw, PQstatus(raw) == CONNECTION_OK else { return false }
        let socket = PQsocket(raw)
        guard socket >= 0 else { return false }
        var descriptor = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
        // Pool connections never LISTEN and the server only speaks when asked, so anything
        // readable on an idle connection is the server saying goodbye (a FATAL message, then EOF).
        return poll(&descriptor, 1, 0) == 0
    }

    /// Re-establishes the connection (after a server restart or a lost socket).
    func reconnect() throws {
        if let raw { PQfinish(raw) }
        raw = nil
        prepared.removeAll()
        raw = try Self.connect(configuration)
    }

    /// Closes the connection; later calls fail with `.connection`.
    public func close() {
        if let raw { PQfinish(raw) }
        raw = nil
        prepared.removeAll()
    }

    /// Whether a transaction block is open (or failed) on this connection.
    var isInTransaction: Bool {
        guard let raw else { return false }
        let status = PQtransactionStatus(raw)
        return status == PQTRANS_INTRANS || status == PQTRANS_INERROR
    }

    var socket: Int32 {
        guard let raw else { return -1 }
        return PQsocket(raw)
    }

    // MARK: Statements

    /// Runs one parameterized statement and returns its rows.
    @discardableResult
    public func query(_ sql: String, _ parameters: [any PostgresEncodable] = []) throws -> PostgresRows {
        guard let raw else { throw PostgresError(.connection, "connection is closed") }
        onQuery?()
        let binds = parameters.map { $0.postgresBind() }
        for (position, bind) in binds.enumerated() where bind.format == 0 {
            if let bytes = bind.bytes, bytes.contains(0) {
                throw PostgresError(
                    .server, "parameter $\(position + 1) contains a NUL character, which PostgreSQL text cannot hold",
                    sqlState: "22021")
            }
        }
        let buffers: [UnsafeMutablePointer<CChar>?] = binds.map { bind in
            guard let bytes = bind.bytes else { return nil }
            let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count + 1)
            bytes.withUnsafeBufferPointer { source in
                source.withMemoryRebound(to: CChar.self) { chars in
                    if let base = chars.baseAddress { buffer.update(from: base, count: bytes.count) }
                }
            }
            buffer[bytes.count] = 0
            return buffer
        }
        defer { buffers.forEach { $0?.deallocate() } }
        let values: [UnsafePointer<CChar>?] = buffers.map { $0.map { UnsafePointer($0) } }
        let types: [Oid] = binds.map { Oid($0.oid) }
        let lengths: [Int32] = binds.map { Int32($0.bytes?.count ?? 0) }
        let formats: [Int32] = binds.map { $0.format }
        let key = PreparedKey(sql: sql, types: types)
        let name: String
        if let cached = prepared[key] {
            name = cached
        } else {
            if prepared.count >= Self.preparedLimit {
                _ = PQexec(raw, "DEALLOCATE ALL").map { PQclear($0) }
                prepared.removeAll()
            }
            name = "mg\(nextPrepared)"
            nextPrepared += 1
            try consume(PQprepare(raw, name, sql, Int32(types.count), types))
            prepared[key] = name
        }
        do {
            return try consume(PQexecPrepared(raw, name, Int32(binds.count), values, lengths, formats, 0))
        } catch let error as PostgresError where error.sqlState == "0A000" || error.sqlState == "26000" {
            // The schema changed under a cached plan ("cached plan must not change result
            // type") or the statement vanished: prepare afresh once.
            prepared[key] = nil
            _ = PQexec(raw, "DEALLOCATE \(name)").map { PQclear($0) }
            if isInTransaction { throw error }
            try consume(PQprepare(raw, name, sql, Int32(types.count), types))
            prepared[key] = name
            return try consume(PQexecPrepared(raw, name, Int32(binds.count), values, lengths, formats, 0))
        }
    }

    /// Statements prepared on this connection, by text and parameter types.
    private var prepared: [PreparedKey: String] = [:]
    private var nextPrepared = 0
    private static let preparedLimit = 512

    private struct PreparedKey: Hashable {
        var sql: String
        var types: [Oid]
    }

    /// Runs one statement and returns the number of rows it changed.
    @discardableResult
    public func execute(_ sql: String, _ parameters: [any PostgresEncodable] = []) throws -> Int {
        try query(sql, parameters).affectedRows
    }

    /// Runs a script of several statements without parameters (migrations, DDL).
    public func executeScript(_ sql: String) throws {
        guard let raw else { throw PostgresError(.connection, "connection is closed") }
        onQuery?()
        guard PQsendQuery(raw, sql) == 1 else {
            throw PostgresError(.connection, Self.errorMessage(raw))
        }
        var firstError: PostgresError?
        while let result = PQgetResult(raw) {
            do {
                _ = try consume(result)
            } catch let error as PostgresError {
                if firstError == nil { firstError = error }
            }
        }
        if let firstError { throw firstError }
    }

    @discardableResult
    private func consume(_ result: OpaquePointer?) throws -> PostgresRows {
        guard let result else {
            throw PostgresError(.connection, Self.errorMessage(raw).isEmpty ? "no result" : Self.errorMessage(raw))
        }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_TUPLES_OK, PGRES_COMMAND_OK, PGRES_EMPTY_QUERY, PGRES_SINGLE_TUPLE:
            break
        default:
            throw error(from: result)
        }
        let columnCount = Int(PQnfields(result))
        let rowCount = Int(PQntuples(result))
        var columns: [String] = []
        var columnTypes: [UInt32] = []
        columns.reserveCapacity(columnCount)
        for column in 0..<columnCount {
            columns.append(PQfname(result, Int32(column)).map { String(cString: $0) } ?? "?column?")
            columnTypes.append(UInt32(PQftype(result, Int32(column))))
        }
        var cells: [[String?]] = []
        cells.reserveCapacity(rowCount)
        for row in 0..<rowCount {
            var values: [String?] = []
            values.reserveCapacity(columnCount)
            for column in 0..<columnCount {
                if PQgetisnull(result, Int32(row), Int32(column)) == 1 {
                    values.append(nil)
                } else if let value = PQgetvalue(result, Int32(row), Int32(column)) {
                    values.append(String(cString: value))
                } else {
                    values.append(nil)
                }
            }
            cells.append(values)
        }
        let affected = PQcmdTuples(result).flatMap { Int(String(cString: $0)) } ?? 0
        return PostgresRows(columns: columns, columnTypes: columnTypes, cells: cells, affectedRows: affected)
    }

    private func error(from result: OpaquePointer) -> PostgresError {
        func field(_ code: Int32) -> String? {
            PQresultErrorField(result, code).map { String(cString: $0) }
        }
        let sqlState = field(Int32(UInt8(ascii: "C")))
        let primary = field(Int32(UInt8(ascii: "M"))) ?? Self.errorMessage(raw)
        let detail = field(Int32(UInt8(ascii: "D")))
        let constraint = field(Int32(UInt8(ascii: "n")))
        let broken = raw.map { PQstatus($0) != CONNECTION_OK } ?? true
        let kind: PostgresError.Kind = (sqlState == nil && broken) ? .connection : .server
        return PostgresError(kind, primary.isEmpty ? "statement failed" : primary,
                             sqlState: sqlState, detail: detail, constraint: constraint)
    }

    // MARK: Notifications (used by the listener)

    /// Reads what arrived on the socket and returns pending notifications. Throws when the
    /// connection is gone.
    func drainNotifications() throws -> [PostgresNotification] {
        guard let raw else { throw PostgresError(.connection, "connection is closed") }
        if PQconsumeInput(raw) == 0 || PQstatus(raw) != CONNECTION_OK {
            throw PostgresError(.connection, Self.errorMessage(raw))
        }
        var notifications: [PostgresNotification] = []
        while let notify = PQnotifies(raw) {
            let channel = String(cString: notify.pointee.relname)
            let payload = String(cString: notify.pointee.extra)
            notifications.append(PostgresNotification(channel: channel, payload: payload))
            PQfreemem(notify)
        }
        return notifications
    }
}
