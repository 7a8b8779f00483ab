"""Per-window cost of bundles of any family, timed in alternating blocks on one thread.

Every bundle is loaded with :class:`edge_detector.detector.Detector` (the runtime's own
path, whatever ``model.family``) at ``intra_op_threads=1`` (onnxruntime threads; numpy's
BLAS for the LFCC-GMM family) and scores the same 64 600-sample window (speech-like
synthetic vowels, :func:`edge_detector.demo_audio.synthesize_vowels`) batch 1. Bundles are timed in
alternating blocks (10 timed calls after 2 untimed ones, per bundle in turn) so drift
hits each alike; ratios are to the first bundle.

``--clock cpu`` (default) times CPU seconds of this process: on a machine shared with
other jobs, wall time mostly measures the wait for a core (this project's machine ran at
a load average of ~15 on 2 cores while these figures were taken); ``--clock wall`` times
elapsed time, the figure an idle device would see.

    python benchmarks/family_speed.py --bundle edge_detector/models/default \\
        --bundle benchmarks/results/lfcc_gmm/bundle_c128 --out benchmarks/results/lfcc_gmm/speed.json
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from edge_detector.benchmarking.environment import capture_environment  # noqa: E402
from edge_detector.benchmarking.stats import latency_summary  # noqa: E402
from edge_detector.demo_audio import synthesize_vowels  # noqa: E402
from edge_detector.detector import Detector  # noqa: E402
from edge_detector.session import SessionSettings  # noqa: E402
from edge_detector.windows import first_window  # noqa: E402

CLOCKS = {"cpu": time.process_time_ns, "wall": time.perf_counter_ns}


def interleaved(fns: dict, warmup: int, runs: int, clock, block: int = 10) -> dict[str, np.ndarray]:
    """Milliseconds per call of every function, sampled in alternating blocks of ``block`` calls."""
    out = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    while min(len(v) for v in out.values()) < runs:
        for k, fn in fns.items():
            fn(), fn()
            for _ in range(block):
                t0 = clock()
                fn()
                out[k].append((clock() - t0) / 1e6)
    return {k: np.asarray(v[:runs]) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", action="append", required=True, help="bundle folder (repeatable; first = reference)")
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    window = first_window(synthesize_vowels(4.0375), 64600)[None, :].astype(np.float32)
    dets = {p: Detector(p, SessionSettings(intra_op_threads=1)) for p in a.bundle}
    fns = {p: (lambda d=d: d.score_windows(window)) for p, d in dets.items()}
    load_start = os.getloadavg()
    samples = interleaved(fns, a.warmup, a.runs, CLOCKS[a.clock])
    ref = float(np.median(samples[a.bundle[0]]))
    result = {
        "command": "python benchmarks/family_speed.py " + shlex.join(sys.argv[1:]),
        "clock": a.clock, "threads": 1, "window_samples": 64600, "batch": 1,
        "load_average_at_start": load_start, "load_average_at_end": os.getloadavg(),
        "environment": capture_environment(),
        "bundles": {p: {"family": d.bundle.manifest["model"]["family"], "model_id": d.bundle.model_id,
                        "runs_on": d.provider, **latency_summary(samples[p], 64600 / 16000.0),
                        "median_ratio_to_first": float(np.median(samples[p])) / ref,
                        "samples_ms": [round(float(v), 4) for v in samples[p]]}
                    for p, d in dets.items()},
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    for p, r in result["bundles"].items():
        print(f"{p}: {r['family']} median {np.median(samples[p]):.2f} ms ({a.clock}), "
              f"ratio to first {r['median_ratio_to_first']:.3f}")


if __name__ == "__main__":
    main()
