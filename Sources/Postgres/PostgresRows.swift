import Foundation

/// The rows of a result, copied out of libpq into Swift memory (text format).
public struct PostgresRows: Sendable, RandomAccessCollection {
    public let columns: [String]
    let columnTypes: [UInt32]
    let columnIndex: [String: Int]
    let cells: [[String?]]
    /// Rows changed by INSERT/UPDATE/DELETE (from the command tag), 0 otherwise.
    public let affectedRows: Int

    init(columns: [String], columnTypes: [UInt32], cells: [[String?]], affectedRows: Int) {
        self.columns = columns
        self.columnTypes = columnTypes
        var index: [String: Int] = [:]
        for (position, name) in columns.enumerated() where index[name] == nil { index[name] = position }
        self.columnIndex = index
        self.cells = cells
        self.affectedRows = affectedRows
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { cells.count }
    public subscript(position: Int) -> PostgresRow { PostgresRow(rows: self, row: position) }
}

/// One row of a result. Decode columns by position or by name:
/// `let id: UUID = try row.decode("id")`, `let email: String? = try row.decode(1)`.
public struct PostgresRow: Sendable {
    let rows: PostgresRows
    let row: Int

    public func decode<Value: PostgresDecodable>(_ column: Int, as type: Value.Type = Value.self) throws -> Value {
        guard column >= 0, column < rows.columns.count else {
            throw PostgresError(.decoding, "column index \(column) out of range (\(rows.columns.count) columns)")
        }
        let cell = PostgresCell(text: rows.cells[row][column], type: rows.columnTypes[column], column: rows.columns[column])
        return try Value(postgresCell: cell)
    }

    public func decode<Value: PostgresDecodable>(_ column: String, as type: Value.Type = Value.self) throws -> Value {
        guard let index = rows.columnIndex[column] else {
            throw PostgresError(.decoding, "no column named \"\(column)\" in result")
        }
        return try decode(index, as: type)
    }

    /// Decodes a `json`/`jsonb` (or text) column into a `Decodable` value.
    public func decodeJSON<Value: Decodable>(_ column: String, as type: Value.Type = Value.self) throws -> Value {
        let text: String = try decode(column)
        do {
            return try JSONDecoder().decode(Value.self, from: Data(text.utf8))
        } catch {
            throw PostgresError(.decoding, "column \"\(column)\": JSON does not decode as \(Value.self)")
        }
    }

    /// True when the column is NULL.
    public func isNull(_ column: String) -> Bool {
        guard let index = rows.columnIndex[column] else { return true }
        return rows.cells[row][index] == nil
    }
}

/// One cell as the server sent it (text format) with its type OID.
public struct PostgresCell: Sendable {
    public let text: String?
    public let type: UInt32
    public let column: String

    func required<Value>(_ target: Value.Type) throws -> String {
        guard let text else {
            throw PostgresError(.decoding, "column \"\(column)\" is NULL; decode it as \(Value.self)?")
        }
        return text
    }

    func mismatch<Value>(_ target: Value.Type) -> PostgresError {
        PostgresError(.decoding, "column \"\(column)\" (type oid \(type)) does not decode as \(Value.self)")
    }
}

/// A Swift type that can be decoded from a result cell.
public protocol PostgresDecodable: Sendable {
    init(postgresCell cell: PostgresCell) throws
}

extension Optional: PostgresDecodable where Wrapped: PostgresDecodable {
    public init(postgresCell cell: PostgresCell) throws {
        if cell.text == nil {
            self = .none
        } else {
            self = .some(try Wrapped(postgresCell: cell))
        }
    }
}

extension String: PostgresDecodable {
    public init(postgresCell cell: PostgresCell) throws {
        self = try cell.required(String.self)
    }
}

extension Int: PostgresDecodable {
    public init(postgresCell cell: PostgresCell) throws {
        guard let value = Int(try cell.required(Int.self)) else { throw cell.mismatch(Int.self) }
        self = value
    }
}

extension Int64: PostgresDecodable {
    public init(postgresCell cell: PostgresCell) throws {
        guard let value = Int64(try cell.required(Int64.self)) else { throw cell.mismatch(Int64.self) }
        self = value
    }
}

extension Int32: PostgresDecodable {
    public init(postgresCell cell: PostgresCell) throws {
        guard let value = Int32(try cell.required(Int32.self)) else { throw cell.mismatch(Int32.self) }
        self = value
    }
}

extension Bool: PostgresDecodable {
    public init(postgresCell cell: PostgresCell) throws {
        switch try cell.required(Bool.self) {
        case "t", "true": self = true
        case "f", "false": self = false
        default: throw cell.mismatch(Bool.self)
        }
    }
}

extension Double: PostgresDecodable {
    public init(postgresCell cell: PostgresCell) throws {
        let text = try cell.required(Double.self)
        switch text {
        case "NaN": self = .nan
        case "Infinity": self = .infinity
        case "-Infinity": self = -.infinity
        default:
            guard let value = Double(text) else { throw cell.mismatch(Double.self) }
            self = value
        }
    }
}

extension UUID: PostgresDecodable {
    public init(postgresCell cell: PostgresCell) throws {
        guard let value = UUID(uuidString: try cell.required(UUID.self)) else { throw cell.mismatch(UUID.self) }
        self = value
    }
}

extension Date: PostgresDecodable {
    public init(postgresCell cell: PostgresCell) throws {
        guard let value = PostgresTimestamp.parse(try cell.required(Date.self)) else { throw cell.mismatch(Date.self) }
        self = value
    }
}

extension PostgresBytes: PostgresDecodable {
    public init(postgresCell cell: PostgresCell) throws {
        guard let value = PostgresByteaText.parse(try cell.required(PostgresBytes.self)) else {
            throw cell.mismatch(PostgresBytes.self)
        }
        self.init(value)
    }
}

extension Data: PostgresDecodable {
    public init(postgresCell cell: PostgresCell) throws {
        self = Data(try PostgresBytes(postgresCell: cell).bytes)
    }
}

extension Array: PostgresDecodable where Element: PostgresDecodable {
    public init(postgresCell cell: PostgresCell) throws {
        guard let elements = PostgresArrayLiteral.parse(try cell.required([Element].self)) else {
            throw cell.mismatch([Element].self)
        }
        self = try elements.map { element in
            try Element(postgresCell: PostgresCell(text: element, type: PostgresType.unknown, column: cell.column))
        }
    }
}
