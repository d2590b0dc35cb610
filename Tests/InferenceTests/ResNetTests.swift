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
