import Foundation
import Inference

/// A Llama-family folder (bench/llama_shapes.py's random weights of a published shape) measured
/// as llama.cpp's tools measure it, for bench/llama.sh to alternate with them:
/// - llama-bench's tgN and pp128: N tokens decoded one at a time from an empty context with
///   every logit computed (then the same N through greedy steps, the bounded head, reported
///   beside); a 128-token prompt in one pass.
/// - llama-batched-bench's `-npp 128 -ntg N -npl 16`: 16 prompts of 128 tokens in one pass,
///   then N steps of all 16 sequences, every logit of each computed; tokens per second of each
///   phase.
/// Weights in MODELGATE_WEIGHT_FORMAT (f32 unless bf16 or q8_0), or a GGUF file's as stored
/// (`--model FILE.gguf`). One JSON line.
enum LlamaShapeBenchmark {
    static func run(directory: String, tokens: Int, sequences: Int) throws {
        BLAS.configureThreads()
        // A GGUF file as it is (Q8_0 matrices stay Q8_0), or a folder in MODELGATE_WEIGHT_FORMAT.
        let gguf = directory.hasSuffix(".gguf")
        let format = gguf ? .f32 : BenchModel.format
        let model = gguf ? try LlamaModel(gguf: GGUFFile(path: directory)) : try LlamaModel(directory: directory, format: format)
        let vocabulary = model.vocabularySize
        func prompt(_ salt: Int) -> [Int] { (0..<128).map { ($0 * 7919 + salt * 104_729) % vocabulary } }
        let capacity = 128 + tokens + 1

        func process() -> Double {
            let start = Date()
            _ = model.forward([.init(tokens: prompt(0), cache: model.makeCache(capacity: capacity))])
            return 128 / Date().timeIntervalSince(start)
        }
        func generate(bounded: Bool) -> Double {
            let cache = model.makeCache(capacity: capacity)
            var token = 1
            let start = Date()
            for _ in 0..<tokens { token = BenchModel.step(model, [token], [cache], bounded: bounded)[0] }
            return Double(tokens) / Date().timeIntervalSince(start)
        }
        func batched() -> (prompts: Double, decode: Double) {
            let caches = (0..<sequences).map { _ in model.makeCache(capacity: capacity) }
            var start = Date()
            var next = model.forward(caches.enumerated().map { .init(tokens: prompt($0.offset), cache: $0.element) }).map(Sampler.argmax)
            let prompts = Double(128 * sequences) / Date().timeIntervalSince(start)
            start = Date()
            for _ in 0..<tokens { next = BenchModel.step(model, next, caches, bounded: false) }
            return (prompts, Double(tokens * sequences) / Date().timeIntervalSince(start))
        }
        _ = process()
        let prefill = process()
        let decode = generate(bounded: false)
        let greedy = generate(bounded: true)
        let batch = batched()
        func rounded(_ value: Double) -> Double { (value * 10).rounded() / 10 }
        printJSON([
            "benchmark": "modelgate_llama_shape", "weights": gguf ? URL(fileURLWithPath: directory).lastPathComponent : format.rawValue, "tokens": tokens, "sequences": sequences,
            "decode_batch1_tokens_per_second": rounded(decode), "prefill_128_tokens_per_second": rounded(prefill),
            "greedy_decode_batch1_tokens_per_second": rounded(greedy),
            "batched_prompt_tokens_per_second": rounded(batch.prompts), "batched_decode_tokens_per_second": rounded(batch.decode),
        ])
    }
}
