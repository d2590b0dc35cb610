import Foundation
import Inference

/// The gpt2 benchmark's weights measured the way llama-bench measures: tg128 (128 tokens
/// decoded one at a time from an empty context, every logit computed; then the same through
/// greedy steps, the bounded head) and pp128 (a 128-token prompt in one pass),
/// after a warm-up, with MODELGATE_WEIGHT_FORMAT's weights (f32 unless bf16). One JSON line;
/// bench/llamacpp.sh alternates it with llama-bench.
enum LlamaBenchShape {
    static func run() throws {
        let format = BenchModel.format
        let model = try BenchModel.load()
        let prompt = (0..<128).map { ($0 * 7919) % 50257 }
        // 128 tokens from an empty context: every logit (as llama-bench), or greedy steps.
        func generate(bounded: Bool) -> Double {
            let cache = model.makeCache(capacity: 1024)
            var token = 0
            let start = Date()
            for _ in 0..<128 { token = BenchModel.step(model, [token], [cache], bounded: bounded)[0] }
            return 128 / Date().timeIntervalSince(start)
        }
        func process() -> Double {
            let start = Date()
            _ = model.forward([.init(tokens: prompt, cache: model.makeCache(capacity: 1024))])
            return 128 / Date().timeIntervalSince(start)
        }
        _ = process()
        let prefill = process()
        let decode = generate(bounded: false)
        let greedy = generate(bounded: true)
        printJSON(["benchmark": "modelgate_tg128_pp128", "format": format.rawValue, "decode_batch1_tokens_per_second": (decode * 10).rounded() / 10,
                   "prefill_128_tokens_per_second": (prefill * 10).rounded() / 10,
                   "greedy_decode_batch1_tokens_per_second": (greedy * 10).rounded() / 10])
    }
}
