import Foundation
import Testing
@testable import Inference

@Suite struct GPT2TokenizerTests {
    static let directory = SharedData.path("tokenizers/gpt2")

    @Test(.enabled(if: directory != nil, "../shared/tokenizers/gpt2 is absent; skipping the real-vocabulary vectors"))
    func everyReferenceVectorEncodesExactlyAndDecodesBack() throws {
        let directory = try #require(Self.directory)
        let tokenizer = try GPT2Tokenizer(directory: directory)
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
        let tokenizer = try GPT2Tokenizer(directory: try #require(Self.directory))
        for text in ["e\u{301}\u{302} combining", "👩‍👩‍👧‍👦 family 🏳️‍🌈", "ﬁ ligature ⅫⅩ", "\u{0}\u{1}\t\r\n", "日本語のテキスト", "  leading", "trailing  ", "It's we'll THEY'RE"] {
            #expect(tokenizer.decode(tokenizer.encode(text)) == text)
        }
    }

    @Test func pretokenizationFollowsGPT2sPattern() {
        #expect(GPT2Tokenizer.pretokenize("Hello world") == ["Hello", " world"])
        #expect(GPT2Tokenizer.pretokenize("a   b") == ["a", "  ", " b"])
        #expect(GPT2Tokenizer.pretokenize("a \nb") == ["a", " ", "\n", "b"])
        #expect(GPT2Tokenizer.pretokenize("it's 42!!") == ["it", "'s", " 42", "!!"])
        #expect(GPT2Tokenizer.pretokenize("end  ") == ["end", "  "])
    }
}
