#!/usr/bin/env bash
# Export one pruned checkpoint as the pair of edge bundles the project ships and benchmarks:
#   OUT_PREFIX-fp32/   numpy FFT front end + onnxruntime's GRU op (fastest fp32, least memory)
#   OUT_PREFIX-int8/   static int8 of OUT_PREFIX-fp32: the convolutions with >= 16 input channels
#                      int8 (QDQ), the GRU kept as onnxruntime's one fp32 GRU op with its weights
#                      stored int8; the 8-channel stage-1 convolutions stay fp32 (slower as int8
#                      on x86 VNNI). The fastest int8 measured here (benchmarks/int8_speed.py:
#                      an all-int8 MatMul-GRU export was 0.85x fp32 per window) and the smallest.
# each with the parity gate and calibrated on VAL_PROTOCOL. One script, so the pipeline and
# the default-bundle build cannot drift apart in how a variant is made.
#
#   DATA=/path/to/corpus bash benchmarks/export_edge_variant.sh CHECKPOINT OUT_PREFIX VAL_PROTOCOL \
#       CALIB_PROTOCOL [--fp32-only | extra quantize options ...]
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATA:?set DATA to the corpus folder (protocol.txt + audio)}"
[ $# -ge 4 ] || { echo "usage: $0 CHECKPOINT OUT_PREFIX VAL_PROTOCOL CALIB_PROTOCOL [--fp32-only | quantize options]" >&2; exit 2; }
CKPT=$1 OUT=$2 VAL=$3 CALIB=$4
shift 4
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
ED=("$PY" -m edge_detector.cli)
set -x
"${ED[@]}" export "$CKPT" -o "$OUT-fp32" --frontend numpy-fft --gru onnx --parity-audio "$DATA" --parity-count 8 --overwrite
"${ED[@]}" calibrate "$OUT-fp32" --protocol "$VAL" --audio-dir "$DATA"
"$PY" -m edge_detector.selfcheck write "$OUT-fp32"  # selfcheck.json: scores on seeded signals
[ "${1:-}" = --fp32-only ] && exit 0
# quantize judges its sensitivity runs with the input bundle's thresholds: the fp32 bundle is calibrated above
"${ED[@]}" quantize "$OUT-fp32" -o "$OUT-int8" --protocol "$CALIB" --audio-dir "$DATA" \
    --op-types Conv --min-conv-channels 16 --gru-weights int8 \
    --calib-count 64 --eval-count 64 --overwrite "$@"
"${ED[@]}" calibrate "$OUT-int8" --protocol "$VAL" --audio-dir "$DATA"
"$PY" -m edge_detector.selfcheck write "$OUT-int8"
