import Foundation

/// Why a model could not be loaded. Always names the file and, where there is one, the tensor.
public struct ModelLoadError: Error, Equatable, Sendable, CustomStringConvertible {
    public var file: String
    package var tensor: String?
    public var reason: String

    public init(file: String, tensor: String? = nil, reason: String) {
        self.file = file
        self.tensor = tensor
        self.reason = reason
    }

    public var description: String {
        "\((file as NSString).lastPathComponent)\(tensor.map { ": tensor '\($0)'" } ?? ""): \(reason)"
    }
}

/// Maps a whole file read-only; fails naming the file when it cannot be opened or mapped, or
/// is shorter than `minimumLength` (`tooShort` says why that matters).
func mapReadOnly(_ path: String, minimumLength: Int, tooShort: String) throws -> (pointer: UnsafeMutableRawPointer, length: Int) {
    let descriptor = open(path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { throw ModelLoadError(file: path, reason: "cannot open: \(String(cString: strerror(errno)))") }
    defer { close(descriptor) }
    var info = stat()
    guard fstat(descriptor, &info) == 0 else { throw ModelLoadError(file: path, reason: "cannot stat") }
    let length = Int(info.st_size)
    guard length >= minimumLength else { throw ModelLoadError(file: path, reason: "truncated: \(length) bytes, \(tooShort)") }
    guard let mapped = mmap(nil, length, PROT_READ, MAP_PRIVATE, descriptor, 0), mapped != MAP_FAILED else {
        throw ModelLoadError(file: path, reason: "cannot map the file")
    }
    return (mapped, length)
}

/// How a model file stores floating-point numbers (safetensors' F32/F16/BF16, GGUF's types 0, 1, 30).
enum StoredFloat {
    case f32, f16, bf16

    /// `count` little-endian numbers from `source` (alignment not required) as Float32, exactly.
    func widened(_ source: UnsafeRawPointer, count: Int) -> FloatBuffer {
        let buffer = FloatBuffer(count: count, zeroed: false)
        switch self {
        case .f32:
            for i in 0..<count { buffer.pointer[i] = Float(bitPattern: UInt32(littleEndian: source.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self))) }
        case .f16:
            for i in 0..<count {
                buffer.pointer[i] = Float(Float16(bitPattern: UInt16(littleEndian: source.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))))
            }
        case .bf16:
            for i in 0..<count {
                buffer.pointer[i] = Float(bitPattern: UInt32(UInt16(littleEndian: source.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))) << 16)
            }
        }
        return buffer
    }
}

