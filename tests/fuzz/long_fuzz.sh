#!/usr/bin/env bash
# The long schema-fuzz run: many more examples than CI and a random seed each time (CI runs 8
# examples per operation, mode and id source with a fixed seed, see backend/tests/test_schema_fuzz.py).
#
# Usage: bash tests/fuzz/long_fuzz.sh [EXAMPLES] [ROUNDS]
#   EXAMPLES  examples per operation, mode and id source (default 100)
#   ROUNDS    how many runs with fresh random seeds (default 3)
# Each round fuzzes every operation of /api/schema/ as maker, supervisor, operator and admin on a
# throwaway PostgreSQL and fails on any 5xx or any response that does not match the schema.
# About 6 minutes per round at 100 examples on 2 cores (40 examples: 2.5 minutes).
set -euo pipefail
cd "$(dirname "$0")/../../backend"
examples="${1:-100}"
rounds="${2:-3}"
for round in $(seq 1 "$rounds"); do
  echo "==> round $round/$rounds: $examples examples per operation/mode, random seed"
  log=$(mktemp /tmp/long-fuzz-XXXXXX.log)
  status=0
  WORKORDER_FUZZ_EXAMPLES="$examples" WORKORDER_FUZZ_RANDOM=1 \
    ../.venv/bin/python -m pytest -q -s -p no:cacheprovider --timeout 0 tests/test_schema_fuzz.py >"$log" 2>&1 || status=$?
  grep -E '^\[fuzz\]|passed|failed' "$log" || true
  if [ "$status" -ne 0 ]; then echo "round $round failed: see $log"; exit 1; fi
  rm -f "$log"
done
