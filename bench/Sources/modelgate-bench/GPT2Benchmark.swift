import Foundation
import Inference

/// GPT-2-124M shape with seeded random weights: decode tokens/s at batch 1, prompt processing
/// for 128 tokens, total tokens/s with 1, 4 and 16 concurrent sequences through the continuous
/// batching scheduler; beside the memory-bandwidth ceiling measured in the same run.
struct GPT2Benchmark {
    let seconds: Double

    func run() async throws {
        BLAS.configureThreads()
        let directory = NSTemporaryDirectory() + "modelgate-bench-gpt2-124m"
        let config = GPT2Model.Config(layers: 12, heads: 12, width: 768, contextLength: 1024, vocabularySize: 50257)
        if !FileManager.default.fileExists(atPath: directory + "/model.safetensors") {
            try RandomGPT2.write(config, seed: 124, to: directory)
        }
        let model = try GPT2Model(directory: directory)
        let bandwidth = Self.measureReadBandwidth()
        let ceiling = bandwidth / Double(model.weightBytesPerToken)

        // Prompt processing: 128 tokens in one batched pass.
        let prompt = (0..<128).map { ($0 * 7919) % 50257 }
        var prefillRates: [Double] = []
        for _ in 0..<3 {
            let start = Date()
            _ = model.forward([.init(tokens: prompt, cache: model.makeCache(capacity: 1024))])
            prefillRates.append(128 / Date().timeIntervalSince(start))
        }

        // Decode at batch 1, after a 16-token prompt: every logit, then greedy steps through the
        // bounded int8 copy of the head.
        func decode(bounded: Bool) -> Double {
            let cache = model.makeCache(capacity: 1024)
            var token = Sampler.argmax(model.forward([.init(tokens: Array(prompt.prefix(16)), cache: cache)])[0])
            var decoded = 0
            let start = Date()
            while Date().timeIntervalSince(start) < seconds / 3 && cache.length < 1000 {
                token = BenchModel.step(model, [token], [cache], bounded: bounded)[0]
                decoded += 1
            }
            return Double(decoded) / Date().timeIntervalSince(start)
        }
        let decodeRate = decode(bounded: false)
        let greedyRate = decode(bounded: true)
        let greedyBytes = model.greedyWeightBytesPerToken ?? model.weightBytesPerToken

        // Concurrency through the scheduler (greedy, 64 new tokens each).
        let tokenizer = BPETokenizer(vocabulary: ["<|endoftext|>": 50256], merges: [])
        let generator = TextGenerator(model: model, tokenizer: tokenizer, maxBatch: 32)
        var concurrent: [String: Double] = [:]
        for (streams, sampling) in [(1, false), (4, false), (16, false), (16, true)] {
            let start = Date()
            let total = try await withThrowingTaskGroup(of: Int.self) { group in
                for index in 0..<streams {
                    group.addTask {
                        var parameters = SamplingParameters()
                        parameters.temperature = sampling ? 1 : 0  // sampling: the whole head, every token
                        parameters.seed = UInt64(index)
                        parameters.maxTokens = 64
                        var count = 0
                        let request = GenerationRequest(prompt: Array(prompt.prefix(8 + index)), parameters: parameters)
                        for try await event in try generator.generate(request) {
                            if case .delta(_, _, let tokens) = event { count += tokens.count }
                        }
                        return count
                    }
                }
                return try await group.reduce(0, +)
            }
            concurrent["concurrent_\(streams)\(sampling ? "_sampling" : "")_tokens_per_second"] = Double(total) / Date().timeIntervalSince(start)
        }
        generator.shutdown()

        var report: [String: Any] = [
            "benchmark": "gpt2_124m_f32",
            "blas_core": BLAS.coreName,
            "decode_batch1_tokens_per_second": (decodeRate * 10).rounded() / 10,
            "prefill_128_tokens_per_second": Int(prefillRates.max() ?? 0),
            "weight_bytes_per_token": model.weightBytesPerToken,
            "measured_read_bandwidth_GBps": (bandwidth / 1e9 * 10).rounded() / 10,
            "bandwidth_ceiling_tokens_per_second": (ceiling * 10).rounded() / 10,
            "ratio_decode_vs_ceiling": (decodeRate / ceiling * 100).rounded() / 100,
            "greedy_decode_batch1_tokens_per_second": (greedyRate * 10).rounded() / 10,
            "greedy_weight_bytes_per_token": greedyBytes,
            "greedy_bandwidth_ceiling_tokens_per_second": (bandwidth / Double(greedyBytes) * 10).rounded() / 10,
            "ratio_greedy_decode_vs_ceiling": (greedyRate / (bandwidth / Double(greedyBytes)) * 100).rounded() / 100,
            "ratio_greedy_vs_full_head_decode": (greedyRate / decodeRate * 100).rounded() / 100,
        ]
        for (key, value) in concurrent { report[key] = Int(value) }

        // The same weights stored as bfloat16: half the bytes per token.
        let half = try GPT2Model(directory: directory, format: .bf16)
        let halfCache = half.makeCache(capacity: 1024)
        var halfLogits = half.forward([.init(tokens: Array(prompt.prefix(16)), cache: halfCache)])[0]
        var halfDecoded = 0
        let halfStart = Date()
        while Date().timeIntervalSince(halfStart) < seconds / 3 && halfCache.length < 1000 {
            halfLogits = half.forward([.init(tokens: [Sampler.argmax(halfLogits)], cache: halfCache)])[0]
            halfDecoded += 1
        }
        let halfRate = Double(halfDecoded) / Date().timeIntervalSince(halfStart)
        report["decode_batch1_bf16_tokens_per_second"] = (halfRate * 10).rounded() / 10
        report["bf16_weight_bytes_per_token"] = half.weightBytesPerToken
        report["ratio_bf16_decode_vs_f32"] = (halfRate / decodeRate * 100).rounded() / 100
        printJSON(report)
    }

    /// Sustained read bandwidth over a buffer far larger than the caches, SIMD loads on every
    /// core (as decoding reads weights).
    static func measureReadBandwidth(threads: Int = ComputeThreads.cores) -> Double {
        let count = 128 << 20  // 512 MiB of floats
        let buffer = FloatBuffer(count: count)
        for i in stride(from: 0, to: count, by: 1024) { buffer[i] = Float(i & 7) }
        var best = 0.0
        for _ in 0..<3 {
            let start = Date()
            let chunk = count / threads
            DispatchQueue.concurrentPerform(iterations: threads) { part in
                let base = UnsafeRawPointer(buffer.pointer + part * chunk)
                var a = SIMD8<Float>(), b = SIMD8<Float>(), c = SIMD8<Float>(), d = SIMD8<Float>()
                var offset = 0
                let end = chunk * 4
                while offset < end {
                    a += base.loadUnaligned(fromByteOffset: offset, as: SIMD8<Float>.self)
                    b += base.loadUnaligned(fromByteOffset: offset + 32, as: SIMD8<Float>.self)
                    c += base.loadUnaligned(fromByteOffset: offset + 64, as: SIMD8<Float>.self)
                    d += base.loadUnaligned(fromByteOffset: offset + 96, as: SIMD8<Float>.self)
                    offset += 128
                }
                if (a + b + c + d).sum() == -1 { print("") }
            }
            best = max(best, Double(count * 4) / Date().timeIntervalSince(start))
        }
        return best
    }
}
