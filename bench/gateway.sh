#!/usr/bin/env bash
# End-to-end gateway benchmark with wrk on loopback (wrk shares the 2 cores): requests/s and
# p50/p99 for a small completion (max_tokens 1 on the demo model) and an image classification
# at concurrency 1, 16 and 64, the memory the server keeps per request, the share of time spent
# outside the engine, and the floor: the same server's /healthz beside nginx `return 200`.
# Prints one JSON line per measurement.
# Usage: bench/gateway.sh [seconds]   (expects the release binaries; bench/run builds them)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-8}
for tool in wrk nginx; do
  command -v $tool >/dev/null || { [ "$(id -u)" -eq 0 ] && apt-get install -y $tool >/dev/null 2>&1; } || { echo "$tool is required" >&2; exit 1; }
done
repo=$PWD
binary=${MODELGATE_BINARY:-$repo/.build/release/modelgate}
work=$(mktemp -d /tmp/modelgate-bench-gateway.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
nginx_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  [ -n "${nginx_pid:-}" ] && kill "$nginx_pid" 2>/dev/null || true
  (cd "$work" && "$binary" db stop >/dev/null 2>&1) || true
  rm -rf "$work"
}
trap cleanup EXIT

# Models: the demo text model and a CIFAR ResNet-20 (the real weights from ../shared if there,
# else the test fixture of the same shape).
mkdir -p "$work/models/cifar"
ln -s "$repo/models/shakespeare" "$work/models/shakespeare"
weights=$repo/../shared/models/resnet20-cifar10/model.safetensors
[ -f "$weights" ] || weights=$repo/Tests/InferenceTests/Fixtures/resnet/tiny-cifar/model.safetensors
ln -s "$weights" "$work/models/cifar/model.safetensors"
printf 'airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n' > "$work/models/cifar/labels.txt"
echo '{"engine": "resnet", "task": "image-classification", "options": {"input_size": 32}}' > "$work/models/cifar/model.json"
image=$repo/../shared/data/cifar10-test-sample/cat/0000.jpg
[ -f "$image" ] || image=$repo/Tests/InferenceTests/Fixtures/resnet/decode/rgb.jpg
cp "$image" "$work/models/image.jpg"

(cd "$work" && MODELGATE_LOG_LEVEL=warning MODELGATE_MODELS_DIRECTORY="$work/models" exec "$binary" serve --port "$port" >"$work/serve.log" 2>&1) &
pid=$!
for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
cli() { (cd "$work" && MODELGATE_LOG_LEVEL=error "$binary" "$@"); }
# 'unlimited' (older binaries, compared in the same script, said 'none').
unlimited="requests_per_minute=unlimited tokens_per_minute=unlimited max_concurrent=unlimited monthly_tokens=unlimited monthly_images=unlimited monthly_budget_micros=unlimited"
cli plan create bench $unlimited >/dev/null 2>&1 || cli plan create bench ${unlimited//unlimited/none} >/dev/null
cli tenant create --slug bench --name Bench --plan bench >/dev/null
key=$(cli key create --tenant bench --name bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')

cat > "$work/completion.lua" <<LUA
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer $key"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model": "shakespeare", "prompt": "ROMEO:", "max_tokens": 1, "temperature": 0}'
LUA
b64=$(base64 -w0 "$work/models/image.jpg")
cat > "$work/classify.lua" <<LUA
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer $key"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model": "cifar", "image": "$b64", "top_k": 3}'
LUA

parse() {
  python3 - "$@" <<'PY'
import json, re, sys
text, name, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
def latency(p):
    m = re.search(r"\s%s%%\s+([\d.]+)(us|ms|s)" % p, text)
    value, unit = float(m.group(1)), m.group(2)
    return round(value / 1000 if unit == "us" else value * 1000 if unit == "s" else value, 3)
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(json.dumps({"benchmark": "gateway", "route": name, "concurrency": concurrency, "requests_per_second": round(rps, 1),
                  "p50_ms": latency(50), "p99_ms": latency(99), "non_2xx": int(errors.group(1)) if errors else 0}))
PY
}

# Resident memory the server keeps per request served (what a long run grows by while the
# request deadline is far off): the growth over each route's runs, divided by their requests.
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
for route in completion classify; do
  path=/v1/completions; [ $route = classify ] && path=/v1/images/classifications
  rss_before=$(rss_kib) requests=0
  for c in 1 16 64; do
    threads=$([ $c = 1 ] && echo 1 || echo 2)
    out=$(wrk -t$threads -c$c -d${seconds}s --latency -s "$work/$route.lua" "http://127.0.0.1:$port$path")
    parse "$out" $route $c
    requests=$((requests + $(echo "$out" | awk '/requests in/ {print $1}')))
  done
  python3 -c 'import json, sys; route, before, after, requests = sys.argv[1], *map(int, sys.argv[2:])
print(json.dumps({"benchmark": "gateway", "route": route, "requests": requests, "rss_growth_bytes_per_request": round((after - before) * 1024 / requests)}))' \
    $route "$rss_before" "$(rss_kib)" $requests
done
"$repo/.build/release/modelgate-bench" engine --models "$work/models" --seconds 3

# The floor: /healthz of the same server, and nginx return 200.
out=$(wrk -t2 -c64 -d${seconds}s --latency "http://127.0.0.1:$port/healthz"); parse "$out" healthz 64
mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 1; pid $work/nginx/pid; error_log $work/nginx/error.log; daemon off;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:$nginx_port; location / { return 200 "ok"; } } }
CONF
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
nginx_pid=$!
sleep 0.5
out=$(wrk -t2 -c64 -d${seconds}s --latency "http://127.0.0.1:$nginx_port/"); parse "$out" nginx 64
