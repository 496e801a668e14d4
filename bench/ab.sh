#!/usr/bin/env bash
# Before and after, alternating, in one sitting: runs four tally-bench shapes against
# two builds' binaries, one after the other, and prints one line per run.
#
#   bash bench/ab.sh BEFORE_DIR AFTER_DIR [ROUNDS]
#
# Each directory holds a release `tally-bench` with its `tallyd` beside it (copy
# target/release/{tally-bench,tallyd} of each build there). Columns: shape, build,
# ops/s, request p50, p99, p99.9 and max in µs, log sync p50 and p99 in µs.
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,9p "$0"; exit 2; }
BEFORE="$1" AFTER="$2" ROUNDS="${3:-2}"
shapes=(
  "single|--count 3000"
  "open8k|--clients 4 --pipeline 16 --rate 8000 --count 80000"
  "pipelined|--clients 4 --pipeline 64 --count 100000"
  "batched|--clients 2 --pipeline 4 --batch 1000 --count 1000000"
)
for _ in $(seq 1 "$ROUNDS"); do
  for shape in "${shapes[@]}"; do
    name="${shape%%|*}" args="${shape#*|}"
    for build in "$BEFORE" "$AFTER"; do
      # shellcheck disable=SC2086
      "$build/tally-bench" --spawn $args --json 2>/dev/null | python3 -c "
import json, sys
d = json.load(sys.stdin)
print('$name', '$build', round(d['tps']), d['p50_us'], d['p99_us'], d['p999_us'], d['max_us'],
      d['log_sync_p50_us'], d['log_sync_p99_us'])"
    done
  done
done
