#!/usr/bin/env bash
# One completion with 8 prompts of 900 tokens, echo and logprobs 0, on GPT-2 124M (the gpt2
# benchmark's weights, ../shared's GPT-2 vocabulary), and meanwhile short requests (8 tokens)
# one after another: the server's peak RSS before and after, and the short requests' latency
# while the long one runs against the same with the server otherwise idle.
# Every prompt row's logits over 50,257 tokens once sat in memory together (200 MB per prompt,
# twice), and the whole 7,200-token prefill was one step that no other sequence could join.
# Usage: bench/long_prompts.sh [binary]   (after bench/run gpt2)
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-.build/release/modelgate}
weights=${TMPDIR:-/tmp}/modelgate-bench-gpt2-124m
vocabulary=../shared/tokenizers/gpt2
[ -f "$weights/model.safetensors" ] && [ -f "$vocabulary/vocab.json" ] || { echo '{"benchmark": "long_prompts", "skipped": "needs bench/run gpt2 and ../shared/tokenizers/gpt2"}'; exit 0; }
models=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server"; rm -rf "$models"' EXIT
mkdir "$models/gpt2"
ln -s "$weights/config.json" "$weights/model.safetensors" "$models/gpt2/"
ln -s "$(realpath "$vocabulary")/vocab.json" "$(realpath "$vocabulary")/merges.txt" "$models/gpt2/"
echo '{"engine": "transformer-lm", "task": "text-generation", "context_length": 1024}' > "$models/gpt2/model.json"
slug=long-prompts-$RANDOM
"$binary" tenant create --slug "$slug" --name "long prompts bench" > /dev/null 2>&1
key=$("$binary" key create --tenant "$slug" --name bench --json 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')
MODELGATE_MODELS_DIRECTORY=$models "$binary" serve --port 18093 > "${TMPDIR:-/tmp}/long-prompts-server.log" 2>&1 &
server=$!
for _ in $(seq 120); do curl -s -m 1 localhost:18093/readyz | grep -q '"ready"' && break; sleep 1; done
before=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
MODELGATE_BENCH_KEY=$key python3 - "$server" "$before" <<'PY'
import json, os, sys, threading, time, urllib.request
server, before = sys.argv[1], int(sys.argv[2])
def post(body, timeout=600):
    request = urllib.request.Request("http://localhost:18093/v1/completions", data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + os.environ["MODELGATE_BENCH_KEY"], "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)
def short():
    start = time.monotonic()
    post({"model": "gpt2", "prompt": "The quick brown fox", "max_tokens": 8, "temperature": 0})
    return time.monotonic() - start
idle = sorted(short() for _ in range(5))
prompts = [[(i * 7 + j) % 50000 for i in range(900)] for j in range(8)]
done = threading.Event()
def long():
    assert len(post({"model": "gpt2", "prompt": prompts, "echo": True, "logprobs": 0, "max_tokens": 1})["choices"]) == 8
    done.set()
start = time.monotonic()
thread = threading.Thread(target=long)
thread.start()
time.sleep(0.5)
during = []
while not done.is_set():
    during.append(short())
thread.join()
long_seconds = time.monotonic() - start
after = int(open(f"/proc/{server}/status").read().split("VmHWM:")[1].split()[0])
during.sort()
print(json.dumps({"benchmark": "long_prompts", "peak_rss_mb_before": before // 1024, "peak_rss_mb_after": after // 1024,
    "growth_mb": (after - before) // 1024, "long_request_seconds": round(long_seconds, 1),
    "short_request_ms_idle_median": round(idle[len(idle) // 2] * 1000), "short_requests_during": len(during),
    "short_request_ms_during_median": round(during[len(during) // 2] * 1000) if during else None,
    "short_request_ms_during_max": round(during[-1] * 1000) if during else None}))
PY
