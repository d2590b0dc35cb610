#!/usr/bin/env bash
# Two builds of modelgate, measured alternately in one run by the same benchmark scripts, so
# that their figures come from the same machine in the same state (machines drift; figures
# from different runs or CPUs are not comparable). Prints each script's JSON lines tagged with
# the build and round, and names the CPU.
# Usage: bench/ab.sh BASELINE_BINARY CANDIDATE_BINARY [rounds, default 2] [seconds, default 5] [scripts: auth gateway]
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=$1 candidate=$2 rounds=${3:-2} seconds=${4:-5}
shift $(( $# < 4 ? $# : 4 ))
scripts=("$@"); [ ${#scripts[@]} -eq 0 ] && scripts=(auth gateway)
cpu=$(bench/cpu)
for round in $(seq 1 "$rounds"); do
  for build in baseline candidate; do
    binary=$baseline; [ $build = candidate ] && binary=$candidate
    for script in "${scripts[@]}"; do
      MODELGATE_BINARY=$binary "bench/$script.sh" "$seconds" | python3 -c '
import json, sys
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"): continue
    record = json.loads(line); record.update({"build": sys.argv[1], "round": int(sys.argv[2]), "cpu": sys.argv[3]}); print(json.dumps(record))
' "$build" "$round" "$cpu"
    done
  done
done
