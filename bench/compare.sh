#!/usr/bin/env bash
# Runs the PostgreSQL baseline (../shared/anchors/postgres) and tally-bench on this
# machine, one after the other, with matching shapes, and writes a table of ratios.
#
#   bash bench/compare.sh                 # 30 s per run (PostgreSQL: 2 runs per shape)
#   DURATION=10 RUNS=1 bash bench/compare.sh
#
# Shapes (both sides: 100,000 accounts, 8 concurrent clients, one transfer per
# transaction/request, balance check, durable commit):
#   uniform  both accounts uniform
#   hot      one of 10 hot accounts on one side of every transfer
# PostgreSQL: BEGIN; SELECT .. FOR UPDATE (both, id order); check; 2 UPDATEs; entry + 2
# lines INSERTed; COMMIT (pgbench -c 8 -j 2, prepared). Tally: tallyd (fsync) over QUIC
# with mutual TLS, 8 connections x 1 request in flight x 1 transfer; and, for what
# batching buys, 8 x 4 in flight x 1,000 transfers.
# Needs root (the anchor installs PostgreSQL with apt-get and runs it as postgres).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
ANCHOR="${ANCHOR:-$ROOT/../shared/anchors/postgres}"
DURATION="${DURATION:-30}"
RUNS="${RUNS:-2}"
OUT="${OUT:-$ROOT/target/compare}"
mkdir -p "$OUT"

echo "== building tally (release)"
(cd "$ROOT" && cargo build --release --locked -q -p tally-net -p tally-bench)
BENCH="$ROOT/target/release/tally-bench"

echo "== PostgreSQL baseline (${DURATION}s x ${RUNS} per shape)"
BASE="$OUT/pg" DURATION="$DURATION" RUNS="$RUNS" bash "$ANCHOR/run.sh" > "$OUT/pg.log" 2>&1 \
    || { tail -30 "$OUT/pg.log"; exit 1; }
PG_SUMMARY="$OUT/pg/results/summary.txt"

# median of the values of FIELD over the runs of NAME in the PostgreSQL summary
pg() { grep "^$1_run" "$PG_SUMMARY" | sed -E "s/.* $2=([0-9.]+).*/\1/" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

tally() {  # $1 = label, rest = tally-bench arguments; prints tps p50_ms p99_ms (median tps of RUNS)
    local label="$1"; shift
    : > "$OUT/tally_$label.jsonl"
    for _ in $(seq 1 "$RUNS"); do
        (cd "$OUT" && "$BENCH" --spawn --accounts 100000 --duration "$DURATION" --count 1000000000 --verify --json "$@") >> "$OUT/tally_$label.jsonl"
    done
    python3 - "$OUT/tally_$label.jsonl" <<'PY'
import json, sys
rows = sorted((json.loads(l) for l in open(sys.argv[1]) if l.strip()), key=lambda r: r["tps"])
r = rows[(len(rows) - 1) // 2]
assert all(x.get("verified") for x in rows), "tally-bench --verify failed"
print(f'{r["tps"]:.0f} {r["p50_us"]/1000:.2f} {r["p99_us"]/1000:.2f}')
PY
}

echo "== Tally"
read -r tu tu50 tu99 < <(tally uniform --clients 8 --pipeline 1 --batch 1)
read -r th th50 th99 < <(tally hot --clients 8 --pipeline 1 --batch 1 --workload hot --hot-accounts 10)
read -r tb tb50 tb99 < <(tally uniform_batched --clients 8 --pipeline 4 --batch 1000)
read -r tbh tbh50 tbh99 < <(tally hot_batched --clients 8 --pipeline 4 --batch 1000 --workload hot --hot-accounts 10)

pu=$(printf "%.0f" "$(pg uniform_sync-on tps)"); pu50=$(pg uniform_sync-on p50_ms); pu99=$(pg uniform_sync-on p99_ms)
ph=$(printf "%.0f" "$(pg hot_sync-on tps)"); ph50=$(pg hot_sync-on p50_ms); ph99=$(pg hot_sync-on p99_ms)
ratio() { python3 -c "print(f'{$1/$2:.1f}x')"; }
TABLE="$OUT/compare.md"
{
    echo "| shape (durable, 100k accounts, 8 clients) | PostgreSQL tps (p50 / p99 ms) | Tally tps (p50 / p99 ms) | Tally / PostgreSQL |"
    echo "| --- | --- | --- | --- |"
    echo "| uniform, 1 transfer per request | $pu ($pu50 / $pu99) | $tu ($tu50 / $tu99) | $(ratio "$tu" "$pu") |"
    echo "| hot (10 accounts), 1 transfer per request | $ph ($ph50 / $ph99) | $th ($th50 / $th99) | $(ratio "$th" "$ph") |"
    echo "| uniform, Tally batches of 1,000 (x4 in flight) | $pu | $tb ($tb50 / $tb99 per batch) | $(ratio "$tb" "$pu") |"
    echo "| hot, Tally batches of 1,000 (x4 in flight) | $ph | $tbh ($tbh50 / $tbh99 per batch) | $(ratio "$tbh" "$ph") |"
} > "$TABLE"
cat "$TABLE"
echo "(raw: $OUT; machine: $(nproc) CPUs, $(uname -r))"
