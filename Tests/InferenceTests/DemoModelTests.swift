import Foundation
import Testing
@testable import Inference

@Suite struct DemoModelTests {
    static let corpus = SharedData.path("data/tinyshakespeare.txt")

    @Test func theShippedShakespeareModelLoads() throws {
        let directory = SharedData.repository.appendingPathComponent("models/shakespeare").path
        let manifest = try ModelManifest.load(directory: directory)
        #expect(manifest.engine == "transformer-lm")
        let model = try GPT2Model(directory: directory)
        let tokenizer = try BPETokenizer(directory: directory)
        #expect(model.config.vocabularySize == tokenizer.vocabularySize)
        #expect(tokenizer.decode(tokenizer.encode("ROMEO: What light")) == "ROMEO: What light")
    }

    @Test(.enabled(if: corpus != nil, "../shared/data/tinyshakespeare.txt is absent; skipping the word check"))
    func itWritesMostlyShakespeareanWords() async throws {
        let directory = SharedData.repository.appendingPathComponent("models/shakespeare").path
        let generator = TextGenerator(model: try GPT2Model(directory: directory), tokenizer: try BPETokenizer(directory: directory))
        defer { generator.shutdown() }
        var parameters = SamplingParameters()
        parameters.maxTokens = 100
        parameters.temperature = 0.7
        parameters.seed = 11
        var text = ""
        for try await event in try generator.generate(GenerationRequest(prompt: generator.tokenizer.encode("ROMEO:\n"), parameters: parameters)) {
            if case .delta(_, let delta, _) = event { text += delta }
        }
        let corpusText = try String(contentsOfFile: try #require(Self.corpus), encoding: .utf8)
        func words(_ text: String) -> [String] {
            text.lowercased().split { !$0.isLetter }.map(String.init).filter { $0.count > 1 }
        }
        let vocabulary = Set(words(corpusText))
        let generated = words(text)
        #expect(generated.count >= 20, "\(text)")
        let known = generated.filter(vocabulary.contains).count
        // Random bytes or an untrained model score near zero; the trained demo model writes words.
        #expect(Double(known) / Double(max(1, generated.count)) >= 0.6, "\(known)/\(generated.count) known words in: \(text)")
    }
}
