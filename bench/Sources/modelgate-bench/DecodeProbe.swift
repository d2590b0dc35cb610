import Foundation
import Inference

/// The gpt2 benchmark's weights (written by `bench/run gpt2`), in MODELGATE_WEIGHT_FORMAT's
/// format (f32 unless bf16), for the probes that run the model itself.
enum BenchModel {
    static var format: PackedMatrix.Format {
        PackedMatrix.Format(rawValue: ProcessInfo.processInfo.environment["MODELGATE_WEIGHT_FORMAT"] ?? "f32") ?? .f32
    }

    /// One decoding step of every sequence (after its `next` token): greedy steps through the
    /// bounded head, or the whole head's logits and `Sampler.argmax`.
    static func step(_ model: any CausalLM, _ next: [Int], _ caches: [AttentionCache], bounded: Bool) -> [Int] {
        if bounded { return model.decode(zip(next, caches).map { .init(tokens: [$0], cache: $1, greedy: [:]) }).map { $0.token ?? 0 } }
        return model.forward(zip(next, caches).map { .init(tokens: [$0], cache: $1) }).map(Sampler.argmax)
    }

    static func load() throws -> GPT2Model {
        BLAS.configureThreads()
        // MODELGATE_PROBE_MODEL: another GPT-2 folder (models/shakespeare, the demo model), or a
        // GPT-2 GGUF file, read as stored (Q8_0 stays Q8_0).
        let directory = ProcessInfo.processInfo.environment["MODELGATE_PROBE_MODEL"] ?? NSTemporaryDirectory() + "modelgate-bench-gpt2-124m"
        if directory.hasSuffix(".gguf") { return try GPT2Model(gguf: GGUFFile(path: directory), format: format) }
        return try GPT2Model(directory: directory, format: format)
    }

    /// MODELGATE_PROBE_MODEL's folder as the engine reads it: GPT-2, or the Llama family.
    static func loadAny() throws -> any CausalLM {
        guard let directory = ProcessInfo.processInfo.environment["MODELGATE_PROBE_MODEL"],
            let type = try HFConfig(path: directory + "/config.json").string("model_type"), type != "gpt2"
        else { return try load() }
        BLAS.configureThreads()
        return try LlamaModel(directory: directory, format: format)
    }
}

/// Batch-1 decoding only, for profiling (`perf record --delay`).
enum DecodeProbe {
    static func run(seconds: Double) throws {
        let model = try BenchModel.loadAny()
        let cache = model.makeCache(capacity: 1024)
        let logits = model.forward([.init(tokens: [1, 2, 3, 4], cache: cache)])[0]
        print("loaded; decoding")
        let start = Date()
        var count = 0
        // Greedy steps (the bounded head) with MODELGATE_PROBE_GREEDY=1.
        let greedy = ProcessInfo.processInfo.environment["MODELGATE_PROBE_GREEDY"] == "1"
        var token = Sampler.argmax(logits)
        while Date().timeIntervalSince(start) < seconds && cache.length < 1000 {
            token = BenchModel.step(model, [token], [cache], bounded: greedy)[0]
            count += 1
        }
        print("decode \(Double(count) / Date().timeIntervalSince(start)) tok/s")
    }
}

/// Decoding 16 sequences together, for profiling.
enum BatchProbe {
    static func run(seconds: Double, sequences: Int = 16) throws {
        let model = try BenchModel.load()
        let fullHead = ProcessInfo.processInfo.environment["MODELGATE_PROBE_HEAD"] == "full"
        print("loaded; decoding \(sequences) sequences (\(BenchModel.format), \(fullHead ? "full head" : "greedy steps"))")
        let start = Date()
        var steps = 0
        while Date().timeIntervalSince(start) < seconds {
            // Short contexts, as in serving: restart every 80 tokens.
            let caches = (0..<sequences).map { _ in model.makeCache(capacity: 128) }
            var next = model.forward(caches.enumerated().map { .init(tokens: [1, 2, 3, $0.offset], cache: $0.element) }).map(Sampler.argmax)
            while caches[0].length < 84 {
                // Greedy steps (the bounded head) unless MODELGATE_PROBE_HEAD=full.
                next = BenchModel.step(model, next, caches, bounded: !fullHead)
                steps += 1
            }
        }
        print("batch \(sequences): \(Double(steps * sequences) / Date().timeIntervalSince(start)) tok/s")
    }
}

