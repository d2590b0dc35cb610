import NIOCore

/// Reads server-sent events as they arrive: the `data` of each event (its `data:` lines
/// joined by newlines), whatever the chunking of the bytes. Comments, `event:`, `id:` and
/// `retry:` lines are skipped; lines end in LF, CRLF or CR.
struct ServerSentEvents {
    struct TooLarge: Error {}

    let maxEventBytes: Int
    private var line: [UInt8] = []
    private var data: [UInt8] = []
    private var hasData = false
    private var afterCR = false

    init(maxEventBytes: Int) {
        self.maxEventBytes = maxEventBytes
    }

    /// The events that `chunk` completes.
    mutating func feed(_ chunk: ByteBuffer) throws -> [[UInt8]] {
        var events: [[UInt8]] = []
        for byte in chunk.readableBytesView {
            if afterCR {
                afterCR = false
                if byte == 0x0A { continue }
            }
            switch byte {
            case 0x0A, 0x0D:
                afterCR = byte == 0x0D
                if let event = endLine() { events.append(event) }
            default:
                line.append(byte)
                guard line.count + data.count <= maxEventBytes else { throw TooLarge() }
            }
        }
        return events
    }

    /// An event the stream ended without its blank line.
    mutating func finish() throws -> [[UInt8]] {
        var events: [[UInt8]] = []
        if !line.isEmpty, let event = endLine() { events.append(event) }
        if let event = endLine() { events.append(event) }
        return events
    }

    private mutating func endLine() -> [UInt8]? {
        defer { line.removeAll(keepingCapacity: true) }
        if line.isEmpty {
            guard hasData else { return nil }
            defer {
                data.removeAll(keepingCapacity: true)
                hasData = false
            }
            return data
        }
        let field = line.firstIndex(of: 0x3A).map { line[..<$0] } ?? line[...]
        guard field.elementsEqual("data".utf8) else { return nil }
        var value = line.dropFirst(field.count + 1)
        if value.first == 0x20 { value = value.dropFirst() }
        if hasData { data.append(0x0A) }
        data.append(contentsOf: value)
        hasData = true
        return nil
    }
}
