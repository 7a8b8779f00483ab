"""Held-out-family EER of training checkpoints: the curve along one training run.

Validation EER (what picks the checkpoint) swings between epochs; this scores the kept
checkpoints of a run (``train --keep-every N`` writes ``epoch_N.pt``) on the validation and the
test families with the training-side PyTorch scorer (first 4.04 s window, the ASVspoof rule,
:func:`export.scoring.score_signals`) so the report can show how the test EER moves with the
validation EER. It is a measurement, never a selection: checkpoints are still picked on the
validation families only.

    python benchmarks/checkpoint_curve.py --data DATA --val SPLITS/val.txt --test SPLITS/test.txt \\
        --checkpoint RUNS/H/epoch_60.pt --checkpoint RUNS/H/epoch_64.pt ... \\
        --out benchmarks/results/generalisation/checkpoint_curve.json

Training side (imports torch). The JSON holds aggregate figures only; DATA / SPLITS / RUNS
stand in for this machine's folders.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from edge_detector.metrics import compute_eer  # noqa: E402
from edge_detector.protocol import read_protocol  # noqa: E402


def eer_of(scores: np.ndarray, labels: np.ndarray) -> float:
    """EER (fraction) of ``scores`` (higher = bona fide) against 0/1 ``labels`` (1 = bona fide)."""
    return float(compute_eer(scores[labels == 1], scores[labels == 0])[0])


def checkpoint_eers(checkpoints: list[str], sets: dict[str, Any], threads: int = 1) -> list[dict[str, Any]]:
    """Per checkpoint (named ``run folder/file``): its epoch (from the checkpoint's meta), the
    validation EER it recorded, and the EER on each named set (``sets``: name →
    :class:`export.dataset.Corpus`, labels 1 = bona fide)."""
    import torch

    from export.rawnet2 import load_checkpoint
    from export.scoring import score_signals

    torch.set_num_threads(threads)
    rows = []
    for path in checkpoints:
        model, meta = load_checkpoint(path)
        row: dict[str, Any] = {"checkpoint": f"{Path(path).parent.name}/{Path(path).name}", "epoch": meta.get("epoch"),
                               "recorded_val_eer": meta.get("val_eer")}
        for name, corpus in sets.items():
            row[f"{name}_eer"] = eer_of(score_signals(model, corpus.signals), corpus.labels)
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="audio folder")
    ap.add_argument("--val", required=True, help="protocol of the validation families")
    ap.add_argument("--test", required=True, help="protocol of the test families")
    ap.add_argument("--checkpoint", action="append", required=True, help="checkpoint .pt (repeatable)")
    ap.add_argument("--cache-dir", default=None, help="decoded-audio cache folder")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    from export.dataset import load_corpus

    t0 = time.time()
    sets = {name: load_corpus(read_protocol(p), a.data, cache_dir=a.cache_dir, progress=False)
            for name, p in (("val", a.val), ("test", a.test))}
    rows = checkpoint_eers(a.checkpoint, sets, a.threads)
    cmd = " ".join(shlex.quote(x) for x in sys.argv[1:])
    for old, new in ((a.data, "DATA"), (str(Path(a.val).parent), "SPLITS"), (a.cache_dir or "\0", "CACHE")):
        cmd = cmd.replace(old, new)
    for c in a.checkpoint:
        cmd = cmd.replace(str(Path(c).parent.parent), "RUNS")
    report = {"command": "python benchmarks/checkpoint_curve.py " + cmd,
              "scorer": "PyTorch, first 4.04 s window", "files": {k: len(v.entries) for k, v in sets.items()},
              "wall_seconds": round(time.time() - t0, 1), "checkpoints": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
