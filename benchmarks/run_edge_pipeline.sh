#!/usr/bin/env bash
# The whole path on an ASVspoof-style corpus, as it produced the bundles the README reports:
# train the full RawNet2 with whole sources held out, prune + fine-tune, export (numpy FFT
# front end; ONNX GRU for fp32, MatMul GRU for int8) with the parity gate, static int8, calibrate, benchmark.
#
#   DATA=/path/to/corpus bash benchmarks/run_edge_pipeline.sh
#
# DATA must hold protocol.txt and the audio. Outputs go to $WORK (default artifacts/):
# full/ (training run), pruned/ and pruned_small/ (pruning fine-tuned on labels), pruned_kd/,
# pruned_kd_small/ and kd_s8/ (fine-tuned on the full model's outputs), full-fp32/ (the full
# model as a bundle), edge-{s12,s8,s12kd,s8kd}-{fp32,int8}/ and edge-kdstep{1,2,3}-fp32/ (edge bundles).
# Nothing from DATA is copied into the repo.
# Override HOLDOUT, EPOCHS, TARGET, STEPS, FT_EPOCHS, KD_EPOCHS, THREADS, RUNS, WARMUP as needed.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATA:?set DATA to the corpus folder (protocol.txt + audio)}"
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
ED=("$PY" -m edge_detector.cli)
WORK=${WORK:-artifacts}
HOLDOUT=${HOLDOUT:-VCTK,ARCTIC,JSUT,CSMSC,LA}
EPOCHS=${EPOCHS:-12}
TARGET=${TARGET:-sinc=12,stage2=64,inner1=12,inner2=32,gru_hidden=256,gru_layers=1,fc1=128}
TARGET_SMALL=${TARGET_SMALL:-sinc=8,stage2=48,inner1=8,inner2=24,gru_hidden=192,gru_layers=1,fc1=96}
STEPS=${STEPS:-4}
FT_EPOCHS=${FT_EPOCHS:-3}
KD_EPOCHS=${KD_EPOCHS:-12}
THREADS=${THREADS:-2}
mkdir -p "$WORK/splits"
set -x
# Splits: held-out sources, and the same validation split `train` makes (seed 1234, 15 %).
"$PY" benchmarks/make_splits.py --protocol "$DATA/protocol.txt" --holdout-sources "$HOLDOUT" --out "$WORK/splits"
"${ED[@]}" train --protocol "$DATA/protocol.txt" --holdout-sources "$HOLDOUT" --audio-dir "$DATA" \
    --out "$WORK/full" --epochs "$EPOCHS" --batch-size 16 --threads "$THREADS" --source-balanced \
    --cache-dir "$WORK/cache"
"${ED[@]}" prune "$WORK/full/best.pt" --protocol "$DATA/protocol.txt" --holdout-sources "$HOLDOUT" \
    --audio-dir "$DATA" --out "$WORK/pruned" --target "$TARGET" --steps "$STEPS" --finetune-epochs "$FT_EPOCHS" \
    --batch-size 16 --threads "$THREADS" --source-balanced --cache-dir "$WORK/cache"
# second, smaller stage: 8 sinc filters (the front end and stage 1 dominate the edge latency)
"${ED[@]}" prune "$WORK/pruned/final.pt" --protocol "$DATA/protocol.txt" --holdout-sources "$HOLDOUT" \
    --audio-dir "$DATA" --out "$WORK/pruned_small" --target "$TARGET_SMALL" --steps 2 --finetune-epochs "$FT_EPOCHS" \
    --batch-size 16 --threads "$THREADS" --source-balanced --cache-dir "$WORK/cache"
# The same two stages fine-tuned on the full model's outputs instead of the labels (the
# edge model is judged by how closely it decides like the full one): margin-MSE to the full
# model's logit margin, half the crops label-free mixes of two crops, and each step keeps
# the epoch whose validation scores rank most like the full model's; then a longer
# distillation of the 8-filter model.
KD=(--distill-from "$WORK/full/best.pt" --distill-alpha 1 --distill-loss margin-mse --distill-mix 0.5
    --select-by fidelity --lr 3e-4)
"${ED[@]}" prune "$WORK/full/best.pt" --protocol "$DATA/protocol.txt" --holdout-sources "$HOLDOUT" \
    --audio-dir "$DATA" --out "$WORK/pruned_kd" --target "$TARGET" --steps "$STEPS" --finetune-epochs "$FT_EPOCHS" \
    --batch-size 16 --threads "$THREADS" --source-balanced --cache-dir "$WORK/cache" "${KD[@]}"
"${ED[@]}" prune "$WORK/pruned_kd/final.pt" --protocol "$DATA/protocol.txt" --holdout-sources "$HOLDOUT" \
    --audio-dir "$DATA" --out "$WORK/pruned_kd_small" --target "$TARGET_SMALL" --steps 2 --finetune-epochs "$FT_EPOCHS" \
    --batch-size 16 --threads "$THREADS" --source-balanced --cache-dir "$WORK/cache" "${KD[@]}"
"${ED[@]}" train --init "$WORK/pruned_kd_small/final.pt" --protocol "$DATA/protocol.txt" --holdout-sources "$HOLDOUT" \
    --audio-dir "$DATA" --out "$WORK/kd_s8" --epochs "$KD_EPOCHS" --batch-size 16 --threads "$THREADS" \
    --source-balanced --cache-dir "$WORK/cache" "${KD[@]}"
"${ED[@]}" export "$WORK/full/best.pt" -o "$WORK/full-fp32" --parity-audio "$DATA" --parity-count 8 --overwrite
"${ED[@]}" calibrate "$WORK/full-fp32" --protocol "$WORK/splits/val.txt" --audio-dir "$DATA"
for pair in "s12:$WORK/pruned/final.pt" "s8:$WORK/pruned_small/final.pt" "s12kd:$WORK/pruned_kd/final.pt" \
            "s8kd:$WORK/kd_s8/best.pt"; do
  name=${pair%%:*}; ckpt=${pair#*:}
  DATA="$DATA" PYTHON="$PY" bash benchmarks/export_edge_variant.sh "$ckpt" "$WORK/edge-$name" "$WORK/splits/val.txt" \
      "$WORK/splits/train.txt" $( [ "${name#s12}" != "$name" ] && echo --max-eer-increase 0.003 )
done
# The intermediate steps of the distilled pruning (fp32 only): more points on the trade-off curve.
for k in 1 2 3; do
  DATA="$DATA" PYTHON="$PY" bash benchmarks/export_edge_variant.sh "$WORK/pruned_kd/step_$k.pt" "$WORK/edge-kdstep$k" \
      "$WORK/splits/val.txt" "$WORK/splits/train.txt" --fp32-only
done
DATA="$DATA" CHECKPOINT="$WORK/full/best.pt" RUNS=${RUNS:-200} WARMUP=${WARMUP:-20} \
    bash benchmarks/run_dev_benchmark.sh "$WORK/full-fp32" \
    "$WORK/edge-s12-fp32" "$WORK/edge-s12-int8" "$WORK/edge-s8-fp32" "$WORK/edge-s8-int8" \
    "$WORK/edge-kdstep1-fp32" "$WORK/edge-kdstep2-fp32" "$WORK/edge-kdstep3-fp32" \
    "$WORK/edge-s12kd-fp32" "$WORK/edge-s12kd-int8" "$WORK/edge-s8kd-fp32" "$WORK/edge-s8kd-int8"
