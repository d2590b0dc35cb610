import Foundation
import Testing
@testable import Inference

/// The GGUF reader against files written here byte by byte, and against thousands of truncated
/// and corrupted copies: each loads or fails with a `ModelLoadError`, never a crash.
@Suite struct GGUFTests {
    /// A small GGUF v3 file: metadata of every kind, an F32 and a Q8_0 tensor.
    static func sample() -> [UInt8] {
        var out: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func string(_ s: String) { u64(UInt64(s.utf8.count)); out += Array(s.utf8) }
        out += Array("GGUF".utf8)
        u32(3)
        u64(2)  // tensors
        u64(5)  // metadata
        string("general.architecture"); u32(8); string("llama")
        string("llama.block_count"); u32(4); u32(2)
        string("tokenizer.ggml.tokens"); u32(9); u32(8); u64(3); string("<s>"); string("a"); string("\u{2581}b")
        string("tokenizer.ggml.scores"); u32(9); u32(6); u64(3)
        for score: Float in [0, -1, -2] { u32(score.bitPattern) }
        string("tokenizer.ggml.add_bos_token"); u32(7); out.append(1)
        string("a.weight"); u32(2); u64(32); u64(2); u32(0); u64(0)
        string("b.weight"); u32(1); u64(64); u32(8); u64(256)
        while out.count % 32 != 0 { out.append(0) }
        out += [UInt8](repeating: 1, count: 256)  // a: 64 floats
        out += [UInt8](repeating: 2, count: 68)  // b: two Q8_0 blocks
        return out
    }

    static func write(_ bytes: [UInt8]) throws -> String {
        let path = NSTemporaryDirectory() + "modelgate-gguf-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).gguf"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test func readsMetadataAndTheTensorTable() throws {
        let path = try Self.write(Self.sample())
        defer { try? FileManager.default.removeItem(atPath: path) }
        let file = try GGUFFile(path: path)
        #expect(file.version == 3)
        #expect(file.metadata["general.architecture"]?.text == "llama")
        #expect(file.metadata["llama.block_count"]?.int == 2)
        #expect(try file.strings("tokenizer.ggml.tokens").map { String(decoding: $0, as: UTF8.self) } == ["<s>", "a", "\u{2581}b"])
        #expect(try file.numbers("tokenizer.ggml.scores") == [0, -1, -2])
        #expect(file.metadata["tokenizer.ggml.add_bos_token"] == .bool(true))
        #expect(file.tensors.map(\.name) == ["a.weight", "b.weight"])
        #expect(file.tensors[0].dimensions == [32, 2] && file.tensors[0].byteCount == 256)
        #expect(file.tensors[1].byteCount == 68 && file.tensors[1].offset == file.tensors[0].offset + 256)
    }

    @Test func truncatedAndCorruptedFilesFailWithALineNeverACrash() throws {
        let good = Self.sample()
        var failures = 0, loads = 0
        func attempt(_ bytes: [UInt8]) throws {
            let path = try Self.write(bytes)
            defer { try? FileManager.default.removeItem(atPath: path) }
            do {
                _ = try GGUFFile(path: path)
                loads += 1
            } catch let error as ModelLoadError {
                #expect(!error.description.isEmpty && !error.description.contains("\n"))
                failures += 1
            }
        }
        // Every truncation fails: the tensors' data no longer fits.
        for length in 0..<good.count {
            let before = failures
            try attempt(Array(good[..<length]))
            #expect(failures == before + 1, "truncated to \(length) bytes loaded")
        }
        // Random corruption of the header and table: bytes flipped, counts and offsets huge.
        var random = SystemRandomNumberGenerator()
        let header = 330
        for _ in 0..<2000 {
            var bytes = good
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                let index = Int.random(in: 0..<header, using: &random)
                bytes[index] = [0x00, 0xFF, 0x7F, 0x80, UInt8.random(in: 0...255, using: &random)].randomElement(using: &random) ?? 0
            }
            try attempt(bytes)
        }
        #expect(failures > good.count + 100)
        #expect(loads > 0)  // some flips land in text that may change freely
    }

    @Test func errorsNameTheKeyOrTensor() throws {
        var bytes = Self.sample()
        // The Q8_0 tensor's type (8) becomes an unknown type.
        let name = Array("b.weight".utf8)
        let at = try #require((0..<(bytes.count - name.count)).first { Array(bytes[$0..<($0 + name.count)]) == name })
        let type = at + name.count + 4 + 8  // dimension count, one dimension
        bytes[type] = 99
        var path = try Self.write(bytes)
        #expect { try GGUFFile(path: path) } throws: { "\($0)".contains("tensor 'b.weight'") && "\($0)".contains("unknown tensor type 99") }
        try? FileManager.default.removeItem(atPath: path)
        // A name with a newline (a corrupt file's) is shown escaped: the error stays one line.
        bytes[at + 1] = 0x0A
        path = try Self.write(bytes)
        #expect { try GGUFFile(path: path) } throws: { "\($0)".contains("tensor 'b\\u{a}weight'") && !"\($0)".contains("\n") }
        try? FileManager.default.removeItem(atPath: path)
        // A string array's count far past the file.
        bytes = Self.sample()
        let key = Array("tokenizer.ggml.tokens".utf8)
        let keyAt = try #require((0..<(bytes.count - key.count)).first { Array(bytes[$0..<($0 + key.count)]) == key })
        bytes[keyAt + key.count + 8 + 7] = 0x7F  // the item count's top byte
        path = try Self.write(bytes)
        #expect { try GGUFFile(path: path) } throws: { "\($0)".contains("'tokenizer.ggml.tokens'") }
        try? FileManager.default.removeItem(atPath: path)
    }
}
