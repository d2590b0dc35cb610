#!/usr/bin/env bash
# Cost of authentication: authenticated GET /v1/me (verified-key cache warm) vs the same
# server's unauthenticated GET /healthz, measured with wrk on loopback. Prints one JSON line.
# Usage: bench/auth.sh [seconds]   (expects .build/release/modelgate, or MODELGATE_BINARY; bench/run builds it)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
command -v wrk >/dev/null || { [ "$(id -u)" -eq 0 ] && apt-get install -y wrk >/dev/null 2>&1; } || { echo "wrk is required" >&2; exit 1; }
binary=${MODELGATE_BINARY:-$PWD/.build/release/modelgate}
work=$(mktemp -d /tmp/modelgate-bench-auth.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  (cd "$work" && "$binary" db stop >/dev/null 2>&1) || true
  rm -rf "$work"
}
trap cleanup EXIT
(cd "$work" && MODELGATE_LOG_LEVEL=warning exec "$binary" serve --port "$port" >"$work/serve.log" 2>&1) &
pid=$!
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
operator=$(grep -o 'mgk_[A-Za-z0-9]*' "$work/serve.log" | head -1)
tenant=$(curl -sf -H "Authorization: Bearer $operator" -H 'Content-Type: application/json' \
  -d '{"slug":"bench","display_name":"Bench"}' "http://127.0.0.1:$port/admin/v1/tenants" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
key=$(curl -sf -H "Authorization: Bearer $operator" -H 'Content-Type: application/json' \
  -d '{"name":"bench","scopes":["inference"]}' "http://127.0.0.1:$port/admin/v1/tenants/$tenant/keys" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
curl -sf -H "Authorization: Bearer $key" "http://127.0.0.1:$port/v1/me" >/dev/null

run() { wrk -t2 -c64 -d"${seconds}s" --latency "$@"; }
health=$(run "http://127.0.0.1:$port/healthz")
authed=$(run -H "Authorization: Bearer $key" "http://127.0.0.1:$port/v1/me")
python3 - "$health" "$authed" "$seconds" <<'PY'
import json, re, sys
def parse(text):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    def latency(p):
        m = re.search(r"\s%s%%\s+([\d.]+)(us|ms|s)" % p, text)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return rps, latency(50), latency(99), int(errors.group(1)) if errors else 0
h, a = parse(sys.argv[1]), parse(sys.argv[2])
print(json.dumps({
    "benchmark": "auth_cost",
    "healthz_rps": int(h[0]), "healthz_p50_ms": h[1], "healthz_p99_ms": h[2],
    "authenticated_rps": int(a[0]), "authenticated_p50_ms": a[1], "authenticated_p99_ms": a[2],
    "ratio_authenticated_vs_healthz": round(a[0] / h[0], 2),
    "non_2xx": h[3] + a[3], "seconds": int(sys.argv[3]),
}, sort_keys=True))
PY
