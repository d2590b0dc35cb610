import Foundation
import Testing
@testable import Inference

struct ResNetReference: Decodable {
    struct Run: Decodable {
        var resize: Int?
        var crop: Int
        var input_hwc: [Float]
        var logits: [Float]
    }
    struct Entry: Decodable {
        var file: String
        var models: [String: Run]
    }
    var images: [Entry]
}

@Suite struct ResNetTests {
    let root = SharedData.fixtures + "/resnet"
    let reference: ResNetReference

    init() throws {
        reference = try JSONDecoder().decode(ResNetReference.self, from: Data(contentsOf: URL(fileURLWithPath: root + "/reference.json")))
    }

    @Test(arguments: ["tiny-basic", "tiny-bottleneck", "tiny-cifar"])
    func logitsMatchPyTorchWithin1e4(model name: String) throws {
        let model = try ResNetModel(weights: SafetensorsFile(path: root + "/\(name)/model.safetensors"))
        switch name {
        case "tiny-basic": #expect(!model.bottleneck && model.blockCounts == [2, 2, 2, 2] && model.family == .imagenet)
        case "tiny-bottleneck": #expect(model.bottleneck && model.blockCounts == [1, 2, 1, 1])
        default: #expect(model.family == .cifar && model.blockCounts == [2, 2, 2])
        }
        // All reference images as one batch.
        let runs = reference.images.compactMap { $0.models[name] }
        let size = runs[0].crop
        let logits = model.forward(runs.flatMap(\.input_hwc), n: runs.count, height: size, width: size)
        for (run, got) in zip(runs, logits) {
            let worst = zip(run.logits, got).map { abs($0 - $1) }.max() ?? 1
            #expect(worst < 1e-4, "\(name): max |Δ| \(worst)")
        }
        // The basic-block fixtures reach Winograd's convolutions as well as the direct ones (the
        // bottleneck one's 3x3 layers have too few channels and tiles to choose it).
        let methods = model.methods(n: runs.count, height: size, width: size)
        let winograd = methods.contains { if case .winograd = $0 { true } else { false } }
        #expect(winograd == !model.bottleneck, "\(methods)")
        #expect(methods.contains { if case .winograd = $0 { false } else { true } }, "\(methods)")
    }

    @Test func preprocessingMatchesTorchvisionWithinOneLevel() throws {
        for entry in reference.images {
            let data = Array(try Data(contentsOf: URL(fileURLWithPath: root + "/images/" + entry.file)))
            let image = try ImageDecoder().decode(data)
            for (name, run) in entry.models {
                let preprocessing = ImagePreprocessing(resize: run.resize, crop: (run.crop, run.crop))
                let ours = preprocessing.apply(image)
                #expect(ours.count == run.input_hwc.count)
                // One 8-bit level, in normalised units (divided by the smallest std).
                let tolerance: Float = 1.0 / 255 / 0.224 + 1e-5
                let worst = zip(ours, run.input_hwc).map { abs($0 - $1) }.max() ?? 1
                #expect(worst <= tolerance, "\(entry.file) for \(name): max |Δ| \(worst)")
            }
        }
    }

    @Test func aModelFolderClassifiesWithLabelsAndTopK() throws {
        let directory = NSTemporaryDirectory() + "mg-tiny-cifar-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.copyItem(atPath: root + "/tiny-cifar/model.safetensors", toPath: directory + "/model.safetensors")
        try (0..<10).map { "label \($0)" }.joined(separator: "\n").write(toFile: directory + "/labels.txt", atomically: true, encoding: .utf8)
        try #"{"engine": "resnet", "task": "image-classification", "options": {"input_size": 32}}"#.write(toFile: directory + "/model.json", atomically: true, encoding: .utf8)
        let classifier = try ImageClassifier(directory: directory)
        let image = Array(try Data(contentsOf: URL(fileURLWithPath: root + "/images/noise.png")))
        let predictions = try classifier.classify([image, image], topK: 3)
        #expect(predictions.count == 2)
        #expect(predictions[0].count == 3)
        #expect(predictions[0] == predictions[1])
        #expect(predictions[0][0].score >= predictions[0][1].score)
        #expect(predictions[0].allSatisfy { $0.label.hasPrefix("label ") })
        try ["a", "b"].joined(separator: "\n").write(toFile: directory + "/labels.txt", atomically: true, encoding: .utf8)
        #expect(throws: ModelLoadError.self) { try ImageClassifier(directory: directory) }
    }
}