/// A safetensors file, memory-mapped. Tensors are converted to Float32 (from F32, F16 or BF16)
/// when read. The header is validated on open: offsets inside the file, sizes matching
/// shapes, no overlaps, known dtypes.
package final class SafetensorsFile: ModelWeights, @unchecked Sendable {
    package struct TensorInfo: Sendable, Equatable {
        package var dtype: String
        package var shape: [Int]
        var start: Int
        var end: Int

        package var elementCount: Int { shape.reduce(1, *) }
    }

    package let path: String
    package let tensors: [String: TensorInfo]
    package let metadata: [String: String]
    private let mapping: UnsafeMutableRawPointer
    private let mappedLength: Int
    private let dataStart: Int

    /// Every safetensors dtype; only F32, F16 and BF16 can be read as floats.
    static let dtypeSizes = [
        "F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1,
        "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    ]

    package init(path: String) throws {
        self.path = path
        let (mapped, length) = try mapReadOnly(path, minimumLength: 8, tooShort: "no header")
        mapping = mapped
        mappedLength = length
        do {
            let headerLength = Int(mapped.loadUnaligned(as: UInt64.self).littleEndian)
            guard headerLength > 1, headerLength <= 100_000_000, 8 + headerLength <= length else {
                throw ModelLoadError(file: path, reason: "truncated or corrupt: header of \(headerLength) bytes in a \(length)-byte file")
            }
            dataStart = 8 + headerLength
            let headerData = Data(bytes: mapped + 8, count: headerLength)
            guard let header = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any] else {
                throw ModelLoadError(file: path, reason: "header is not a JSON object")
            }
            var tensors: [String: TensorInfo] = [:]
            var metadata: [String: String] = [:]
            for (name, value) in header {
                if name == "__metadata__" {
                    for (key, item) in value as? [String: Any] ?? [:] { metadata[key] = item as? String }
                    continue
                }
                guard let entry = value as? [String: Any], let dtype = entry["dtype"] as? String,
                    let shape = entry["shape"] as? [Int], let offsets = entry["data_offsets"] as? [Int], offsets.count == 2
                else { throw ModelLoadError(file: path, tensor: name, reason: "malformed header entry") }
                guard let size = Self.dtypeSizes[dtype] else {
                    throw ModelLoadError(file: path, tensor: name, reason: "unknown dtype \(dtype)")
                }
                guard shape.allSatisfy({ $0 >= 0 }) else { throw ModelLoadError(file: path, tensor: name, reason: "negative dimension") }
                // A header may claim anything: sizes are multiplied with overflow checks.
                var bytes = size
                for dimension in shape {
                    let (product, overflow) = bytes.multipliedReportingOverflow(by: dimension)
                    guard !overflow else { throw ModelLoadError(file: path, tensor: name, reason: "shape \(shape) is too large") }
                    bytes = product
                }
                guard offsets[0] >= 0, offsets[1] >= offsets[0], offsets[1] - offsets[0] == bytes else {
                    throw ModelLoadError(
                        file: path, tensor: name,
                        reason: "data size \(offsets[1] - offsets[0]) bytes does not match shape \(shape) of \(dtype)")
                }
                guard offsets[1] <= length - dataStart else {
                    throw ModelLoadError(file: path, tensor: name, reason: "truncated: data ends past the end of the file")
                }
                tensors[name] = TensorInfo(dtype: dtype, shape: shape, start: offsets[0], end: offsets[1])
            }
            let ranges = tensors.values.map { ($0.start, $0.end) }.filter { $0.0 < $0.1 }.sorted { $0.0 < $1.0 }
            for index in ranges.indices.dropFirst() where ranges[index].0 < ranges[index - 1].1 {
                throw ModelLoadError(file: path, reason: "corrupt: tensor data ranges overlap")
            }
            self.tensors = tensors
            self.metadata = metadata
        } catch {
            munmap(mapped, length)
            throw error
        }
    }

    deinit { munmap(mapping, mappedLength) }

    /// The tensor `name` as Float32, checking its shape when `shape` is given.
    package func floats(_ name: String, shape expected: [Int]? = nil) throws -> FloatBuffer {
        guard let info = tensors[name] else { throw ModelLoadError(file: path, tensor: name, reason: "missing tensor") }
        if let expected, expected != info.shape {
            throw ModelLoadError(file: path, tensor: name, reason: "shape \(info.shape), expected \(expected)")
        }
        let stored: StoredFloat
        switch info.dtype {
        case "F32": stored = .f32
        case "F16": stored = .f16
        case "BF16": stored = .bf16
        default:
            throw ModelLoadError(file: path, tensor: name, reason: "dtype \(info.dtype) cannot be read as floats (supported: F32, F16, BF16)")
        }
        return stored.widened(UnsafeRawPointer(mapping + dataStart + info.start), count: info.elementCount)
    }

    package func contains(_ name: String) -> Bool { tensors[name] != nil }

    package func shape(_ name: String) -> [Int]? { tensors[name]?.shape }

    /// `floats` with the shape required (as `ModelWeights` asks).
    package func floats(_ name: String, shape: [Int]) throws -> FloatBuffer { try floats(name, shape: Optional(shape)) }
}

/// Writes Float32 tensors as a safetensors file (fixtures, benchmarks, converted models).
package enum SafetensorsWriter {
    package static func write(_ tensors: [(name: String, shape: [Int], values: UnsafeBufferPointer<Float>)], to path: String) throws {
        var header: [String: Any] = [:]
        var offset = 0
        for tensor in tensors {
            let bytes = tensor.values.count * 4
            header[tensor.name] = ["dtype": "F32", "shape": tensor.shape, "data_offsets": [offset, offset + bytes]]
            offset += bytes
        }
        var headerData = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while (8 + headerData.count) % 8 != 0 { headerData.append(0x20) }
        var output = Data()
        var length = UInt64(headerData.count).littleEndian
        output.append(Data(bytes: &length, count: 8))
        output.append(headerData)
        for tensor in tensors {
            output.append(Data(buffer: tensor.values))
        }
        guard FileManager.default.createFile(atPath: path, contents: output) else {
            throw ModelLoadError(file: path, reason: "cannot write")
        }
    }
}
