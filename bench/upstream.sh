#!/usr/bin/env bash
# ModelGate in front of llama.cpp's llama-server versus the same llama-server called directly,
# on the same weights written as GGUF: the latency ModelGate adds to the first streamed token and
# to the whole response at concurrency 1 (bench/upstream_latency.py, requests alternating), and
# completions per second at concurrency 16 (wrk, rounds alternating direct and through
# ModelGate, max_tokens 16). Two models: the demo model, which decodes in well under a
# millisecond per token, so the gateway's own cost shows at its largest; and GPT-2 124M's shape
# where ../shared has GPT-2's vocabulary, a real model's cost per token.
# Prints one JSON line per measurement, each naming the CPU.
# Usage: bench/upstream.sh [seconds per wrk run]   (expects the release binary; bench/run builds it)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-8}
rounds=${UPSTREAM_ROUNDS:-3}
command -v wrk >/dev/null || { [ "$(id -u)" -eq 0 ] && apt-get install -y wrk >/dev/null 2>&1; } || { echo "wrk is required" >&2; exit 1; }
repo=$PWD
binary=${MODELGATE_BINARY:-$repo/.build/release/modelgate}
cpu=$(bench/cpu)
bin=$(scripts/llama-cpp llama-server)
work=$(mktemp -d /tmp/modelgate-bench-upstream.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
llama_port=$(free_port)
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  [ -n "${llama_pid:-}" ] && kill "$llama_pid" 2>/dev/null && wait "$llama_pid" 2>/dev/null || true
  (cd "$work" && "$binary" db stop >/dev/null 2>&1) || true
  rm -rf "$work"
}
trap cleanup EXIT

# The models: the demo model (its requests cost llama-server about 2 ms: the gateway's share at
# its largest) and, where ../shared has GPT-2's vocabulary, GPT-2 124M's shape (the gpt2
# benchmark's random weights: a real model's cost per token).
"$bin/python-gguf" bench/gguf_gpt2.py models/shakespeare models/shakespeare "$work/demo.gguf" >/dev/null
models=("demo $work/demo.gguf ${UPSTREAM_REQUESTS:-200}")
vocabulary=$repo/../shared/tokenizers/gpt2
weights=${TMPDIR:-/tmp}/modelgate-bench-gpt2-124m
if [ -f "$vocabulary/vocab.json" ]; then
  [ -f "$weights/model.safetensors" ] || .build/release/modelgate-bench gpt2 --seconds 1 >/dev/null
  "$bin/python-gguf" bench/gguf_gpt2.py "$weights" "$vocabulary" "$work/gpt2-124m.gguf" >/dev/null
  models+=("gpt2-124m $work/gpt2-124m.gguf ${UPSTREAM_GPT2_REQUESTS:-40}")
fi

mkdir -p "$work/models"
(cd "$work" && MODELGATE_LOG_LEVEL=warning MODELGATE_MODELS_DIRECTORY="$work/models" exec "$binary" serve --port "$port" >"$work/serve.log" 2>&1) &
pid=$!
for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
cli() { (cd "$work" && MODELGATE_LOG_LEVEL=error "$binary" "$@"); }
cli plan create bench requests_per_minute=unlimited tokens_per_minute=unlimited max_concurrent=unlimited monthly_tokens=unlimited \
  monthly_images=unlimited monthly_budget_micros=unlimited >/dev/null
cli tenant create --slug bench --name Bench --plan bench >/dev/null
key=$(cli key create --tenant bench --name bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')

lua() {
  {
    echo 'wrk.method = "POST"'
    echo 'wrk.headers["Content-Type"] = "application/json"'
    [ -n "$2" ] && echo "wrk.headers[\"Authorization\"] = \"Bearer $2\""
    echo "wrk.body = '{\"model\": \"$3\", \"prompt\": \"ROMEO:\", \"max_tokens\": 16, \"temperature\": 0}'"
    # Any answer but 200 fails the benchmark rather than counting as a fast request.
    echo 'response = function(status) if status ~= 200 then io.stderr:write("HTTP " .. status .. "\n"); os.exit(1) end end'
  } > "$work/$1.lua"
}
rate() { wrk -t2 -c16 -d"${seconds}s" -s "$work/$1.lua" "$2/v1/completions" | awk '/Requests\/sec/ {print $2}'; }

for entry in "${models[@]}"; do
  read -r name gguf requests <<<"$entry"
  # 16 slots of at most 128 positions each, on one core (the gateway and the client share the other).
  "$bin/llama-server" -m "$gguf" --host 127.0.0.1 --port "$llama_port" -c 2048 -np 16 -t 1 >"$work/llama.log" 2>&1 &
  llama_pid=$!
  for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$llama_port/health" >/dev/null 2>&1 && break; sleep 0.1; done
  mkdir -p "$work/models/fleet"
  echo "{\"engine\": \"upstream\", \"task\": \"text-generation\", \"options\": {\"endpoints\": [\"http://127.0.0.1:$llama_port\"], \"max_concurrent\": 64}}" \
    > "$work/models/fleet/model.json"
  cli model reload fleet >/dev/null 2>&1 || cli model load fleet >/dev/null

  python3 bench/upstream_latency.py "http://127.0.0.1:$llama_port" "http://127.0.0.1:$port" "$key" demo "$requests" "$cpu" "$name"
  lua direct "" demo
  lua gateway "$key" fleet
  for round in $(seq "$rounds"); do
    echo "$(rate direct "http://127.0.0.1:$llama_port") $(rate gateway "http://127.0.0.1:$port")"
  done | python3 -c '
import json, statistics, sys
rounds = [tuple(map(float, line.split())) for line in sys.stdin]
ratios = [g / d for d, g in rounds]
print(json.dumps({"benchmark": "upstream_throughput", "model": sys.argv[2], "cpu": sys.argv[1], "concurrency": 16, "max_tokens": 16, "rounds": len(rounds),
                  "direct_requests_per_second": round(statistics.median(d for d, _ in rounds), 1),
                  "gateway_requests_per_second": round(statistics.median(g for _, g in rounds), 1),
                  "ratio_median": round(statistics.median(ratios), 3), "ratios": [round(r, 3) for r in ratios]}))' "$cpu" "$name"
  kill "$llama_pid" && wait "$llama_pid" 2>/dev/null || true
  llama_pid=
done
if grep -q "upstream endpoint failed" "$work/serve.log"; then
  echo "upstream failures during the run:" >&2
  grep "upstream endpoint failed" "$work/serve.log" | tail -3 >&2
fi
