import Foundation

/// A metadata value of a GGUF file.
package enum GGUFValue: Sendable, Equatable {
    case unsigned(UInt64)
    case signed(Int64)
    case float(Double)
    case bool(Bool)
    /// Strings are kept as their bytes: vocabularies hold byte strings that are not valid UTF-8.
    case string([UInt8])
    case array([GGUFValue])

    package var int: Int? {
        switch self {
        case .unsigned(let value): value <= UInt64(Int.max) ? Int(value) : nil
        case .signed(let value): Int(value)
        default: nil
        }
    }

    package var double: Double? {
        switch self {
        case .float(let value): value
        case .unsigned, .signed: int.map(Double.init)
        default: nil
        }
    }

    package var text: String? {
        if case .string(let bytes) = self { return String(decoding: bytes, as: UTF8.self) }
        return nil
    }
}

/// A GGUF file (version 2 or 3), memory-mapped: its metadata and where each tensor lies. Every
/// length, count and offset is checked against the file before it is used, so a truncated or
/// corrupt file fails with one line naming the key or tensor, never a crash.
package final class GGUFFile: @unchecked Sendable {
    package struct TensorInfo: Sendable, Equatable {
        package var name: String
        /// Dimensions as GGUF lists them: innermost (contiguous) first.
        package var dimensions: [Int]
        package var type: UInt32
        /// From the start of the file.
        package var offset: Int
        package var byteCount: Int
    }

    package let path: String
    package let version: UInt32
    package let metadata: [String: GGUFValue]
    package let tensors: [TensorInfo]
    /// Tensor name -> its index in `tensors` (names are unique: checked on open).
    private let indices: [String: Int]
    private let mapping: UnsafeMutableRawPointer
    private let mappedLength: Int

    /// Bytes per block and elements per block of the tensor types this reader knows
    /// (ggml's numbering).
    static let typeLayouts: [UInt32: (name: String, blockBytes: Int, blockElements: Int)] = [
        0: ("F32", 4, 1), 1: ("F16", 2, 1), 2: ("Q4_0", 18, 32), 3: ("Q4_1", 20, 32), 6: ("Q5_0", 22, 32), 7: ("Q5_1", 24, 32),
        8: ("Q8_0", 34, 32), 9: ("Q8_1", 36, 32), 10: ("Q2_K", 84, 256), 11: ("Q3_K", 110, 256), 12: ("Q4_K", 144, 256),
        13: ("Q5_K", 176, 256), 14: ("Q6_K", 210, 256), 15: ("Q8_K", 292, 256), 24: ("I8", 1, 1), 25: ("I16", 2, 1),
        26: ("I32", 4, 1), 27: ("I64", 8, 1), 28: ("F64", 8, 1), 30: ("BF16", 2, 1),
    ]

    package init(path: String) throws {
        self.path = path
        let (mapped, length) = try mapReadOnly(path, minimumLength: 24, tooShort: "shorter than a GGUF header")
        mapping = mapped
        mappedLength = length
        do {
            var reader = Reader(base: UnsafeRawPointer(mapped), length: length, path: path)
            guard try reader.bytes(4, what: "magic") == Array("GGUF".utf8) else {
                throw ModelLoadError(file: path, reason: "not a GGUF file (magic is not 'GGUF')")
            }
            version = try reader.scalar(UInt32.self, what: "version")
            guard version == 2 || version == 3 else { throw ModelLoadError(file: path, reason: "GGUF version \(version) is not supported (2 or 3)") }
            let tensorCount = try reader.count(what: "tensor_count")
            let keyCount = try reader.count(what: "metadata_kv_count")
            var metadata: [String: GGUFValue] = [:]
            for index in 0..<keyCount {
                let key = String(decoding: try reader.string(what: "metadata key \(index)"), as: UTF8.self)
                let shown = Self.shown(key)
                let type = try reader.scalar(UInt32.self, what: "the type of '\(shown)'")
                guard metadata[key] == nil else { throw ModelLoadError(file: path, reason: "metadata '\(shown)' appears twice") }
                metadata[key] = try reader.value(type: type, what: "metadata '\(shown)'", depth: 0)
            }
            self.metadata = metadata
            var tensors: [TensorInfo] = []
            var infos: [(name: String, dimensions: [Int], type: UInt32, relative: UInt64)] = []
            for index in 0..<tensorCount {
                let raw = String(decoding: try reader.string(what: "tensor \(index)'s name"), as: UTF8.self)
                let name = Self.shown(raw)
                let rank = Int(try reader.scalar(UInt32.self, what: "tensor '\(name)' dimension count"))
                guard rank >= 1, rank <= 4 else { throw ModelLoadError(file: path, tensor: name, reason: "\(rank) dimensions (1 to 4 allowed)") }
                var dimensions: [Int] = []
                for _ in 0..<rank {
                    let dimension = try reader.scalar(UInt64.self, what: "tensor '\(name)' dimensions")
                    guard dimension > 0, dimension < 1 << 40 else { throw ModelLoadError(file: path, tensor: name, reason: "dimension \(dimension) out of range") }
                    dimensions.append(Int(dimension))
                }
                let type = try reader.scalar(UInt32.self, what: "tensor '\(name)' type")
                let offset = try reader.scalar(UInt64.self, what: "tensor '\(name)' offset")
                infos.append((raw, dimensions, type, offset))
            }
            let alignment = metadata["general.alignment"]?.int ?? 32
            guard alignment > 0, alignment.nonzeroBitCount == 1, alignment <= 1 << 16 else {
                throw ModelLoadError(file: path, reason: "metadata 'general.alignment' is \(alignment), not a power of two")
            }
            let dataStart = (reader.offset + alignment - 1) / alignment * alignment
            var names: Set<String> = []
            for entry in infos {
                guard names.insert(entry.name).inserted else { throw ModelLoadError(file: path, tensor: Self.shown(entry.name), reason: "appears twice") }
                guard let layout = Self.typeLayouts[entry.type] else {
                    throw ModelLoadError(file: path, tensor: Self.shown(entry.name), reason: "unknown tensor type \(entry.type)")
                }
                guard entry.dimensions[0] % layout.blockElements == 0 else {
                    throw ModelLoadError(
                        file: path, tensor: Self.shown(entry.name),
                        reason: "\(layout.name) rows of \(entry.dimensions[0]) elements are not whole blocks of \(layout.blockElements)")
                }
                var elements = 1
                for dimension in entry.dimensions {
                    let (product, overflow) = elements.multipliedReportingOverflow(by: dimension)
                    guard !overflow, product < 1 << 44 else { throw ModelLoadError(file: path, tensor: Self.shown(entry.name), reason: "shape \(entry.dimensions) overflows") }
                    elements = product
                }
                let byteCount = elements / layout.blockElements * layout.blockBytes
                guard entry.relative % UInt64(alignment) == 0, entry.relative < UInt64(length),
                    dataStart + Int(entry.relative) + byteCount <= length
                else {
                    throw ModelLoadError(
                        file: path, tensor: Self.shown(entry.name),
                        reason: "offset \(entry.relative) + \(byteCount) bytes lies outside the file's \(length - dataStart) bytes of data or is unaligned")
                }
                tensors.append(TensorInfo(name: entry.name, dimensions: entry.dimensions, type: entry.type, offset: dataStart + Int(entry.relative), byteCount: byteCount))
            }
            self.tensors = tensors
            indices = Dictionary(uniqueKeysWithValues: tensors.enumerated().map { ($0.element.name, $0.offset) })
            // The metadata is copied out: its pages (a vocabulary's megabytes) need not stay.
            Self.release(mapped, 0..<dataStart)
        } catch {
            munmap(mapped, length)
            throw error
        }
    }

    deinit { munmap(mapping, mappedLength) }

    /// The tensor named `name`, if the file has it.
    package func tensor(_ name: String) -> TensorInfo? { indices[name].map { tensors[$0] } }

    /// A metadata value that must be a whole number of at least 1 (`fallback` where absent).
    package func positiveInt(_ key: String, default fallback: Int? = nil) throws -> Int {
        guard let value = metadata[key] else {
            if let fallback { return fallback }
            throw ModelLoadError(file: path, reason: "metadata '\(key)' is missing")
        }
        guard let number = value.int, number > 0, number < 1 << 31 else {
            throw ModelLoadError(file: path, reason: "metadata '\(key)' must be a whole number of at least 1")
        }
        return number
    }

    /// A tensor's bytes (`byteCount` of them, checked to lie in the file when it was read).
    package func data(_ tensor: TensorInfo) -> UnsafeRawPointer { UnsafeRawPointer(mapping) + tensor.offset }

    /// Lets go of a tensor's pages once it has been copied (packed or widened): while a model
    /// loads, the file's pages would otherwise stay resident beside the copies until the file
    /// closes. Reading the tensor again reads the file again.
    package func release(_ tensor: TensorInfo) { release(tensor.offset..<(tensor.offset + tensor.byteCount)) }

    /// Lets go of the whole pages within `bytes` (offsets from the start of the file).
    package func release(_ bytes: Range<Int>) { Self.release(mapping, bytes) }

    private static func release(_ mapping: UnsafeMutableRawPointer, _ bytes: Range<Int>) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (bytes.lowerBound + page - 1) / page * page, end = bytes.upperBound / page * page
        if end > start { madvise(mapping + start, end - start, MADV_DONTNEED) }
    }

    /// The name of a tensor type (ggml's numbering).
    static func typeName(_ type: UInt32) -> String { typeLayouts[type]?.name ?? "type \(type)" }

    /// A name from the file as an error message shows it: control characters escaped (a
    /// corrupt file's names may hold newlines), at most 200 characters.
    static func shown(_ name: String) -> String {
        var out = ""
        for scalar in name.unicodeScalars.prefix(200) {
            if scalar.value < 0x20 || scalar.value == 0x7F || (0x80..<0xA0).contains(scalar.value) || scalar == "\u{2028}" || scalar == "\u{2029}" {
                out += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// A metadata value, or a load error naming the key.
    package func require(_ key: String) throws -> GGUFValue {
        guard let value = metadata[key] else { throw ModelLoadError(file: path, reason: "metadata '\(key)' is missing") }
        return value
    }

    /// A metadata array of strings, as bytes.
    package func strings(_ key: String) throws -> [[UInt8]] {
        guard case .array(let items) = try require(key) else { throw ModelLoadError(file: path, reason: "metadata '\(key)' is not an array") }
        return try items.map { item in
            guard case .string(let bytes) = item else { throw ModelLoadError(file: path, reason: "metadata '\(key)' is not an array of strings") }
            return bytes
        }
    }

    /// A metadata array of numbers.
    package func numbers(_ key: String) throws -> [Double] {
        guard case .array(let items) = try require(key) else { throw ModelLoadError(file: path, reason: "metadata '\(key)' is not an array") }
        return try items.map { item in
            guard let number = item.double else { throw ModelLoadError(file: path, reason: "metadata '\(key)' is not an array of numbers") }
            return number
        }
    }

    /// Reads the metadata and tensor table, bounds-checked.
    private struct Reader {
        let base: UnsafeRawPointer
        let length: Int
        let path: String
        var offset = 0

        init(base: UnsafeRawPointer, length: Int, path: String) {
            self.base = base
            self.length = length
            self.path = path
        }

        mutating func take(_ count: Int, what: String) throws -> UnsafeRawPointer {
            guard count >= 0, count <= length - offset else {
                throw ModelLoadError(file: path, reason: "truncated at byte \(offset) reading \(what)")
            }
            defer { offset += count }
            return base + offset
        }

        mutating func scalar<T: FixedWidthInteger>(_ type: T.Type, what: String) throws -> T {
            T(littleEndian: try take(MemoryLayout<T>.size, what: what).loadUnaligned(as: T.self))
        }

        mutating func bytes(_ count: Int, what: String) throws -> [UInt8] {
            Array(UnsafeRawBufferPointer(start: try take(count, what: what), count: count))
        }

        /// A count that must fit what is left of the file (each item takes at least a byte).
        mutating func count(what: String) throws -> Int {
            let value = try scalar(UInt64.self, what: what)
            guard value <= UInt64(length - offset) else { throw ModelLoadError(file: path, reason: "\(what) \(value) exceeds the file") }
            return Int(value)
        }

        mutating func string(what: String) throws -> [UInt8] {
            try bytes(try count(what: what + " length"), what: what)
        }

        mutating func value(type: UInt32, what: String, depth: Int) throws -> GGUFValue {
            switch type {
            case 0: return .unsigned(UInt64(try scalar(UInt8.self, what: what)))
            case 1: return .signed(Int64(try scalar(Int8.self, what: what)))
            case 2: return .unsigned(UInt64(try scalar(UInt16.self, what: what)))
            case 3: return .signed(Int64(try scalar(Int16.self, what: what)))
            case 4: return .unsigned(UInt64(try scalar(UInt32.self, what: what)))
            case 5: return .signed(Int64(try scalar(Int32.self, what: what)))
            case 6: return .float(Double(Float(bitPattern: try scalar(UInt32.self, what: what))))
            case 7:
                let byte = try scalar(UInt8.self, what: what)
                guard byte <= 1 else { throw ModelLoadError(file: path, reason: "\(what) is a bool of value \(byte)") }
                return .bool(byte == 1)
            case 8: return .string(try string(what: what))
            case 9:
                guard depth == 0 else { throw ModelLoadError(file: path, reason: "\(what) nests arrays") }
                let itemType = try scalar(UInt32.self, what: what + " item type")
                let count = try count(what: what + " item count")
                var items: [GGUFValue] = []
                items.reserveCapacity(count)
                for _ in 0..<count { items.append(try value(type: itemType, what: what, depth: depth + 1)) }
                return .array(items)
            case 10: return .unsigned(try scalar(UInt64.self, what: what))
            case 11: return .signed(try scalar(Int64.self, what: what))
            case 12: return .float(Double(bitPattern: try scalar(UInt64.self, what: what)))
            default: throw ModelLoadError(file: path, reason: "\(what) has unknown value type \(type)")
            }
        }
    }
}
