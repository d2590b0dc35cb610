#!/usr/bin/env bash
# The Llama family against llama.cpp on the same weights: random-weight models of SmolLM2-135M's
# and Qwen2.5-0.5B's shapes (bench/llama_shapes.py writes each once, as a Hugging Face folder for
# us and as float32 and bfloat16 GGUF files for llama.cpp, from the same numbers; llama-quantize
# makes the Q8_0, Q4_0 and Q4_K_M files from the float32 one, and both sides load that very file).
#
# Per shape and weight format, rounds alternate llama.cpp and ours, so both see the same moments
# of the machine's memory bandwidth (on a shared VM it moves by a quarter from minute to minute):
#   - llama-bench tgN and pp128 (every core): N tokens decoded one at a time from an empty
#     context with every logit computed, and a 128-token prompt; ours the same way
#     (modelgate-bench llama), with our greedy steps through the bounded head reported beside;
#   - llama-batched-bench -npp 128 -ntg N -npl 16: 16 prompts of 128 tokens, then N steps of all
#     16 sequences, every logit computed; ours the same.
# One JSON line per shape and format: medians, and every round's ratio (ours / llama.cpp), with
# the CPU model and its vector extensions. llama.cpp is built once into its cache (shared with the
# tests' llama-server). Usage: bench/llama.sh [SHAPE...]   (smollm2-135m qwen2.5-0.5b by default)
#   LLAMA_ROUNDS (3), LLAMA_TOKENS (64), LLAMA_FORMATS ("f32 bf16 q8_0 q4_0 q4_k_m")
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${MODELGATE_BENCH_CACHE:-/var/tmp/modelgate-bench}
rounds=${LLAMA_ROUNDS:-3}
tokens=${LLAMA_TOKENS:-64}
shapes=("$@")
[ ${#shapes[@]} -gt 0 ] || shapes=(smollm2-135m qwen2.5-0.5b)
mkdir -p "$cache"

bin=$(scripts/llama-cpp llama-bench llama-batched-bench llama-quantize)
models=$(dirname "$(dirname "$bin")")/models
[ -x .build/release/modelgate-bench ] || swift build -c release --product modelgate-bench >&2
cpu=$(bench/cpu)

for shape in "${shapes[@]}"; do
  model=$cache/llama-$shape
  if [ ! -f "$model/model-bf16.gguf" ]; then
    echo "writing $shape weights into $model" >&2
    "$bin/python-gguf" bench/llama_shapes.py "$shape" "$model" "$models" >&2
  fi
  for format in ${LLAMA_FORMATS:-f32 bf16 q8_0 q4_0 q4_k_m}; do
    # Ours: the folder in float32 or bfloat16, or the quantized GGUF file itself (llama-quantize's).
    ours=$model
    case $format in
      f32|bf16) ;;
      *)
        ours=$model/model-$format.gguf
        [ -f "$ours" ] || "$bin/llama-quantize" "$model/model-f32.gguf" "$ours" "${format^^}" >/dev/null 2>&1
        ;;
    esac
    for round in $(seq "$rounds"); do
      "$bin/llama-bench" -m "$model/model-$format.gguf" -p 128 -n "$tokens" -t "$(nproc)" -r 1 -o json 2>/dev/null | python3 -c '
import json, sys
runs = json.load(sys.stdin)
print(json.dumps({"llama_bench": {("prefill" if r["n_prompt"] else "decode"): r["avg_ts"] for r in runs}, "build": runs[0].get("build_commit")}))'
      "$bin/llama-batched-bench" -m "$model/model-$format.gguf" -c $((16 * (128 + tokens) + 256)) -b 2048 -ub 512 -npp 128 \
        -ntg "$tokens" -npl 16 -t "$(nproc)" --output-format jsonl 2>/dev/null | grep '^{' | tail -1
      MODELGATE_WEIGHT_FORMAT=$format .build/release/modelgate-bench llama --model "$ours" --tokens "$tokens" --sequences 16
    done | python3 -c '
import json, statistics, sys
shape, form, cpu = sys.argv[1:4]
lines = [json.loads(line) for line in sys.stdin]
bench = [l for l in lines if "llama_bench" in l]
batched = [l for l in lines if "speed_tg" in l]
ours = [l for l in lines if l.get("benchmark") == "modelgate_llama_shape"]
if not (len(bench) == len(batched) == len(ours) > 0):
    sys.exit(f"{shape} {form}: incomplete rounds ({len(bench)} llama-bench, {len(batched)} llama-batched-bench, {len(ours)} ours)")
pairs = {
    "decode_batch1": ([b["llama_bench"]["decode"] for b in bench], [o["decode_batch1_tokens_per_second"] for o in ours]),
    "greedy_decode_batch1": ([b["llama_bench"]["decode"] for b in bench], [o["greedy_decode_batch1_tokens_per_second"] for o in ours]),
    "prefill_128": ([b["llama_bench"]["prefill"] for b in bench], [o["prefill_128_tokens_per_second"] for o in ours]),
    "decode_16_streams": ([b["speed_tg"] for b in batched], [o["batched_decode_tokens_per_second"] for o in ours]),
    "prefill_16x128": ([b["speed_pp"] for b in batched], [o["batched_prompt_tokens_per_second"] for o in ours]),
}
report = {"benchmark": f"llama_{shape}_{form}", "cpu": cpu, "llama_cpp_build": bench[0]["build"], "rounds": len(ours), "tokens": ours[0]["tokens"]}
for name, (theirs, mine) in pairs.items():
    ratios = [m / t for t, m in zip(theirs, mine)]
    if name != "greedy_decode_batch1":
        report[name + "_llamacpp"] = round(statistics.median(theirs), 1)
    report[name + "_ours"] = round(statistics.median(mine), 1)
    report[name + "_ratio_median"] = round(statistics.median(ratios), 2)
    report[name + "_ratios"] = [round(r, 2) for r in ratios]
print(json.dumps(report))' "$shape" "$format" "$cpu"
  done
done
