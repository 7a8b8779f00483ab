"""A fusion bundle against each of its members on labelled protocols, with paired bootstrap intervals.

One pass over each protocol: the fusion bundle's scorer gives every file's members'
calibrated scores (``Detector.features_file``, first window, as `calibrate` and the
ASVspoof evaluation use), so the members alone, the fusion as calibrated (``sum_i w_i llr_i
+ b``) and the unweighted mean of the members are scored on exactly the same audio and
windows. EER from :func:`edge_detector.metrics.compute_eer`. The interval of each EER
difference (fusion minus system) is a paired, class-stratified bootstrap: bona fide and
spoof files are resampled with replacement separately and every system is scored on the
same resample (percentile interval; Efron & Tibshirani, "An Introduction to the
Bootstrap", 1993, ch. 13). ``mean_of_members`` is the unweighted mean of the members'
calibrated scores (no fit on this data, but it inherits each member's own calibration);
``fusion_crossfit_on_this_protocol`` fits the weights on the other folds of the same
protocol (``--folds``, class-stratified): on the protocol the fusion was calibrated on it
is the out-of-sample figure, on any other it shows what re-fitting there would give.

    python benchmarks/fusion_eval.py --fusion FUSION --data DATA --protocol SPLITS/val.txt \\
        --protocol SPLITS/test.txt --out benchmarks/results/fusion/bootstrap.json

Runtime side only (numpy + onnxruntime + soundfile); the report holds aggregate figures only.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_detector.calibration import fit_logistic_regression  # noqa: E402
from edge_detector.detector import Detector  # noqa: E402
from edge_detector.errors import EdgeDetectorError  # noqa: E402
from edge_detector.metrics import compute_eer  # noqa: E402
from edge_detector.protocol import read_protocol, resolve_audio  # noqa: E402
from edge_detector.session import SessionSettings  # noqa: E402


def member_features(det: Detector, protocol: str, data: str) -> tuple[np.ndarray, np.ndarray, int]:
    """``[n, k]`` members' calibrated scores of the protocol's files, labels ``[n]``, files skipped."""
    entries = read_protocol(protocol)
    paths = resolve_audio(entries, data)
    rows, labels, skipped = [], [], 0
    for i, e in enumerate(entries):
        try:
            rows.append(det.features_file(paths[e.file_id], windows="first"))
        except EdgeDetectorError:
            skipped += 1
            continue
        labels.append(e.target)
        if i % 100 == 0:
            print(f"\r{Path(protocol).name}: {i + 1}/{len(entries)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    return np.asarray(rows), np.asarray(labels), skipped


def eer_of(scores: np.ndarray, y: np.ndarray) -> float:
    return float(compute_eer(scores[y == 1], scores[y == 0])[0])


def compare(systems: dict[str, np.ndarray], y: np.ndarray, reference: str, reps: int, seed: int) -> dict[str, Any]:
    """EER of every system, and the paired bootstrap of ``EER(reference) - EER(system)``."""
    bona, spoof = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    rng = np.random.default_rng(seed)
    boot = {k: np.empty(reps) for k in systems}
    for r in range(reps):
        idx = np.concatenate([rng.choice(bona, bona.size), rng.choice(spoof, spoof.size)])
        for k, s in systems.items():
            boot[k][r] = eer_of(s[idx], y[idx])
    out: dict[str, Any] = {}
    for k, s in systems.items():
        rec: dict[str, Any] = {"eer": eer_of(s, y)}
        if k != reference:
            d = boot[reference] - boot[k]
            rec[f"{reference}_minus_this"] = {"eer_difference": eer_of(systems[reference], y) - rec["eer"],
                                              "ci95": [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))],
                                              "share_of_resamples_where_fusion_is_lower": float(np.mean(d < 0))}
        out[k] = rec
    return out


def crossfit_scores(x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fused scores of every file with weights fitted (:func:`fit_logistic_regression`) on the other
    ``folds - 1`` class-stratified folds of the same protocol: an out-of-sample figure for the set the
    shipped weights were fitted on."""
    rng = np.random.default_rng(seed)
    fold = np.empty(y.size, dtype=int)
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == cls))
        fold[idx] = np.arange(idx.size) % folds
    out = np.empty(y.size)
    for f in range(folds):
        w, b = fit_logistic_regression(x[fold != f], y[fold != f])
        out[fold == f] = x[fold == f] @ w + b
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fusion", required=True, help="a calibrated fusion bundle")
    ap.add_argument("--data", required=True, help="audio folder")
    ap.add_argument("--protocol", action="append", required=True, help="labelled protocol (repeatable)")
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folds", type=int, default=10, help="cross-fitted fusion: folds per protocol")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    det = Detector(a.fusion, SessionSettings(intra_op_threads=1), require_speech=False)
    m = det.bundle.manifest
    names, w, b = m["fusion"]["members"], np.asarray(m["fusion"]["weights"]), float(m["calibration"]["offset"])
    report: dict[str, Any] = {
        "command": "python benchmarks/fusion_eval.py " + shlex.join(sys.argv[1:]).replace(a.data, "DATA"),
        "fusion": {"model_id": det.bundle.model_id, "members": names, "weights": w.tolist(), "offset": b,
                   "fitted_on": m["calibration"].get("fitted_on")},
        "windows": "first", "crossfit_folds": a.folds, "bootstrap": {"resamples": a.bootstrap, "seed": a.seed, "paired": True,
                                          "stratified": "bona fide and spoof resampled separately"},
        "protocols": {}}
    for protocol in a.protocol:
        t0 = time.process_time()
        x, y, skipped = member_features(det, protocol, a.data)
        systems = {"fusion": x @ w + b, "mean_of_members": x.mean(axis=1),
                   "fusion_crossfit_on_this_protocol": crossfit_scores(x, y, a.folds, a.seed)}
        systems.update({name: x[:, i] for i, name in enumerate(names)})
        rec = compare(systems, y, "fusion", a.bootstrap, a.seed)
        report["protocols"][Path(protocol).name] = {
            "files": int(y.size), "bonafide": int((y == 1).sum()), "spoof": int((y == 0).sum()), "skipped": skipped,
            "cpu_seconds": round(time.process_time() - t0, 1), "systems": rec}
        print(f"{Path(protocol).name}: " + ", ".join(f"{k} {v['eer'] * 100:.1f} %" for k, v in rec.items()),
              file=sys.stderr)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
