"""Windows per model call for `edge-detect score --windows all`: cost per window and peak RSS.

Fresh CLI processes (as a user runs them) score a long and a short file with the
Detector's ``max_batch`` set to each value tried; per-window cost is
``(cpu(long) - cpu(short)) / (windows(long) - windows(short))`` in CPU time (the child's
user+sys from ``wait4``; robust on a shared machine), the median over rounds, every
batch size run in each round (interleaved). Peak RSS is the process's VmHWM at exit.
Why it matters: a fresh process touches every page of a larger batch for the first time
(onnxruntime's arena, the features, the front end's scratch), and on this machine first
touches cost more than batching saves.

    python benchmarks/batch_size.py [--bundle B] [--sizes 1,4,16] [--rounds 3] [--out PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import profile_path  # noqa: E402  (first: keeps the caller's environment for children)
import numpy as np  # noqa: E402

from edge_detector.benchmarking.environment import benchmark_command, capture_environment  # noqa: E402
from edge_detector.defaults import DEFAULT_BUNDLE_DIR  # noqa: E402

#: Runs the CLI with the Detector's default ``max_batch`` replaced (argv[1]); peak RSS on stderr at exit.
_WRAP = profile_path._CLI_WITH_PEAK.replace(
    "sys.argv = ['edge-detect'] + sys.argv[1:]",
    "_B = int(sys.argv[1]); sys.argv = ['edge-detect'] + sys.argv[2:]\n"
    "import edge_detector.detector as _d\n"
    "_d.DEFAULT_MAX_BATCH = _B\n"
    "_init = _d.Detector.__init__\n"
    "def _patched(self, bundle, settings=None, max_batch=None, **kw):\n"
    "    _init(self, bundle, settings, _B if max_batch is None else max_batch, **kw)\n"
    "_d.Detector.__init__ = _patched")


def run(batch: int, path: Path, bundle: str) -> dict[str, Any]:
    rec = profile_path.run_cli_process([str(batch), "score", "--windows", "all", str(path), "--bundle", bundle,
                                        "--threads", "1"], wrapper=_WRAP)
    if rec["exit_code"] != 0:
        raise RuntimeError(f"score {path} with max_batch {batch} exited {rec['exit_code']}")
    rec["windows"] = len(json.loads(rec.pop("stdout").strip().splitlines()[-1])["windows"])
    return rec


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=str(DEFAULT_BUNDLE_DIR))
    ap.add_argument("--sizes", default="1,4,16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--long-seconds", type=float, default=124.0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "batch_size.json"))
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        long_f = profile_path.make_file(Path(tmp), "long.wav", args.long_seconds, 16000, 1, "WAV")
        short_f = profile_path.make_file(Path(tmp), "short.wav", 4.0, 16000, 1, "WAV")
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
            for b in sizes:
                for name, f in (("long", long_f), ("short", short_f)):
                    runs.setdefault(f"{b}:{name}", []).append(run(b, f, args.bundle))
    result = {}
    for b in sizes:
        lo, sh = runs[f"{b}:long"], runs[f"{b}:short"]
        dn = lo[0]["windows"] - sh[0]["windows"]
        per = [(a["cpu_ms"] - c["cpu_ms"]) / dn for a, c in zip(lo, sh)]
        result[str(b)] = {"per_window_cpu_ms": float(np.median(per)), "per_window_rounds_ms": per,
                          "peak_rss_mib_long": max(a["peak_rss_bytes"] for a in lo) / 2**20,
                          "cpu_ms_long": [a["cpu_ms"] for a in lo], "cpu_ms_short": [c["cpu_ms"] for c in sh],
                          "windows": [lo[0]["windows"], sh[0]["windows"]]}
    report = {"benchmark": "batch_size",
              "command": benchmark_command("benchmarks/batch_size.py", argv),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "bundle": args.bundle, "nice": os.nice(0),
              "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
              "max_batch": result, "environment": capture_environment()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    for b, v in result.items():
        print(f"max_batch {b:>3}: {v['per_window_cpu_ms']:.2f} ms/window (CPU), peak RSS {v['peak_rss_mib_long']:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
