#!/usr/bin/env bash
# Reproduce the benchmark the README quotes: full fp32 model vs every edge bundle on the
# held-out sources of the dev corpus (VCTK, ARCTIC, JSUT, CSMSC, LA: never seen in
# training), then regenerate the README table from the result.
#
#   bash benchmarks/run_dev_benchmark.sh [BUNDLE_DIR ...]
#
# Without arguments every bundle folder directly under artifacts/ (a folder holding a
# manifest.json, except tiny*) is benchmarked. Settings can be overridden through the
# environment: DATA, CHECKPOINT, OUT, THREADS, RUNS, WARMUP, COLD_RUNS, SOURCES, PYTHON, and
# UPDATE_README=0 to leave the README tables alone (for a trial run with another model).
# The exact command lines end up in $OUT/bench.json ("command") and in $OUT/commands.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DATA=${DATA:?set DATA to the corpus folder (protocol.txt + audio)}
CHECKPOINT=${CHECKPOINT:-artifacts/full/best.pt}
OUT=${OUT:-benchmarks/results/dev-heldout}
THREADS=${THREADS:-1,2}
RUNS=${RUNS:-50}
WARMUP=${WARMUP:-5}
COLD_RUNS=${COLD_RUNS:-3}
SOURCES=${SOURCES:-VCTK,ARCTIC,JSUT,CSMSC,LA}
UPDATE_README=${UPDATE_README:-1}

if [ "$#" -gt 0 ]; then
  BUNDLES=("$@")
else
  BUNDLES=()
  for m in artifacts/*/manifest.json; do
    [ -e "$m" ] || continue
    d=$(dirname "$m")
    case "$(basename "$d")" in tiny*) continue ;; esac
    BUNDLES+=("$d")
  done
fi
if [ "${#BUNDLES[@]}" -eq 0 ]; then
  echo "no bundles given and none found under artifacts/ (pass bundle folders as arguments)" >&2
  exit 2
fi
[ -f "$CHECKPOINT" ] || { echo "full checkpoint not found: $CHECKPOINT (set CHECKPOINT=...)" >&2; exit 2; }

mkdir -p "$OUT"
PROTOCOL="$OUT/protocol_heldout.txt"
BUNDLE_ARGS=()
for b in "${BUNDLES[@]}"; do BUNDLE_ARGS+=(--bundle "$b"); done

PROTO_CMD=("$PYTHON" benchmarks/make_protocol.py --protocol "$DATA/protocol.txt" --sources "$SOURCES" --out "$PROTOCOL")
BENCH_CMD=("$PYTHON" -m edge_detector.cli bench --protocol "$PROTOCOL" --audio-dir "$DATA" --checkpoint "$CHECKPOINT"
           "${BUNDLE_ARGS[@]}" --threads "$THREADS" --runs "$RUNS" --warmup "$WARMUP" --cold-runs "$COLD_RUNS"
           --out "$OUT")
TABLE_CMD=("$PYTHON" benchmarks/make_table.py "$OUT/bench.json")

{
  echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  printf '%q ' "${PROTO_CMD[@]}"; echo
  printf '%q ' "${BENCH_CMD[@]}"; echo
  printf '%q ' "${TABLE_CMD[@]}"; echo
} > "$OUT/commands.txt"

"${PROTO_CMD[@]}"
"${BENCH_CMD[@]}"
if [ "$UPDATE_README" = 1 ]; then "${TABLE_CMD[@]}"; fi
echo "done: $OUT/bench.md" >&2
