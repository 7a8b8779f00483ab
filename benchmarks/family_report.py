"""Generalisation report of edge bundles: EER on held-out spoof families, per family and system,
and the false rejection of every bona fide corpus at the pooled EER threshold.

A model that learned "studio-clean means synthetic" has a fine pooled EER on a clean set and
rejects most clean human recordings elsewhere (DESIGN §9), so the report shows, beside EER
per family and per system (each family's / system's spoofs against all bona fide trials,
the ASVspoof convention), the share of each bona fide corpus rejected at the pooled EER
threshold. Scores are the bundle's raw model scores on the window rule chosen (the first
window by default, as the ASVspoof evaluation does), computed by the edge runtime itself.

    python benchmarks/family_report.py --data DATA --protocol SPLITS/test.txt --sources DATA/SOURCES.tsv \\
        --bundle edge_detector/models/default --out benchmarks/results/generalisation/test_default.json

Runtime side only (numpy + onnxruntime + soundfile). The protocol names corpus files: keep
protocols out of the repository; the report holds only aggregate figures.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_detector.audio import load_audio  # noqa: E402
from edge_detector.benchmarking.accuracy import clean_json, model_accuracy  # noqa: E402
from edge_detector.detector import Detector  # noqa: E402
from edge_detector.metrics import compute_eer  # noqa: E402
from edge_detector.protocol import ProtocolEntry, read_protocol, resolve_audio  # noqa: E402
from export.family_splits import read_sources  # noqa: E402


def bundle_scores(bundle: str, entries: Sequence[ProtocolEntry], paths: dict[str, Path], windows: str) -> np.ndarray:
    """Raw model score of every entry (the bundle's window combination under ``windows``)."""
    det = Detector(bundle)
    rule = det.window_rule(windows)
    out = np.empty(len(entries))
    t0 = time.time()
    for i, e in enumerate(entries):
        x = load_audio(paths[e.file_id]).samples
        s, _ = det.score_signal(x, rule)
        from edge_detector.windows import combine_scores

        out[i] = combine_scores(s, rule.combine)
        if i % 50 == 0 or i == len(entries) - 1:
            print(f"\r{Path(bundle).name}: {i + 1}/{len(entries)} {time.time() - t0:5.0f}s", end="", file=sys.stderr)
    print(file=sys.stderr)
    return out


def generalisation_report(entries: Sequence[ProtocolEntry], scores: np.ndarray, sources: dict) -> dict[str, Any]:
    """Pooled EER, EER per spoof family and per system, false rejection per bona fide corpus.

    entries/scores: aligned, higher score = more bona fide. ``sources``: file id → (family,
    corpus) from :func:`export.family_splits.read_sources`. The false rejection of a
    corpus is the share of its bona fide files scored below the pooled EER threshold.
    """
    base = model_accuracy(entries, scores)
    is_bona = np.array([e.is_bonafide for e in entries])
    bona = scores[is_bona]
    thr = base["eer_threshold"]
    families = np.array([sources[e.file_id].family for e in entries])
    per_family = {}
    for fam in sorted(set(families[~is_bona].tolist())):
        sel = families == fam
        eer, _ = compute_eer(bona, scores[sel])
        per_family[fam] = {"eer": eer, "n_spoof": int(sel.sum()),
                           "accepted_at_pooled_threshold": float(np.mean(scores[sel] >= thr))}
    corpora: dict[str, list[float]] = defaultdict(list)
    for e, s in zip(entries, scores):
        if e.is_bonafide:
            corpora[sources[e.file_id].corpus].append(float(s))
    frr = {c: {"n": len(v), "rejected_at_pooled_threshold": float(np.mean(np.array(v) < thr))}
           for c, v in sorted(corpora.items())}
    return {"pooled_eer": base["eer"], "pooled_threshold": thr, "n_bonafide": base["n_bonafide"],
            "n_spoof": base["n_spoof"], "per_family": per_family, "per_system": base["per_system"],
            "bonafide_false_rejection_per_corpus": frr}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="audio folder")
    ap.add_argument("--protocol", required=True)
    ap.add_argument("--sources", required=True, help="SOURCES.tsv")
    ap.add_argument("--bundle", action="append", required=True, help="bundle folder (repeatable)")
    ap.add_argument("--windows", choices=["first", "all"], default="first")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    entries = read_protocol(a.protocol)
    sources = read_sources(a.sources)
    paths = resolve_audio(entries, a.data)
    report: dict[str, Any] = {
        "command": "python benchmarks/family_report.py " + " ".join(
            shlex.quote(x) for x in sys.argv[1:]).replace(a.data, "DATA").replace(a.sources, "DATA/SOURCES.tsv"),
        "protocol_files": len(entries), "windows": a.windows, "bundles": {}}
    for b in a.bundle:
        t0 = time.time()
        scores = bundle_scores(b, entries, paths, a.windows)
        rep = generalisation_report(entries, scores, sources)
        rep["wall_seconds"] = round(time.time() - t0, 1)
        report["bundles"][b] = rep
        fams = ", ".join(f"{k} {v['eer'] * 100:.1f} %" for k, v in rep["per_family"].items())
        print(f"{b}: pooled EER {rep['pooled_eer'] * 100:.2f} % ({fams})", file=sys.stderr)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(clean_json(report), indent=2) + "\n")


if __name__ == "__main__":
    main()
