import Foundation
import Testing
@testable import Inference

@Suite struct SafetensorsTests {
    let directory = NSTemporaryDirectory() + "mg-safetensors-\(UUID().uuidString)"

    init() throws { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }

    func write(_ header: [String: Any], data: [UInt8], name: String = "model.safetensors") throws -> String {
        var json = try JSONSerialization.data(withJSONObject: header)
        var length = UInt64(json.count).littleEndian
        var bytes = Data(bytes: &length, count: 8)
        bytes.append(json)
        bytes.append(contentsOf: data)
        json = bytes
        let path = directory + "/" + name
        _ = FileManager.default.createFile(atPath: path, contents: json)
        return path
    }

    @Test func readsF32F16AndBF16AsFloat() throws {
        let f32 = [Float(1.5), -2].flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
        let f16 = [Float16(0.25), Float16(-3)].flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
        let bf16: [UInt8] = [UInt16(Float(6.5).bitPattern >> 16), UInt16(Float(-0.125).bitPattern >> 16)].flatMap { withUnsafeBytes(of: $0.littleEndian, Array.init) }
        let path = try write([
            "a": ["dtype": "F32", "shape": [2], "data_offsets": [0, 8]],
            "b": ["dtype": "F16", "shape": [2], "data_offsets": [8, 12]],
            "c": ["dtype": "BF16", "shape": [1, 2], "data_offsets": [12, 16]],
            "ids": ["dtype": "I64", "shape": [0], "data_offsets": [16, 16]],
            "__metadata__": ["format": "pt"],
        ], data: f32 + f16 + bf16)
        let file = try SafetensorsFile(path: path)
        #expect(try file.floats("a").array == [1.5, -2])
        #expect(try file.floats("b").array == [0.25, -3])
        #expect(try file.floats("c", shape: [1, 2]).array == [6.5, -0.125])
        #expect(file.metadata["format"] == "pt")
        #expect(throws: ModelLoadError.self) { try file.floats("ids") }
    }

    @Test func badFilesAreTypedErrorsNamingFileAndTensor() throws {
        // Truncated: data ends past the file.
        var path = try write(["w": ["dtype": "F32", "shape": [4], "data_offsets": [0, 16]]], data: [0, 0, 0, 0])
        #expect(throws: ModelLoadError(file: path, tensor: "w", reason: "truncated: data ends past the end of the file")) {
            try SafetensorsFile(path: path)
        }
        // Header cut short.
        path = directory + "/short.safetensors"
        _ = FileManager.default.createFile(atPath: path, contents: Data([200, 0, 0, 0, 0, 0, 0, 0, 123]))
        #expect(throws: ModelLoadError.self) { try SafetensorsFile(path: path) }
        _ = FileManager.default.createFile(atPath: path, contents: Data([1, 2]))
        #expect(throws: ModelLoadError.self) { try SafetensorsFile(path: path) }
        // Size inconsistent with the shape.
        path = try write(["w": ["dtype": "F32", "shape": [3], "data_offsets": [0, 8]]], data: [UInt8](repeating: 0, count: 8))
        #expect(throws: ModelLoadError.self) { try SafetensorsFile(path: path) }
        // Unknown dtype.
        path = try write(["w": ["dtype": "Q4_K", "shape": [2], "data_offsets": [0, 2]]], data: [0, 0])
        do {
            _ = try SafetensorsFile(path: path)
            Issue.record("unknown dtype accepted")
        } catch let error as ModelLoadError {
            #expect(error.tensor == "w")
            #expect(error.description.contains("model.safetensors"))
            #expect(error.reason.contains("Q4_K"))
        }
        // Sizes whose products overflow, and offsets past any file (these trapped once).
        path = try write(["w": ["dtype": "F32", "shape": [1 << 40, 1 << 40], "data_offsets": [0, 8]]], data: [UInt8](repeating: 0, count: 8))
        #expect(throws: ModelLoadError(file: path, tensor: "w", reason: "shape [1099511627776, 1099511627776] is too large")) {
            try SafetensorsFile(path: path)
        }
        path = try write(["w": ["dtype": "U8", "shape": [Int.max - 1], "data_offsets": [1, Int.max]]], data: [0])
        #expect(throws: ModelLoadError(file: path, tensor: "w", reason: "truncated: data ends past the end of the file")) {
            try SafetensorsFile(path: path)
        }
        // Overlapping ranges.
        path = try write([
            "a": ["dtype": "F32", "shape": [2], "data_offsets": [0, 8]],
            "b": ["dtype": "F32", "shape": [2], "data_offsets": [4, 12]],
        ], data: [UInt8](repeating: 0, count: 12))
        #expect(throws: ModelLoadError.self) { try SafetensorsFile(path: path) }
        #expect(throws: ModelLoadError.self) { try SafetensorsFile(path: directory + "/absent.safetensors") }
    }

    @Test func missingTensorsAndWrongShapesNameTheTensor() throws {
        // A GPT-2 folder with one tensor of the wrong shape, then one missing.
        let model = directory + "/gpt2"
        try FileManager.default.createDirectory(atPath: model, withIntermediateDirectories: true)
        let fixture = SharedData.fixtures + "/tiny-gpt2"
        try FileManager.default.copyItem(atPath: fixture + "/config.json", toPath: model + "/config.json")
        let source = try SafetensorsFile(path: fixture + "/model.safetensors")
        var tensors: [(String, [Int], [Float])] = []
        for (name, info) in source.tensors.sorted(by: { $0.key < $1.key }) {
            var values = try source.floats(name).array
            var shape = info.shape
            if name == "transformer.h.1.mlp.c_fc.weight" {
                shape = [shape[1], shape[0]]
            }
            if name == "transformer.ln_f.bias" { continue }
            values = Array(values)
            tensors.append((name, shape, values))
        }
        func save(_ list: [(String, [Int], [Float])]) throws {
            var pointers: [(name: String, shape: [Int], values: UnsafeBufferPointer<Float>)] = []
            var storage: [UnsafeMutableBufferPointer<Float>] = []
            defer { storage.forEach { $0.deallocate() } }
            for (name, shape, values) in list {
                let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: values.count)
                _ = buffer.initialize(from: values)
                storage.append(buffer)
                pointers.append((name, shape, UnsafeBufferPointer(buffer)))
            }
            try SafetensorsWriter.write(pointers, to: model + "/model.safetensors")
        }
        try save(tensors)
        #expect(throws: ModelLoadError.self) { try GPT2Model(directory: model) }
        do {
            _ = try GPT2Model(directory: model)
        } catch let error as ModelLoadError {
            #expect(error.tensor == "transformer.h.1.mlp.c_fc.weight")
            #expect(error.reason.contains("expected"))
        }
        tensors = tensors.map { $0.0 == "transformer.h.1.mlp.c_fc.weight" ? ($0.0, [64, 256], $0.2) : $0 }
        try save(tensors)
        do {
            _ = try GPT2Model(directory: model)
            Issue.record("missing tensor accepted")
        } catch let error as ModelLoadError {
            #expect(error.tensor == "transformer.ln_f.bias")
            #expect(error.reason == "missing tensor")
        }
    }
}
