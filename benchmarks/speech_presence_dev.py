"""False refusals of the speech-presence check on real speech (issue 12 item 6, issue 16 item 2).

Runs :func:`edge_detector.speech_presence.judge` on exactly what the gate judges (the file decoded
by the runtime, the span the default "first" window rule covers) for every file of an
ASVspoof-style corpus, and writes per-corpus refusal counts for the bona fide files (the check's
false refusals: target 0) and per-family counts for the spoofs (informative only: refusing a
spoof is not the check's job, the model's is).

    python benchmarks/speech_presence_dev.py DATA [--out benchmarks/results/speech_presence_dev.json]

DATA holds ``protocol.txt`` (``SPEAKER FILE_ID - SYSTEM LABEL``), the audio (``FILE_ID.flac``)
and optionally ``SOURCES.tsv`` (columns ``file_id``, ``corpus``, ``language``, ``family``) for the
grouping. The result names no path under DATA.
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from edge_detector.audio import load_audio
from edge_detector.errors import EdgeDetectorError
from edge_detector.protocol import read_protocol, resolve_audio
from edge_detector.speech_presence import SpeechCheckConfig, judge
from edge_detector.windows import WindowRule, scored_audio


def _sources(data: Path) -> dict[str, dict[str, str]]:
    path = data / "SOURCES.tsv"
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        return {r["file_id"]: r for r in csv.DictReader(f, delimiter="\t")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="corpus folder with protocol.txt and the audio")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/speech_presence_dev.json"))
    ap.add_argument("--protocol", default="protocol.txt", help="protocol file name inside DATA")
    args = ap.parse_args(argv)

    entries = read_protocol(args.data / args.protocol)
    paths = resolve_audio(entries, args.data)
    src = _sources(args.data)
    rule = WindowRule()  # the default bundle's rule: the first 4.04 s
    groups: dict[str, dict[str, Counter]] = {"bonafide": defaultdict(Counter), "spoof": defaultdict(Counter)}
    refused_bonafide, failures = [], []
    cues: dict[str, list] = defaultdict(list)
    t0 = time.perf_counter()
    for i, e in enumerate(entries):
        label = "bonafide" if e.target == 1 else "spoof"
        meta = src.get(e.file_id, {})
        group = meta.get("corpus", "-") if label == "bonafide" else meta.get("family", e.system)
        try:
            x = load_audio(paths[e.file_id]).samples
        except EdgeDetectorError as exc:
            failures.append({"file_id": e.file_id, "error": exc.kind})
            continue
        ev = judge(scored_audio(x, rule))
        groups[label][group]["files"] += 1
        if label == "bonafide":
            for k in ("dynamic_db", "voiced_fraction", "pitch_spread", "envelope_change_db", "tonality"):
                cues[k].append(getattr(ev, k))
        if not ev.speech:
            groups[label][group]["refused"] += 1
            for f in ev.failed:
                groups[label][group][f"failed_{f}"] += 1
            if label == "bonafide":
                refused_bonafide.append({"file_id": e.file_id, "corpus": meta.get("corpus", "-"),
                                         "language": meta.get("language", "-"), "seconds": round(len(x) / 16000, 3),
                                         "reason": ev.reason(), "evidence": ev.to_dict()})
        if (i + 1) % 250 == 0:
            print(f"{i + 1}/{len(entries)}", file=sys.stderr)
    seconds = time.perf_counter() - t0

    def summary(label: str) -> dict:
        g = groups[label]
        files = sum(c["files"] for c in g.values())
        refused = sum(c["refused"] for c in g.values())
        return {"files": files, "refused": refused, "refusal_rate": round(refused / max(1, files), 5),
                "by_group": {k: dict(sorted(v.items())) for k, v in sorted(g.items())}}

    report = {
        "benchmark": "speech-presence check: refusals on a labelled corpus (first-window span, as the gate)",
        "command": f"python benchmarks/speech_presence_dev.py DATA --protocol {args.protocol}",
        "data": "the project's dev corpus (DATA: protocol.txt, SOURCES.tsv, audio); bona fide grouped by corpus, spoofs by family",
        "config": vars(SpeechCheckConfig()),
        "bonafide": summary("bonafide"),
        "spoof": summary("spoof"),
        "refused_bonafide": refused_bonafide,
        "bonafide_cue_percentiles": {k: {p: round(float(np.percentile(v, p)), 3) for p in (0, 1, 5, 50)}
                                     for k, v in cues.items()} if cues else {},
        "undecodable": failures,
        "seconds": round(seconds, 1),
        "machine": platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    b, s = report["bonafide"], report["spoof"]
    print(f"bona fide refused {b['refused']}/{b['files']}; spoof refused {s['refused']}/{s['files']} "
          f"({seconds:.0f} s) -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
