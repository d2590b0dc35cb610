import Foundation
import Testing
@testable import Inference

@Suite struct BPETokenizerTests {
    static let directory = SharedData.path("tokenizers/gpt2")

    @Test(.enabled(if: directory != nil, "../shared/tokenizers/gpt2 is absent; skipping the real-vocabulary vectors"))
    func everyReferenceVectorEncodesExactlyAndDecodesBack() throws {
        let directory = try #require(Self.directory)
        let tokenizer = try BPETokenizer(directory: directory)
        #expect(tokenizer.vocabularySize == 50257)
        #expect(tokenizer.endOfText == 50256)
        let inputs = try String(contentsOfFile: directory + "/test-vectors.inp", encoding: .utf8)
            .components(separatedBy: "\n__ggml_vocab_test__\n")
        let outputs = try String(contentsOfFile: directory + "/test-vectors.out", encoding: .utf8)
            .components(separatedBy: "\n")
        // Each case is followed by a separator and each id line by a newline: drop the empty tails.
        let cases = Array(inputs.dropLast())
        let expected = Array(outputs.dropLast())
        #expect(cases.count == expected.count)
        #expect(cases.count >= 46)
        for (text, line) in zip(cases, expected) {
            let ids = line.split(separator: " ").compactMap { Int($0) }
            #expect(tokenizer.encode(text) == ids, "\(text.debugDescription)")
            #expect(tokenizer.decode(ids) == text)
        }
    }

    @Test(.enabled(if: directory != nil, "../shared/tokenizers/gpt2 is absent"))
    func anyUTF8RoundTrips() throws {
        let tokenizer = try BPETokenizer(directory: try #require(Self.directory))
        for text in ["e\u{301}\u{302} combining", "👩‍👩‍👧‍👦 family 🏳️‍🌈", "ﬁ ligature ⅫⅩ", "\u{0}\u{1}\t\r\n", "日本語のテキスト", "  leading", "trailing  ", "It's we'll THEY'RE"] {
            #expect(tokenizer.decode(tokenizer.encode(text)) == text)
        }
    }

    /// Canonically equivalent spellings (NFC and NFD) are different bytes and different tokens:
    /// whichever comes first must not decide the tokens of the other (a `String`-keyed cache
    /// once did, across requests and tenants).
    static let equivalentPairs: [(String, String)] = [
        ("p \u{226F} q", "p >\u{338} q"),  // ≯ and > + combining long solidus overlay
        ("\u{D55C}\u{AD6D}\u{C5B4} \u{D14D}\u{C2A4}\u{D2B8}", "\u{1112}\u{1161}\u{11AB}\u{1100}\u{116E}\u{11A8}\u{110B}\u{1165} \u{1110}\u{1166}\u{11A8}\u{1109}\u{1173}\u{1110}\u{1173}"),  // 한국어 텍스트, NFC and NFD
        ("caf\u{E9}", "cafe\u{301}"),
    ]

    static func checkEquivalentPairs(_ makeTokenizer: () throws -> BPETokenizer) throws {
        for (composed, decomposed) in equivalentPairs {
            for order in [[composed, decomposed], [decomposed, composed]] {
                let tokenizer = try makeTokenizer()
                let first = tokenizer.encode(order[0]), second = tokenizer.encode(order[1])
                #expect(tokenizer.bytes(first) == Array(order[0].utf8), "\(order[0].debugDescription)")
                #expect(tokenizer.bytes(second) == Array(order[1].utf8), "\(order[1].debugDescription) after \(order[0].debugDescription)")
                // Each on its own, on a fresh tokenizer, gives the same tokens.
                #expect(try makeTokenizer().encode(order[1]) == second)
            }
        }
    }

    @Test func canonicallyEquivalentTextKeepsItsOwnBytesWithTheDemoVocabulary() throws {
        let directory = SharedData.repository.appendingPathComponent("models/shakespeare").path
        try Self.checkEquivalentPairs { try BPETokenizer(directory: directory) }
    }

    @Test(.enabled(if: directory != nil, "../shared/tokenizers/gpt2 is absent"))
    func canonicallyEquivalentTextKeepsItsOwnTokensWithGPT2sVocabulary() throws {
        let directory = try #require(Self.directory)
        try Self.checkEquivalentPairs { try BPETokenizer(directory: directory) }
        // Hugging Face's counts for the Korean pair: 9 tokens composed, 24 decomposed (the repro).
        let tokenizer = try BPETokenizer(directory: directory)
        let (composed, decomposed) = Self.equivalentPairs[1]
        let decomposedFirst = tokenizer.encode(decomposed).count
        #expect(tokenizer.encode(composed).count < decomposedFirst)
    }

    @Test func pretokenizationFollowsGPT2sPattern() {
        #expect(PreTokenizer.gpt2(individualDigits: false).pieces("Hello world") == ["Hello", " world"])
        #expect(PreTokenizer.gpt2(individualDigits: false).pieces("a   b") == ["a", "  ", " b"])
        #expect(PreTokenizer.gpt2(individualDigits: false).pieces("a \nb") == ["a", " ", "\n", "b"])
        #expect(PreTokenizer.gpt2(individualDigits: false).pieces("it's 42!!") == ["it", "'s", " 42", "!!"])
        #expect(PreTokenizer.gpt2(individualDigits: false).pieces("end  ") == ["end", "  "])
    }
}
