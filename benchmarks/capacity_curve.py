"""Capacity curve: held-out-family EER against per-window cost and size, one point per edge bundle.

For every bundle (one point: a model size or training recipe) this measures, in one run:

* EER on the validation families and on the test families (pooled, per family), with the
  edge runtime itself (:func:`family_report.bundle_scores`, first window, the ASVspoof rule);
* the per-window cost of the bundle (front end + ONNX graph, batch 1, one thread, CPU time,
  :func:`family_speed.interleaved`: alternating blocks, medians of warmed calls) and of the full
  fp32 PyTorch RawNet2 at the official sizes (:func:`e2e_speed.full_model`) on the same
  window, timed in the same alternation; the speed-up is ``full / edge``;
* the parameter count (manifest) and the bundle's model file size.

    python benchmarks/capacity_curve.py --data DATA --sources DATA/SOURCES.tsv \\
        --val SPLITS/val.txt --test SPLITS/test.txt \\
        --point "small (8/48/192)=edge_detector/models/default" --point "wide (8/64/256)=RUNS/F-fp32" \\
        --out benchmarks/results/generalisation/capacity_curve.json

Training side only because of the full PyTorch reference (torch is imported here, never by
the runtime). Protocols name corpus files: keep them out of the repository; the JSON holds
only aggregate figures, with DATA / SPLITS in place of this machine's folders.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402

from e2e_speed import full_model  # noqa: E402
from edge_detector.benchmarking.environment import capture_environment  # noqa: E402
from edge_detector.demo_audio import synthesize_vowels  # noqa: E402
from edge_detector.detector import Detector  # noqa: E402
from edge_detector.protocol import read_protocol, resolve_audio  # noqa: E402
from edge_detector.session import SessionSettings  # noqa: E402
from edge_detector.windows import first_window  # noqa: E402
from export.family_splits import read_sources  # noqa: E402
from family_report import bundle_scores, generalisation_report  # noqa: E402
from family_speed import CLOCKS, interleaved  # noqa: E402

WINDOW = 64600


def _parse_point(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise SystemExit(f"--point {text!r}: expected LABEL=BUNDLE_FOLDER")
    label, path = text.split("=", 1)
    if not (Path(path) / "manifest.json").is_file():
        raise SystemExit(f"--point {label}: {path} is not a bundle folder (no manifest.json)")
    return label, path


def _model_bytes(bundle: str) -> int:
    files = json.loads((Path(bundle) / "manifest.json").read_text()).get("files", {})
    names = [n for n in files if n.endswith((".onnx", ".npz"))] or list(files)
    return int(sum((Path(bundle) / n).stat().st_size for n in names))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="audio folder")
    ap.add_argument("--sources", required=True, help="SOURCES.tsv")
    ap.add_argument("--val", required=True, help="protocol of the validation families")
    ap.add_argument("--test", required=True, help="protocol of the test families")
    ap.add_argument("--point", action="append", required=True, help="LABEL=BUNDLE (repeatable)")
    ap.add_argument("--runs", type=int, default=40, help="timed calls per model")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    points = [_parse_point(p) for p in a.point]
    sources = read_sources(a.sources)
    parts = {}
    for name, proto in (("val", a.val), ("test", a.test)):
        entries = read_protocol(proto)
        parts[name] = (entries, resolve_audio(entries, a.data))

    import torch

    model, full_params = full_model(None)
    window = first_window(synthesize_vowels(WINDOW / 16000 + 0.01), WINDOW)[None, :].astype(np.float32)
    x = torch.from_numpy(window)
    dets = {label: Detector(path, SessionSettings(intra_op_threads=1)) for label, path in points}

    def full() -> None:
        with torch.inference_mode():
            model(x)

    fns: dict[str, Any] = {"full fp32 PyTorch RawNet2": full}
    fns.update({label: (lambda d=d: d.score_windows(window)) for label, d in dets.items()})
    load_start = os.getloadavg()
    samples = interleaved(fns, warmup=3, runs=a.runs, clock=CLOCKS[a.clock])
    full_ms = float(np.median(samples["full fp32 PyTorch RawNet2"]))

    out: dict[str, Any] = {
        "command": "python benchmarks/capacity_curve.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "clock": a.clock, "threads": 1, "window_samples": WINDOW, "runs": a.runs,
        "load_average_at_start": load_start, "load_average_at_end": None,
        "full_model": {"parameters": full_params, "median_ms": full_ms},
        "points": {},
    }
    for label, path in points:
        det = dets[label]
        manifest = det.bundle.manifest
        point: dict[str, Any] = {
            "bundle": Path(path).name, "model_id": det.bundle.model_id,
            "family": manifest["model"]["family"],
            "config": manifest["model"].get("config"),
            "parameters": manifest["model"].get("parameters"),
            "model_bytes": _model_bytes(path),
            "median_ms_per_window": float(np.median(samples[label])),
            "speedup_vs_full": full_ms / float(np.median(samples[label])),
        }
        for name, (entries, paths) in parts.items():
            t0 = time.time()
            rep = generalisation_report(entries, bundle_scores(path, entries, paths, "first"), sources)
            point[name] = {"pooled_eer": rep["pooled_eer"],
                           "per_family": {k: v["eer"] for k, v in rep["per_family"].items()},
                           "n_bonafide": rep["n_bonafide"], "n_spoof": rep["n_spoof"],
                           "wall_seconds": round(time.time() - t0, 1)}
        out["points"][label] = point
        print(f"{label}: val {point['val']['pooled_eer'] * 100:.1f} %, test {point['test']['pooled_eer'] * 100:.1f} %, "
              f"{point['median_ms_per_window']:.2f} ms/window ({point['speedup_vs_full']:.1f}x), "
              f"{point['parameters']} parameters, {point['model_bytes'] / 1e6:.2f} MB", file=sys.stderr)
    out["load_average_at_end"] = os.getloadavg()
    out["environment"] = capture_environment()
    text = json.dumps(out, indent=2) + "\n"
    for folder, name in ((a.data, "DATA"), (str(Path(a.val).parent), "SPLITS"), (str(ROOT) + "/", "")):
        text = text.replace(folder, name)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
