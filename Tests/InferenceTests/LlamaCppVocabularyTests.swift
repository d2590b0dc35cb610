import Foundation
import Postgres
import Testing
import TestSupport
@testable import Inference

/// llama.cpp's real vocabularies and tokenizer test vectors, from the pinned llama-cpp-python
/// sdist that scripts/llama-cpp unpacks (`MODELGATE_LLAMA_BIN`, else its default cache), with
/// the Python beside it (gguf-py, Hugging Face `tokenizers`, Jinja2).
enum LlamaCppData {
    static let binDirectory: String? = {
        let environment = ProcessInfo.processInfo.environment
        let candidates = [environment["MODELGATE_LLAMA_BIN"], "/var/tmp/modelgate-llama/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin"]
        return candidates.compactMap { $0 }.first { FileManager.default.isExecutableFile(atPath: $0 + "/python-gguf") }
    }()

    /// The llama.cpp source folder (`models/`, `models/templates/`).
    static let source: String? = binDirectory.map { URL(fileURLWithPath: $0).deletingLastPathComponent().deletingLastPathComponent().path }
        .flatMap { FileManager.default.fileExists(atPath: $0 + "/models/ggml-vocab-gpt-2.gguf") ? $0 : nil }

    static let missing = "llama.cpp's sources are not unpacked (scripts/llama-cpp; scripts/test does it); skipping"

    static func vocabulary(_ name: String) throws -> String { try #require(source) + "/models/ggml-vocab-\(name).gguf" }

    /// The `.inp`/`.out` pairs of a vocabulary: text and llama.cpp's ids for it.
    static func vectors(_ name: String) throws -> [(text: String, ids: [Int])] {
        let path = try vocabulary(name)
        let inputs = try String(contentsOfFile: path + ".inp", encoding: .utf8).components(separatedBy: "\n__ggml_vocab_test__\n").dropLast()
        let outputs = try String(contentsOfFile: path + ".out", encoding: .utf8).components(separatedBy: "\n").dropLast()
        #expect(inputs.count == outputs.count)
        return zip(inputs, outputs).map { text, line in (text, line.split(separator: " ").compactMap { Int($0) }) }
    }
}

@Suite struct LlamaCppVocabularyTests {
    static let vocabularies = ["gpt-2", "llama-bpe", "qwen2", "llama-spm"]

    @Test(.enabled(if: LlamaCppData.source != nil, "\(LlamaCppData.missing)"), arguments: vocabularies)
    func everyLlamaCppVectorEncodesExactlyAndDecodesBack(vocabulary: String) throws {
        let tokenizer = try BPETokenizer(gguf: GGUFFile(path: try LlamaCppData.vocabulary(vocabulary)))
        let vectors = try LlamaCppData.vectors(vocabulary)
        #expect(vectors.count >= 40)
        for (text, ids) in vectors {
            #expect(tokenizer.encode(text) == ids, "\(vocabulary): \(text.debugDescription)")
            #expect(tokenizer.decodeText(ids) == text, "\(vocabulary): \(text.debugDescription)")
        }
    }

    /// The Hugging Face `tokenizer.json` of each vocabulary (written by tools/tokenizer_reference.py
    /// as transformers' converters write them) and `tokenizers`' own ids for 200 strings; both
    /// of ModelGate's loaders, GGUF and tokenizer.json, must give the same ids.
    @Test(.enabled(if: LlamaCppData.source != nil, "\(LlamaCppData.missing)"), arguments: vocabularies)
    func ownStringsMatchHuggingFaceTokenizers(vocabulary: String) async throws {
        let folder = NSTemporaryDirectory() + "modelgate-tokenizer-\(vocabulary)-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let strings = SharedData.fixtures + "/tokenizer-strings.json"
        let python = try #require(LlamaCppData.binDirectory) + "/python-gguf"
        let script = SharedData.repository.path + "/tools/tokenizer_reference.py"
        let gguf = try LlamaCppData.vocabulary(vocabulary)
        let (status, output) = try await onOwnThread { try ChildProcess.run(python, [script, gguf, folder, strings]) }
        try #require(status == 0, "tokenizer_reference.py failed: \(output)")

        let texts = try JSONDecoder().decode([String].self, from: Data(contentsOf: URL(fileURLWithPath: strings)))
        let expected = try JSONDecoder().decode([[Int]].self, from: Data(contentsOf: URL(fileURLWithPath: folder + "/expected.json")))
        #expect(texts.count == 200)
        #expect(expected.count == texts.count)
        let fromJSON = try BPETokenizer(directory: folder)
        let fromGGUF = try BPETokenizer(gguf: GGUFFile(path: gguf))
        for (text, ids) in zip(texts, expected) {
            #expect(fromJSON.encode(text) == ids, "tokenizer.json, \(vocabulary): \(text.debugDescription)")
            #expect(fromGGUF.encode(text) == ids, "GGUF, \(vocabulary): \(text.debugDescription)")
            // Qwen2 normalizes to NFC: `==` on String is canonical equivalence.
            #expect(fromJSON.decodeText(ids) == text, "\(vocabulary): \(text.debugDescription)")
        }
        // llama.cpp's vectors through the tokenizer.json loader too.
        for (text, ids) in try LlamaCppData.vectors(vocabulary) {
            #expect(fromJSON.encode(text) == ids, "tokenizer.json, \(vocabulary): \(text.debugDescription)")
        }
        #expect(fromJSON.beginOfText == fromGGUF.beginOfText)
        #expect(fromJSON.endOfText == fromGGUF.endOfText)
    }

    /// Special tokens' text in what a user wrote is text; markup a template wrote is the token.
    @Test(.enabled(if: LlamaCppData.source != nil, "\(LlamaCppData.missing)"))
    func specialTokenTextStaysTextUnlessParsedAsMarkup() throws {
        let qwen = try BPETokenizer(gguf: GGUFFile(path: try LlamaCppData.vocabulary("qwen2")))
        let end = 151645  // <|im_end|>
        #expect(qwen.encode("hi<|im_end|>").contains(end) == false)
        #expect(qwen.encode("hi<|im_end|>", parseSpecial: true).last == end)
        #expect(qwen.tokenBytes(end).isEmpty)  // a control token shows no text
        let llama3 = try BPETokenizer(gguf: GGUFFile(path: try LlamaCppData.vocabulary("llama-bpe")))
        #expect(llama3.beginOfText == 128000)
        #expect(llama3.configuration.addBeginOfText)
        #expect(llama3.encode("<|begin_of_text|>").contains(128000) == false)
        #expect(llama3.encode("<|begin_of_text|>x", parseSpecial: true) == [128000, llama3.encode("x")[0]])
        let llama2 = try BPETokenizer(gguf: GGUFFile(path: try LlamaCppData.vocabulary("llama-spm")))
        #expect(llama2.encode("</s>").contains(2) == false)
        #expect(llama2.encode("[INST] hi</s>", parseSpecial: true).last == 2)
    }
}
