#!/usr/bin/env bash
# The long schema-fuzz run: many more examples than CI and a random seed each time (CI runs 8
# examples per operation, mode and id source with a fixed seed, see backend/tests/test_schema_fuzz.py).
#
# Usage: bash tests/fuzz/long_fuzz.sh [EXAMPLES] [ROUNDS]
#   EXAMPLES  examples per operation, mode and id source (default 100)
#   ROUNDS    how many runs with fresh random seeds (default 3)
# Each round fuzzes every operation of /api/schema/ as maker, supervisor, operator and admin on a
# throwaway PostgreSQL and fails on any 5xx or any response that does not match the schema.
# About 7 minutes per round at 100 examples on 2 cores (40 examples: 2.5 minutes).
# Progress: the fuzz test's own [fuzz] lines as they come, and a line every PROGRESS seconds (30)
# while it generates cases silently. At the end a table, one row per round.
# A round that does not run the fuzz test (e.g. schemathesis missing, so pytest skips it) fails:
# a long fuzz that fuzzed nothing must not look green.
# Python: $WORKORDER_PYTHON, else the repository's .venv, else `python` on PATH.
set -euo pipefail
cd "$(dirname "$0")/../../backend"
examples="${1:-100}"
rounds="${2:-3}"
progress="${PROGRESS:-30}"
python="${WORKORDER_PYTHON:-}"
if [ -z "$python" ]; then
  if [ -x ../.venv/bin/python ]; then python=../.venv/bin/python; else python=$(command -v python); fi
fi
rows=()
failed=0
for round in $(seq 1 "$rounds"); do
  echo "==> round $round/$rounds: $examples examples per operation/mode, random seed ($python)"
  log=$(mktemp /tmp/long-fuzz-XXXXXX.log)
  start=$SECONDS
  WORKORDER_FUZZ_EXAMPLES="$examples" WORKORDER_FUZZ_RANDOM=1 \
    "$python" -m pytest -q -s -p no:cacheprovider --timeout 0 -rs tests/test_schema_fuzz.py >"$log" 2>&1 &
  pid=$!
  shown=0
  while kill -0 "$pid" 2>/dev/null; do
    for _ in $(seq 1 "$progress"); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
      # Print the [fuzz] lines that appeared since the last look.
      total=$(grep -c '^\[fuzz\]' "$log" || true)
      if [ "$total" -gt "$shown" ]; then
        grep '^\[fuzz\]' "$log" | tail -n "+$((shown + 1))"
        shown=$total
      fi
    done
    if kill -0 "$pid" 2>/dev/null; then
      last=$(grep '^\[fuzz\]' "$log" | tail -n 1 || true)
      echo "    round $round: $((SECONDS - start)) s, ${last:-generating cases (no [fuzz] line yet)}"
    fi
  done
  status=0
  wait "$pid" || status=$?
  total=$(grep -c '^\[fuzz\]' "$log" || true)
  [ "$total" -gt "$shown" ] && grep '^\[fuzz\]' "$log" | tail -n "+$((shown + 1))"
  summary=$(grep -E '[0-9]+ (passed|failed|skipped|error)' "$log" | tail -n 1 || true)
  echo "    $summary"
  requests=$(sed -n 's/^\[fuzz\] \([0-9]*\) requests in .*/\1/p' "$log" | tail -n 1)
  statuses=$(sed -n 's/^\[fuzz\] [0-9]* requests in [^;]*; statuses: //p' "$log" | tail -n 1)
  if [ "$status" -eq 0 ] && ! grep -Eq '(^|[^0-9])1 passed' <<<"$summary"; then
    echo "round $round ran no fuzzing ($summary): is schemathesis installed for $python?"
    status=1
  fi
  if [ "$status" -eq 0 ]; then result=pass; rm -f "$log"; else result="FAIL (log: $log)"; failed=1; fi
  rows+=("| $round | $examples | ${requests:-?} | $((SECONDS - start)) | ${statuses:-} | $result |")
  [ "$status" -eq 0 ] || break
done
echo
echo "Long schema fuzz: $examples examples per operation, mode and id source, random seeds"
echo
echo "| round | examples | requests | seconds | statuses | result |"
echo "|---:|---:|---:|---:|---|---|"
printf '%s\n' "${rows[@]}"
exit "$failed"
