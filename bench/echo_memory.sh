#!/usr/bin/env bash
# Peak memory of the server answering one completion with echo and logprobs: 8 prompts of 900
# tokens on GPT-2 124M (the gpt2 benchmark's weights, ../shared's GPT-2 vocabulary), the
# server's VmHWM before and after. Every prompt row's logits over 50,257 tokens once sat in
# memory together (200 MB per prompt, twice); now they are reduced to log-probabilities a
# block of rows at a time. Usage: bench/echo_memory.sh [binary]   (after bench/run gpt2)
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-.build/release/modelgate}
weights=${TMPDIR:-/tmp}/modelgate-bench-gpt2-124m
vocabulary=../shared/tokenizers/gpt2
[ -f "$weights/model.safetensors" ] && [ -f "$vocabulary/vocab.json" ] || { echo '{"benchmark": "echo_memory", "skipped": "needs bench/run gpt2 and ../shared/tokenizers/gpt2"}'; exit 0; }
models=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server"; rm -rf "$models"' EXIT
mkdir "$models/gpt2"
ln -s "$weights/config.json" "$weights/model.safetensors" "$models/gpt2/"
ln -s "$(realpath "$vocabulary")/vocab.json" "$(realpath "$vocabulary")/merges.txt" "$models/gpt2/"
echo '{"engine": "transformer-lm", "task": "text-generation", "context_length": 1024}' > "$models/gpt2/model.json"
slug=echo-bench-$RANDOM
"$binary" tenant create --slug "$slug" --name "echo bench" > /dev/null 2>&1
key=$("$binary" key create --tenant "$slug" --name bench --json 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')
MODELGATE_MODELS_DIRECTORY=$models "$binary" serve --port 18093 > "${TMPDIR:-/tmp}/echo-memory-server.log" 2>&1 &
server=$!
for _ in $(seq 120); do curl -s -m 1 localhost:18093/readyz | grep -q '"ready"' && break; sleep 1; done
before=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
MODELGATE_BENCH_KEY=$key python3 - <<'PY'
import json, os, urllib.request
prompts = [[(i * 7 + j) % 50000 for i in range(900)] for j in range(8)]
body = json.dumps({"model": "gpt2", "prompt": prompts, "echo": True, "logprobs": 0, "max_tokens": 1}).encode()
request = urllib.request.Request("http://localhost:18093/v1/completions", data=body,
    headers={"Authorization": "Bearer " + os.environ["MODELGATE_BENCH_KEY"], "Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=600) as response:
    assert len(json.load(response)["choices"]) == 8
PY
after=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
echo "{\"benchmark\": \"echo_memory\", \"peak_rss_mb_before\": $((before / 1024)), \"peak_rss_mb_after\": $((after / 1024)), \"growth_mb\": $(((after - before) / 1024))}"
