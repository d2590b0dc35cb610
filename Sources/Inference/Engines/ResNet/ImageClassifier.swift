import Foundation

/// One predicted label.
public struct Prediction: Sendable, Equatable {
    public var label: String
    public var score: Float
}

/// Decode -> preprocess -> ResNet -> softmax -> top-k, for a model folder holding `model.json`,
/// the weights (safetensors) and `labels.txt` (one label per line, in class order).
public final class ImageClassifier: Sendable {
    package let model: ResNetModel
    public let labels: [String]
    package let preprocessing: ImagePreprocessing
    public let decoder: ImageDecoder

    public init(directory: String, manifest: ModelManifest? = nil, decoder: ImageDecoder = ImageDecoder()) throws {
        let manifest = try manifest ?? ModelManifest.load(directory: directory)
        model = try ResNetModel(weights: SafetensorsFile(path: manifest.file("weights", default: "model.safetensors", in: directory)))
        let labelsPath = manifest.file("labels", default: "labels.txt", in: directory)
        if let text = try? String(contentsOfFile: labelsPath, encoding: .utf8) {
            labels = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty }
        } else {
            labels = (0..<model.classes).map { "class_\($0)" }
        }
        guard labels.count == model.classes else {
            throw ModelLoadError(file: labelsPath, reason: "\(labels.count) labels for \(model.classes) classes")
        }
        var options = manifest.options ?? [:]
        if model.family == .cifar && options["input_size"] == nil && options["crop"] == nil {
            options["input_size"] = .number(32)
        }
        preprocessing = try ImagePreprocessing(options: options)
        self.decoder = decoder
    }

    /// Decodes and preprocesses one image (throws `ImageError` for bad input).
    public func prepare(_ encoded: [UInt8]) throws -> [Float] {
        preprocessing.apply(try decoder.decode(encoded))
    }

    /// Classifies preprocessed images in one batched pass; top `k` labels per image.
    public func classify(prepared images: [[Float]], topK: Int) -> [[Prediction]] {
        guard !images.isEmpty else { return [] }
        let logits = model.forward(images.flatMap { $0 }, n: images.count, height: preprocessing.crop.height, width: preprocessing.crop.width)
        return logits.map { row in
            var probabilities = row
            probabilities.withUnsafeMutableBufferPointer { buffer in
                if let base = buffer.baseAddress { Kernels.softmax(base, count: buffer.count) }
            }
            return Sampler.topIndices(probabilities, count: max(1, min(topK, probabilities.count))).map {
                Prediction(label: labels[$0], score: probabilities[$0])
            }
        }
    }

    public func classify(_ encoded: [[UInt8]], topK: Int = 5) throws -> [[Prediction]] {
        classify(prepared: try encoded.map(prepare), topK: topK)
    }
}
