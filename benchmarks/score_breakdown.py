"""EER of a score file overall, per spoof family and per spoof system (families from SOURCES.tsv).

Every breakdown uses all bona fide files of the score file against the spoofs of one
family / system (:func:`edge_detector.metrics.compute_eer`); systems with fewer than
``--min-spoofs`` files are listed with their counts only.

    python benchmarks/score_breakdown.py --scores RUN/scores_heldout.txt --protocol SPLITS/heldout.txt \\
        --sources DATA/SOURCES.tsv --out results.json
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from edge_detector.metrics import compute_eer
from edge_detector.protocol import read_protocol

from family_splits import read_families


def breakdown(scores: dict[str, float], protocol: Path, sources: Path, min_spoofs: int = 10) -> dict:
    """``{"overall": ..., "families": {name: ...}, "systems": {name: ...}}`` with EER and counts."""
    families = read_families(sources)
    entries = [e for e in read_protocol(protocol) if e.file_id in scores]
    bona = np.array([scores[e.file_id] for e in entries if e.is_bonafide])
    groups: dict[str, dict[str, list[float]]] = {"families": defaultdict(list), "systems": defaultdict(list)}
    for e in entries:
        if not e.is_bonafide:
            groups["families"][families.get(e.file_id, "?")].append(scores[e.file_id])
            groups["systems"][e.system].append(scores[e.file_id])

    def rec(spoof: list[float]) -> dict:
        out = {"bonafide": int(len(bona)), "spoof": len(spoof)}
        if len(spoof) >= min_spoofs and len(bona):
            out["eer"] = float(compute_eer(bona, np.asarray(spoof))[0])
        return out

    every = [s for v in groups["families"].values() for s in v]
    return {"overall": rec(every), **{k: {n: rec(v) for n, v in sorted(g.items())} for k, g in groups.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scores", required=True, help="'FILE_ID SCORE' lines")
    ap.add_argument("--protocol", required=True)
    ap.add_argument("--sources", required=True)
    ap.add_argument("--min-spoofs", type=int, default=10)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    scores = {line.split()[0]: float(line.split()[1]) for line in Path(a.scores).read_text().splitlines() if line.strip()}
    result = breakdown(scores, Path(a.protocol), Path(a.sources), a.min_spoofs)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"overall": result["overall"], "families": result["families"]}, indent=1))


if __name__ == "__main__":
    main()
