import Foundation
import Inference

/// Images per second of a ResNet state dict (safetensors) at a batch size, on random inputs.
/// Driven by bench/resnet.py, which runs ONNX Runtime on the same weights in the same run.
struct ResNetBenchmark {
    let weights: String
    let batch: Int
    let size: Int
    let seconds: Double

    func run() throws {
        let model = try ResNetModel(weights: SafetensorsFile(path: weights))
        var random = SeededGenerator(seed: 1)
        let input = (0..<(batch * size * size * 3)).map { _ in Float(random.unit() * 2 - 1) }
        _ = model.forward(input, n: batch, height: size, width: size)  // warm up
        var images = 0
        let start = Date()
        while Date().timeIntervalSince(start) < seconds || images == 0 {
            _ = model.forward(input, n: batch, height: size, width: size)
            images += batch
        }
        let rate = Double(images) / Date().timeIntervalSince(start)
        printJSON(["model": model.description, "batch": batch, "size": size, "images_per_second": (rate * 10).rounded() / 10])
    }
}
