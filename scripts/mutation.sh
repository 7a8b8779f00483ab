#!/usr/bin/env bash
# Mutation testing with mutmut (3.x): which deliberate bugs in core modules does the suite catch?
#
#   bash scripts/mutation.sh                       # the default bounded set (see below)
#   MODULES="edge_detector/calibration.py edge_detector/windows.py edge_detector/commands/gate.py" \
#   TESTS="tests/test_calibration.py tests/test_windows.py tests/test_gate_fail_closed.py" KEYWORDS="" \
#       bash scripts/mutation.sh                   # another set (gate tests export a tiny bundle per mutant run)
#
# Not part of CI (slow). Needs mutmut in the venv: .venv/bin/pip install mutmut
# It works on a throw-away copy of the tracked files (mutmut rewrites sources under mutants/),
# so the checkout is never touched, and prints `mutmut results` plus a per-status count.
# Environment: MODULES (files to mutate), TESTS (test files run against each mutant),
# KEYWORDS (a pytest -k filter on test names: the default leaves out the calibrate-command tests,
# which train and export a model; -k also matches module names, so never filter on a file's prefix),
# LIMIT (seconds of wall time, default 1800), JOBS (parallel mutants, default 1), OUT (keep the
# copy here instead of a temporary folder).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
MUTMUT=${MUTMUT:-$(dirname "$PY")/mutmut}
[ -x "$MUTMUT" ] || { echo "mutmut not found at $MUTMUT: .venv/bin/pip install mutmut" >&2; exit 12; }
MODULES=${MODULES:-"edge_detector/calibration.py edge_detector/windows.py"}
TESTS=${TESTS:-"tests/test_calibration.py tests/test_calibrate_thresholds.py tests/test_windows.py"}
KEYWORDS=${KEYWORDS-"not resigns_the_manifest and not to_a_copy and not writes_the_targets and not refuses_one_class"}
LIMIT=${LIMIT:-1800}
JOBS=${JOBS:-1}
WORK=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/mutation.XXXXXX")}
mkdir -p "$WORK"
git ls-files -z | xargs -0 cp --parents -t "$WORK"
cd "$WORK"
toml_list() { printf '['; local sep=""; for x in "$@"; do printf '%s"%s"' "$sep" "$x"; sep=", "; done; printf ']'; }
# shellcheck disable=SC2086
{
  echo
  echo "[tool.mutmut]"
  echo "source_paths = [\"edge_detector/\"]"
  echo "only_mutate = $(toml_list $MODULES)"
  echo "also_copy = [\"export/\", \"quantize/\", \"firmware_config/\", \"benchmarks/\"]"
  echo "pytest_add_cli_args_test_selection = $(toml_list $TESTS)"
  if [ -n "$KEYWORDS" ]; then
    echo "pytest_add_cli_args = [\"-q\", \"-p\", \"no:cacheprovider\", \"-k\", \"$KEYWORDS\"]"
  else
    echo "pytest_add_cli_args = [\"-q\", \"-p\", \"no:cacheprovider\"]"
  fi
} >> pyproject.toml
echo "mutation run in $WORK: mutating $MODULES against $TESTS (-k '$KEYWORDS')" >&2
status=0
timeout "$LIMIT" nice -n 15 "$MUTMUT" run --max-children "$JOBS" || status=$?
[ "$status" = 124 ] && echo "stopped after LIMIT=$LIMIT s: results are partial" >&2
"$MUTMUT" results --all true > results.txt 2>&1 || "$MUTMUT" results > results.txt 2>&1 || true
cat results.txt
echo "--- count by status" >&2
sed -n 's/.*: \([a-z ]*\)$/\1/p' results.txt | sort | uniq -c >&2
echo "copy kept in $WORK (mutmut show <name> prints a mutant's diff)" >&2
