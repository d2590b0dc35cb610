#!/usr/bin/env bash
# Fuzzes the whole HTTP API from its own OpenAPI document with Schemathesis
# (pip install schemathesis): a zero-config server in a scratch directory, one tenant key for
# the tenant routes and the bootstrap operator key for /admin. Checks: no 5xx, every status,
# content type, header and body as documented. Prints the number of generated requests and
# exits non-zero on any failure.
# Usage: bench/schemathesis.sh [max examples per operation, default 100] [modelgate binary]
set -euo pipefail
cd "$(dirname "$0")/.."
examples=${1:-100}
binary=${2:-.build/release/modelgate}
command -v schemathesis > /dev/null || pip install --quiet schemathesis
[ -x "$binary" ] || swift build -c release --product modelgate
case "$binary" in /*) ;; *) binary="$(pwd)/$binary" ;; esac
scratch=$(mktemp -d /tmp/mg-schemathesis-XXXXXX)
chmod 755 "$scratch"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
repository=$(pwd)
server=
cleanup() {
  [ -n "$server" ] && kill "$server" 2> /dev/null && wait "$server" 2> /dev/null || true
  (cd "$scratch" && "$binary" db stop > /dev/null 2>&1) || true
  rm -rf "$scratch"
}
trap cleanup EXIT
(cd "$scratch" && MODELGATE_MODELS_DIRECTORY="$repository/models" exec "$binary" serve --port "$port" > serve.log 2>&1) &
server=$!
base="http://127.0.0.1:$port"
for _ in $(seq 300); do curl -sf "$base/readyz" > /dev/null && break; sleep 0.2; done
operator=$(grep -o 'mgk_[A-Za-z0-9]*' "$scratch/serve.log" | head -1)
api() { curl -sf -H "Authorization: Bearer $operator" -H 'Content-Type: application/json' "$@"; }
tenant=$(api -X POST "$base/admin/v1/tenants" -d '{"slug":"fuzz","display_name":"Fuzz"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
api -X PUT "$base/admin/v1/tenants/$tenant/limits" \
  -d '{"requests_per_minute":1000000,"tokens_per_minute":1000000000,"max_concurrent":64,"monthly_tokens":1000000000000}' > /dev/null
key=$(api -X POST "$base/admin/v1/tenants/$tenant/keys" -d '{"name":"fuzz","scopes":["inference","usage:read","keys:manage"]}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
# From here on the server log must show no 5xx (before, /readyz may answer 503 while starting).
first_line=$(($(wc -l < "$scratch/serve.log") + 1))
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance
total=0
status=0
# One worker: Schemathesis' threaded workers hit a CPython race in Hypothesis' code generation
# on a loaded machine ("AST constructor recursion depth mismatch") — a crash of the tool, not a
# finding.
for run in "tenant:$key:^/(v1|healthz|readyz|metrics|openapi)" "operator:$operator:^/admin"; do
  IFS=: read -r name secret paths <<< "$run"
  log="$scratch/$name.log"
  if ! (cd "$scratch" && schemathesis run "$base/openapi.json" -H "Authorization: Bearer $secret" --include-path-regex "$paths" \
      --checks "$checks" --max-examples "$examples" --workers 1 --request-timeout 60 --no-color \
      --suppress-health-check all) > "$log" 2>&1; then
    status=1
    # Schemathesis' reproduction commands carry the Authorization header: show key prefixes only.
    if grep -qE '^=+ (FAILURES|ERRORS) =+' "$log"; then sed -n -E '/^=+ (FAILURES|ERRORS) =+/,$p' "$log"; else tail -40 "$log"; fi \
      | sed -E 's/(mgk_[A-Za-z0-9]{8})[A-Za-z0-9_-]+/\1.../g'
  fi
  generated=$(grep -oE '[0-9]+ generated' "$log" | tail -1 | cut -d' ' -f1)
  echo "schemathesis $name routes: ${generated:-0} generated requests, $(grep -oE "[0-9]+ (unique )?failures?" "$log" | tail -1 || echo "no failures")"
  total=$((total + ${generated:-0}))
done
if tail -n +"$first_line" "$scratch/serve.log" | grep -qE 'status=5[0-9]{2}|unhandled error'; then
  echo "the server log shows 5xx responses:"
  tail -n +"$first_line" "$scratch/serve.log" | grep -E 'status=5[0-9]{2}|unhandled error' | head -5
  status=1
fi
echo "schemathesis total: $total generated requests; exit $status"
exit $status