@Suite struct ImageDecodingTests {
    struct Expected: Decodable {
        var width: Int
        var height: Int
        var rgb: [Int]
    }
    let root = SharedData.fixtures + "/resnet/decode"

    func load(_ name: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: root + "/" + name))) }

    @Test func everySupportedVariantDecodesToTheExpectedPixels() throws {
        let expected = try JSONDecoder().decode([String: Expected].self, from: Data(contentsOf: URL(fileURLWithPath: root + "/expected.json")))
        #expect(expected.count == 11)
        for (name, want) in expected.sorted(by: { $0.key < $1.key }) {
            let image = try ImageDecoder().decode(try load(name))
            #expect(image.width == want.width && image.height == want.height, "\(name)")
            #expect(image.pixels.map(Int.init) == want.rgb, "\(name)")
        }
    }

    @Test func badFilesAreRefusedWithTheRightError() throws {
        let decoder = ImageDecoder(maxEncodedBytes: 1 << 20, maxPixels: 10_000_000)
        for name in ["truncated.jpg", "truncated.png", "corrupt.png"] {
            #expect(throws: ImageError.self, "\(name)") { try decoder.decode(try load(name)) }
            do { _ = try decoder.decode(try load(name)) } catch let error as ImageError {
                if case .corrupt = error {} else { Issue.record("\(name): \(error)") }
            }
        }
        #expect(throws: ImageError.unsupportedType("gif")) { try decoder.decode(try load("image.gif")) }
        #expect(throws: ImageError.unsupportedType("bmp")) { try decoder.decode(try load("image.bmp")) }
        #expect(throws: ImageError.unsupportedType("empty data")) { try decoder.decode([]) }
        #expect(throws: ImageError.unsupportedType("unknown data")) { try decoder.decode(Array("hello".utf8)) }
        do {
            _ = try decoder.decode(try load("bomb.png"))
            Issue.record("decompression bomb accepted")
        } catch let error as ImageError {
            guard case .tooLarge(let message) = error else { Issue.record("\(error)"); return }
            #expect(message.contains("30000x30000"))
        }
        let small = ImageDecoder(maxEncodedBytes: 100, maxPixels: 10)
        #expect(throws: ImageError.self) { try small.decode(try load("rgb.jpg")) }
        let tiny = ImageDecoder(maxEncodedBytes: 1 << 20, maxPixels: 10)
        #expect(throws: ImageError.self) { try tiny.decode(try load("rgb.jpg")) }
        // Random bytes after a JPEG signature: an error, never a crash.
        var garbage: [UInt8] = [0xFF, 0xD8, 0xFF]
        var random = SeededGenerator(seed: 5)
        for _ in 0..<4000 { garbage.append(UInt8(truncatingIfNeeded: random.next())) }
        #expect(throws: ImageError.self) { try decoder.decode(garbage) }
    }
}

/// Every way a convolution is computed (pointwise, patches a tile at a time, all patches
/// first) against the definition, on shapes that exercise padding, strides, kernel sizes and
/// row tails; the fixtures above only reach the method chosen for small models.
@Suite struct ConvolutionMethodTests {
    struct Shape: CustomStringConvertible, Sendable {
        var kernel, stride, padding, inputChannels, outputChannels, n, h, w: Int
        var description: String { "\(kernel)x\(kernel)/\(stride) pad \(padding) \(inputChannels)->\(outputChannels) on \(n)x\(h)x\(w)" }
    }

