#!/usr/bin/env bash
# llama.cpp on the gpt2 benchmark's own GPT-2-124M-shaped weights (float32, bfloat16 beside our
# weight_format bf16, and llama-quantize's Q8_0 file, which ours loads too), as the baseline for batch-1 decoding and 128-token prompt processing:
# llama-bench tg128 and pp128 on every core, in rounds alternating with ours measured the same
# way. Prints one JSON line per format. Builds llama.cpp once (its sources come with the llama-cpp-python sdist
# from PyPI, pinned) into a cache outside the repository; needs ../shared's GPT-2 vocabulary for
# the GGUF file (skips with a message without it). Usage: bench/llamacpp.sh   (after bench/run gpt2,
# which writes the weights)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cache=${MODELGATE_BENCH_CACHE:-/var/tmp/modelgate-bench}
weights=${TMPDIR:-/tmp}/modelgate-bench-gpt2-124m
vocabulary=$repo/../shared/tokenizers/gpt2
gguf=$cache/gpt2-124m-bench-f32.gguf
gguf_bf16=$cache/gpt2-124m-bench-bf16.gguf
gguf_q8_0=$cache/gpt2-124m-bench-q8_0.gguf
mkdir -p "$cache"

if [ ! -f "$vocabulary/vocab.json" ]; then
  echo '{"benchmark": "llamacpp_gpt2_124m_f32", "skipped": "../shared/tokenizers/gpt2 is absent"}'
  exit 0
fi
[ -f "$weights/model.safetensors" ] || .build/release/modelgate-bench gpt2 --seconds 1 >/dev/null

# llama.cpp, built once into its cache (shared with the tests' llama-server).
bin=$(scripts/llama-cpp llama-bench llama-quantize)
bench=$bin/llama-bench
if [ ! -f "$gguf" ] || [ "$weights/model.safetensors" -nt "$gguf" ]; then
  "$bin/python-gguf" bench/gguf_gpt2.py "$weights" "$vocabulary" "$gguf" >&2
fi
if [ ! -f "$gguf_bf16" ] || [ "$weights/model.safetensors" -nt "$gguf_bf16" ]; then
  "$bin/python-gguf" bench/gguf_gpt2.py "$weights" "$vocabulary" "$gguf_bf16" bf16 >&2
fi
if [ ! -f "$gguf_q8_0" ] || [ "$gguf" -nt "$gguf_q8_0" ]; then
  "$bin/llama-quantize" "$gguf" "$gguf_q8_0" Q8_0 >/dev/null 2>&1
fi

# Ours also decodes the 128 tokens through greedy steps (the bounded int8 head: the same tokens,
# without every logit), beside llama-bench's tg128, which computes every logit as our tg128 does.
# Alternating rounds (llama.cpp, then ours the same way: modelgate-bench tg128), so that both see
# the same moments of this VM's memory bandwidth; medians and the per-round ratios. One JSON line
# per weight format: float32 (LLAMACPP_ROUNDS, 9), then bfloat16 and Q8_0 (LLAMACPP_BF16_ROUNDS,
# LLAMACPP_Q8_ROUNDS, 5 each). For Q8_0 ours loads the GGUF file itself.
compare() {
  local format=$1 file=$2 rounds=$3 model=${4:-}
  for round in $(seq "$rounds"); do
    "$bench" -m "$file" -p 128 -n 128 -t "$(nproc)" -r 1 -o json 2>/dev/null | python3 -c '
import json, sys
runs = json.load(sys.stdin)
rate = {("prefill" if r["n_prompt"] else "decode"): r["avg_ts"] for r in runs}
print(json.dumps({"llamacpp": rate, "build": runs[0].get("build_commit")}))'
    MODELGATE_WEIGHT_FORMAT=$format MODELGATE_PROBE_MODEL=${model:-${TMPDIR:-/tmp}/modelgate-bench-gpt2-124m} .build/release/modelgate-bench tg128
  done | python3 -c '
import json, statistics, sys
lines = [json.loads(line) for line in sys.stdin]
theirs = [line for line in lines if "llamacpp" in line]
ours = [line for line in lines if line.get("benchmark") == "modelgate_tg128_pp128"]
def median(values): return round(statistics.median(values), 1)
decode = [o["decode_batch1_tokens_per_second"] / t["llamacpp"]["decode"] for t, o in zip(theirs, ours)]
prefill = [o["prefill_128_tokens_per_second"] / t["llamacpp"]["prefill"] for t, o in zip(theirs, ours)]
greedy = [o["greedy_decode_batch1_tokens_per_second"] / t["llamacpp"]["decode"] for t, o in zip(theirs, ours)]
print(json.dumps({"benchmark": "llamacpp_gpt2_124m_" + sys.argv[1], "build": theirs[0]["build"], "rounds": len(decode),
                  "decode_batch1_tokens_per_second": median([t["llamacpp"]["decode"] for t in theirs]),
                  "prefill_128_tokens_per_second": median([t["llamacpp"]["prefill"] for t in theirs]),
                  "ours_decode_batch1_tokens_per_second": median([o["decode_batch1_tokens_per_second"] for o in ours]),
                  "ours_prefill_128_tokens_per_second": median([o["prefill_128_tokens_per_second"] for o in ours]),
                  "ours_greedy_decode_batch1_tokens_per_second": median([o["greedy_decode_batch1_tokens_per_second"] for o in ours]),
                  "decode_ratios": [round(r, 2) for r in decode], "prefill_ratios": [round(r, 2) for r in prefill],
                  "greedy_decode_ratios": [round(r, 2) for r in greedy]}))' "$format"
}
compare f32 "$gguf" "${LLAMACPP_ROUNDS:-9}"
compare bf16 "$gguf_bf16" "${LLAMACPP_BF16_ROUNDS:-5}"
compare q8_0 "$gguf_q8_0" "${LLAMACPP_Q8_ROUNDS:-5}" "$gguf_q8_0"