/// 128-token prompts, one after another, for profiling prompt processing.
enum PrefillProbe {
    static func run(seconds: Double) throws {
        let model = try BenchModel.loadAny()
        let prompt = (0..<128).map { ($0 * 7919) % model.vocabularySize }
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

/// Greedy decoding through the bounded argmax (`Step.greedy`) against the full output head and
/// `Sampler.argmax`, alternating rounds in one process, at 1 and 16 sequences; also checks that
/// both pick the same tokens.
enum GreedyProbe {
    static func run(rounds: Int = 4, tokens: Int = 48) throws {
        let model = try BenchModel.load()
        print("loaded (\(BenchModel.format)); greedy head \(model.hasBoundedHead ? "int8 bounded" : "full (no AVX512-VNNI)")")
        for sequences in [1, 16] {
            var rates: [Bool: [Double]] = [:]
            var produced: [Bool: [[Int]]] = [:]
            for round in 0..<(2 * rounds) {
                let bounded = round % 2 == 1
                let caches = (0..<sequences).map { _ in model.makeCache(capacity: 128) }
                let prompts = (0..<sequences).map { [1, 2, 3, 4 + $0] }
                var next = model.forward(zip(prompts, caches).map { .init(tokens: $0, cache: $1) }).map(Sampler.argmax)
                var emitted = next.map { [$0] }
                let start = Date()
                for _ in 0..<tokens {
                    next = BenchModel.step(model, next, caches, bounded: bounded)
                    for index in next.indices { emitted[index].append(next[index]) }
                }
                rates[bounded, default: []].append(Double(tokens * sequences) / Date().timeIntervalSince(start))
                produced[bounded] = emitted
            }
            let full = rates[false] ?? [], fast = rates[true] ?? []
            let ratios = zip(fast, full).map { $0 / $1 }
            let agree = produced[true] == produced[false]
            func show(_ values: [Double]) -> String { values.map { String(format: "%.1f", $0) }.joined(separator: " ") }
            print("\(sequences) seq: full head \(show(full)) tok/s; bounded \(show(fast)) tok/s; ratio \(show(ratios)); same tokens: \(agree)")
        }
        let statistics = model.boundedHeadStatistics
        print("greedy rows \(statistics.rows): \(Double(statistics.candidates) / Double(max(1, statistics.rows))) columns exact per row, \(statistics.fullRows) whole rows")
    }
}

/// float32 products on the AVX-512 kernel against the Swift blocks, alternating in one
/// process: 16 sequences decoding (greedy steps and the full head) and 128-token prompts.
enum WideProbe {
    static func run(rounds: Int = 5) throws {
        let model = try BenchModel.load()
        let prompt = (0..<128).map { ($0 * 7919) % 50257 }
        func decode(greedy: Bool) -> Double {
            let caches = (0..<16).map { _ in model.makeCache(capacity: 128) }
            var next = model.forward(caches.enumerated().map { .init(tokens: [1, 2, 3, $0.offset], cache: $0.element) }).map(Sampler.argmax)
            let start = Date()
            for _ in 0..<24 {
                next = BenchModel.step(model, next, caches, bounded: greedy)
            }
            return 24 * 16 / Date().timeIntervalSince(start)
        }
        func prefill() -> Double {
            let start = Date()
            for _ in 0..<3 { _ = model.forward([.init(tokens: prompt, cache: model.makeCache(capacity: 256))]) }
            return 3 * 128 / Date().timeIntervalSince(start)
        }
        var results: [String: [Bool: [Double]]] = [:]
        let initially = PackedMatrix.wideEnabled.load(ordering: .relaxed)
        for round in 0..<(2 * rounds) {
            let wide = round % 2 == 0
            PackedMatrix.wideEnabled.store(wide && initially, ordering: .relaxed)  // never on without AVX-512
            results["16 greedy", default: [:]][wide, default: []].append(decode(greedy: true))
            results["16 full head", default: [:]][wide, default: []].append(decode(greedy: false))
            results["prefill 128", default: [:]][wide, default: []].append(prefill())
        }
        PackedMatrix.wideEnabled.store(initially, ordering: .relaxed)
        for (name, byWide) in results.sorted(by: { $0.key < $1.key }) {
            let (on, off) = (byWide[true] ?? [], byWide[false] ?? [])
            func show(_ values: [Double]) -> String { values.map { String(format: "%.0f", $0) }.joined(separator: " ") }
            let ratios = zip(on, off).map { String(format: "%.2f", $0 / $1) }.joined(separator: " ")
            print("\(name): AVX-512 \(show(on)) tok/s; Swift blocks \(show(off)) tok/s; ratios \(ratios)")
        }
    }
}

/// 16 streams through the scheduler (`TextGenerator`), sampling at temperature 1 unless
/// MODELGATE_PROBE_GREEDY=1, for profiling what a served step costs beyond the model.
enum StreamsProbe {
    static func run(seconds: Double, streams: Int = Int(ProcessInfo.processInfo.environment["MODELGATE_PROBE_STREAMS"] ?? "") ?? 16) async throws {
        let model = try BenchModel.load()
        let greedy = ProcessInfo.processInfo.environment["MODELGATE_PROBE_GREEDY"] == "1"
        let tokenizer = BPETokenizer(vocabulary: ["<|endoftext|>": 50256], merges: [])
        let generator = TextGenerator(model: model, tokenizer: tokenizer, maxBatch: 32)
        print("loaded; \(streams) streams, \(greedy ? "greedy" : "sampling")")
        let start = Date()
        var total = 0
        while Date().timeIntervalSince(start) < seconds {
            total += try await withThrowingTaskGroup(of: Int.self) { group in
                for index in 0..<streams {
                    group.addTask {
                        var parameters = SamplingParameters()
                        parameters.temperature = greedy ? 0 : 1
                        parameters.seed = UInt64(index)
                        parameters.maxTokens = 64
                        var count = 0
                        let vocabulary = model.config.vocabularySize - 1
                        parameters.maxTokens = min(64, model.config.contextLength - 8 - index)
                        let request = GenerationRequest(prompt: (0..<(8 + index)).map { ($0 * 7919) % vocabulary }, parameters: parameters)
                        for try await event in try generator.generate(request) {
                            if case .delta(_, _, let tokens) = event { count += tokens.count }
                        }
                        return count
                    }
                }
                return try await group.reduce(0, +)
            }
        }
        generator.shutdown()
        let statistics = model.boundedHeadStatistics
        let rows = Double(max(1, statistics.rows))
        print("\(streams) streams: \(Double(total) / Date().timeIntervalSince(start)) tok/s; bounded rows \(statistics.rows): \(Double(statistics.candidates) / rows) columns exact and \(Double(statistics.proposals) / rows) draws per row, \(statistics.fullRows) whole rows")
    }
}
