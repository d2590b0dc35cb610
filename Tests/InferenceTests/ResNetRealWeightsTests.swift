import Foundation
import Testing
@testable import Inference

@Suite struct ResNetRealWeightsTests {
    static let weights = SharedData.path("models/resnet20-cifar10/model.safetensors")
    static let images = SharedData.path("data/cifar10-test-sample")
    static let classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    /// A model folder around the shared weights: manifest and labels, weights linked.
    static func modelDirectory() throws -> String {
        let directory = NSTemporaryDirectory() + "mg-resnet20-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: directory + "/model.safetensors", withDestinationPath: try #require(weights))
        try classes.joined(separator: "\n").write(toFile: directory + "/labels.txt", atomically: true, encoding: .utf8)
        try #"{"engine": "resnet", "task": "image-classification", "options": {"input_size": 32}}"#
            .write(toFile: directory + "/model.json", atomically: true, encoding: .utf8)
        return directory
    }

    @Test(.enabled(if: weights != nil && images != nil, "../shared/models/resnet20-cifar10 or ../shared/data/cifar10-test-sample is absent; skipping"))
    func resnet20ClassifiesTheCIFARSampleAtLeast80PercentRight() throws {
        let directory = try Self.modelDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let classifier = try ImageClassifier(directory: directory)
        #expect(classifier.model.family == .cifar)
        #expect(classifier.model.blockCounts == [3, 3, 3])
        #expect(classifier.model.description == "ResNet-20 (CIFAR)")
        let root = try #require(Self.images)
        var correct = 0
        var total = 0
        for (index, name) in Self.classes.enumerated() {
            let files = try FileManager.default.contentsOfDirectory(atPath: root + "/" + name).sorted()
            // Batches of 50: one forward pass each.
            for batch in stride(from: 0, to: files.count, by: 50) {
                let encoded = try files[batch..<min(batch + 50, files.count)].map {
                    Array(try Data(contentsOf: URL(fileURLWithPath: root + "/" + name + "/" + $0)))
                }
                for predictions in try classifier.classify(encoded, topK: 1) {
                    if predictions[0].label == Self.classes[index] { correct += 1 }
                    total += 1
                }
            }
        }
        #expect(total == 1000)
        let accuracy = Double(correct) / Double(total)
        #expect(accuracy >= 0.80, "top-1 accuracy \(accuracy)")
    }
}