    static let shapes = [
        Shape(kernel: 3, stride: 1, padding: 1, inputChannels: 5, outputChannels: 20, n: 2, h: 9, w: 11),
        Shape(kernel: 3, stride: 2, padding: 1, inputChannels: 16, outputChannels: 33, n: 3, h: 10, w: 7),
        Shape(kernel: 7, stride: 2, padding: 3, inputChannels: 3, outputChannels: 17, n: 2, h: 15, w: 13),
        Shape(kernel: 1, stride: 2, padding: 0, inputChannels: 6, outputChannels: 16, n: 2, h: 9, w: 9),
        Shape(kernel: 1, stride: 1, padding: 0, inputChannels: 24, outputChannels: 40, n: 2, h: 5, w: 8),
        Shape(kernel: 3, stride: 1, padding: 1, inputChannels: 8, outputChannels: 16, n: 1, h: 4, w: 32),
        Shape(kernel: 3, stride: 1, padding: 1, inputChannels: 19, outputChannels: 35, n: 3, h: 7, w: 6),
        Shape(kernel: 3, stride: 1, padding: 1, inputChannels: 64, outputChannels: 64, n: 2, h: 8, w: 8),
    ]

    @Test(arguments: shapes) func everyMethodMatchesTheDefinition(shape: Shape) throws {
        var random = SeededGenerator(seed: 7)
        func values(_ count: Int) -> [Float] { (0..<count).map { _ in Float.random(in: -1...1, using: &random) } }
        let (k, s, p, cin, cout) = (shape.kernel, shape.stride, shape.padding, shape.inputChannels, shape.outputChannels)
        let weight = values(cout * cin * k * k)  // PyTorch [cout, cin, k, k]
        let scale = values(cout), shift = values(cout)
        let input = values(shape.n * shape.h * shape.w * cin)  // NHWC
        let weights = FloatBuffer(weight)
        let convolution = Convolution(
            weight: weights.pointer, outputChannels: cout, inputChannels: cin, kernel: k, stride: s, padding: p, scale: scale, shift: shift)
        let (ho, wo) = (convolution.outputSize(shape.h), convolution.outputSize(shape.w))
        var expected = [Float](repeating: 0, count: shape.n * ho * wo * cout)  // before ReLU
        for image in 0..<shape.n {
            for oy in 0..<ho {
                for ox in 0..<wo {
                    for o in 0..<cout {
                        var sum: Float = 0
                        for i in 0..<cin {
                            for ky in 0..<k {
                                for kx in 0..<k {
                                    let (iy, ix) = (oy * s - p + ky, ox * s - p + kx)
                                    guard iy >= 0, iy < shape.h, ix >= 0, ix < shape.w else { continue }
                                    sum += input[((image * shape.h + iy) * shape.w + ix) * cin + i] * weight[((o * cin + i) * k + ky) * k + kx]
                                }
                            }
                        }
                        expected[((image * ho + oy) * wo + ox) * cout + o] = sum * scale[o] + shift[o]
                    }
                }
            }
        }
        var methods: [Convolution.Method] = [.tiled(rows: 12), .tiled(rows: 18), .patches]
        if k == 1 && s == 1 && p == 0 { methods.append(.pointwise) }
        if k == 3 && s == 1 && p == 1 { methods += [.winograd(.fused(tiles: 16)), .winograd(.fused(tiles: 5)), .winograd(.phased)] }
        // relu(conv(x)), and relu(conv(x) + residual) formed in the residual's buffer.
        let residual = values(expected.count)
        for method in methods {
            for adding in [false, true] {
                let target = adding ? zip(expected, residual).map { max(0, $0 + $1) } : expected.map { max(0, $0) }
                let (output, h, w) = convolution.apply(
                    FloatBuffer(input), n: shape.n, h: shape.h, w: shape.w, relu: true, adding: adding ? FloatBuffer(residual) : nil,
                    method: method)
                #expect(h == ho && w == wo)
                let worst = zip(output.array, target).map { abs($0 - $1) }.max() ?? .infinity
                // Winograd's transforms cost float32 about one decimal digit: the bound is relative.
                let largest = target.map(abs).max() ?? 1
                let bound: Float = if case .winograd = method { 2e-5 * max(1, largest) } else { 1e-4 }
                #expect(worst < bound, "\(method), adding \(adding): largest difference \(worst) (largest value \(largest))")
            }
        }
    }
}
