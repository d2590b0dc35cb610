import Foundation
import Inference

/// The gpt2 benchmark's weights (written by `bench/run gpt2`), in MODELGATE_WEIGHT_FORMAT's
/// format (f32 unless bf16), for the probes that run the model itself.
enum BenchModel {
    static var format: PackedMatrix.Format {
        PackedMatrix.Format(rawValue: ProcessInfo.processInfo.environment["MODELGATE_WEIGHT_FORMAT"] ?? "f32") ?? .f32
    }

    static func load() throws -> GPT2Model {
        BLAS.configureThreads()
        return try GPT2Model(directory: NSTemporaryDirectory() + "modelgate-bench-gpt2-124m", format: format)
    }
}

/// Batch-1 decoding only, for profiling (`perf record --delay`).
enum DecodeProbe {
    static func run(seconds: Double) throws {
        let model = try BenchModel.load()
        let cache = model.makeCache(capacity: 1024)
        var logits = model.forward([.init(tokens: [1, 2, 3, 4], cache: cache)])[0]
        print("loaded; decoding")
        let start = Date()
        var count = 0
        while Date().timeIntervalSince(start) < seconds && cache.length < 1000 {
            logits = model.forward([.init(tokens: [Sampler.argmax(logits)], cache: cache)])[0]
            count += 1
        }
        print("decode \(Double(count) / Date().timeIntervalSince(start)) tok/s")
    }
}

/// Decoding 16 sequences together, for profiling.
enum BatchProbe {
    static func run(seconds: Double, sequences: Int = 16) throws {
        let model = try BenchModel.load()
        print("loaded; decoding \(sequences) sequences (\(BenchModel.format))")
        let start = Date()
        var steps = 0
        while Date().timeIntervalSince(start) < seconds {
            // Short contexts, as in serving: restart every 80 tokens.
            let caches = (0..<sequences).map { _ in model.makeCache(capacity: 128) }
            var logits = model.forward(caches.enumerated().map { .init(tokens: [1, 2, 3, $0.offset], cache: $0.element) })
            while caches[0].length < 84 {
                logits = model.forward(zip(caches, logits).map { .init(tokens: [Sampler.argmax($0.1)], cache: $0.0) })
                steps += 1
            }
        }
        print("batch \(sequences): \(Double(steps * sequences) / Date().timeIntervalSince(start)) tok/s")
    }
}

/// 128-token prompts, one after another, for profiling prompt processing.
enum PrefillProbe {
    static func run(seconds: Double) throws {
        let model = try BenchModel.load()
        let prompt = (0..<128).map { ($0 * 7919) % 50257 }
        print("loaded; prompts of 128 tokens (\(BenchModel.format))")
        let start = Date()
        var prompts = 0
        while Date().timeIntervalSince(start) < seconds {
            _ = model.forward([.init(tokens: prompt, cache: model.makeCache(capacity: 256))])
            prompts += 1
        }
        print("prefill: \(Double(prompts * 128) / Date().timeIntervalSince(start)) tok/s")
    }
}
