"""End-to-end cost per window: `edge-detect score --windows all` vs the full fp32 PyTorch RawNet2.

Both sides run the whole path on the same files in the same run, on one core
(``--cpu``, default 0) with one thread each (onnxruntime intra-op 1; ``torch.set_num_threads(1)``):

- **edge, CLI**: fresh ``edge-detect score --windows all FILE --bundle B --threads 1``
  processes on a long and a short file. Per-window cost =
  ``(wall(long) - wall(short)) / (windows(long) - windows(short))``: everything a window
  adds (decoding, resampling, windowing, front end, ONNX, combination, JSON), without
  the process start-up, which is reported on its own (``wall(short)``).
- **edge, in process**: ``Detector.score_file(path, windows="all")`` + the JSON record,
  per window the same difference of the long and the short file.
- **full model**: the same decoding and windows (``load_audio`` + ``make_windows``), then
  the official-size RawNet2 (17.6 M parameters; random weights unless ``--checkpoint``:
  the cost does not depend on them) in PyTorch fp32, ``torch.no_grad``, windows batched
  like the runtime batches them (``--batch``, default 16), scores combined by the mean;
  per window the same difference.

All timed calls are interleaved: every round runs each measurement once (edge CLI
long/short, edge in-process long/short, full long/short), and medians over the rounds
are reported with every sample. Times are CPU time by default (``--clock cpu``; the CLI
child's user+sys time from ``wait4``): on a machine shared with other jobs, elapsed time
mostly measures the wait for a core. ``--clock wall`` times elapsed time instead. The headline ratio is
``full per-window (in process) / edge per-window (CLI)``, from one run. Run it at a fixed
nice level (the committed result used ``nice -n 15`` on a shared 2-core machine).

    python benchmarks/e2e_speed.py [--bundle B] [--rounds 5] [--long-seconds 124] [--out PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import profile_path  # noqa: E402,F401  (first: keeps the caller's environment for children, then 1 BLAS thread)
import numpy as np  # noqa: E402

from edge_detector.audio import load_audio  # noqa: E402
from edge_detector.benchmarking.environment import benchmark_command, capture_environment  # noqa: E402
from edge_detector.defaults import DEFAULT_BUNDLE_DIR  # noqa: E402
from edge_detector.detector import Detector  # noqa: E402
from edge_detector.session import SessionSettings  # noqa: E402
from edge_detector.windows import combine_scores, make_windows  # noqa: E402
from profile_path import CLOCKS, make_file, pin_to_cpu, run_cli_process  # noqa: E402


def full_model(checkpoint: Optional[str]):
    """The official-size RawNet2 in eval mode (a checkpoint's weights when given)."""
    import torch

    from export.rawnet2 import RawNet2, RawNet2Config, count_parameters, load_checkpoint

    torch.set_num_threads(1)
    if checkpoint:
        model, _ = load_checkpoint(checkpoint)
    else:
        torch.manual_seed(0)
        model = RawNet2(RawNet2Config())
    return model.eval(), count_parameters(model)


def full_path(model, path: Path, rule, batch: int) -> tuple[float, int]:
    """Decode + windows + PyTorch RawNet2 + mean: the full model's end-to-end path (score, windows)."""
    import torch

    from export.rawnet2 import bonafide_score

    x = load_audio(path, 16000).samples
    windows, _ = make_windows(x, rule)
    scores = []
    with torch.no_grad():
        for i in range(0, len(windows), batch):
            scores.append(bonafide_score(model(torch.from_numpy(windows[i: i + batch]))).numpy())
    return combine_scores(np.concatenate(scores), "mean"), len(windows)


def edge_in_process(det: Detector, path: Path) -> int:
    """What `score` does per file: decide, then serialise the record."""
    result = det.score_file(path, windows="all")
    json.dumps(result.to_record())
    return len(result.windows)


def run_cli(bundle: str, path: Path) -> dict[str, Any]:
    """One fresh `edge-detect score --windows all` process: wall/CPU ms, peak RSS, windows reported."""
    rec = run_cli_process(["score", "--windows", "all", str(path), "--bundle", bundle, "--threads", "1"])
    if rec["exit_code"] != 0:
        raise RuntimeError(f"edge-detect score {path} exited {rec['exit_code']}")
    rec["windows"] = len(json.loads(rec.pop("stdout").strip().splitlines()[-1])["windows"])
    return rec


def _timed(fn: Callable[[], Any], clock: Callable[[], int]) -> tuple[float, Any]:
    t0 = clock()
    out = fn()
    return (clock() - t0) / 1e6, out


def per_window(long_ms: list[float], short_ms: list[float], n_long: int, n_short: int) -> dict[str, Any]:
    """Marginal cost of a window: median over rounds of (long - short) / (windows difference)."""
    diffs = [(a - b) / (n_long - n_short) for a, b in zip(long_ms, short_ms)]
    return {"per_window_ms": float(np.median(diffs)), "per_window_rounds_ms": [round(d, 4) for d in diffs],
            "long_ms_median": float(np.median(long_ms)), "short_ms_median": float(np.median(short_ms)),
            "long_ms": [round(v, 3) for v in long_ms], "short_ms": [round(v, 3) for v in short_ms]}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=str(DEFAULT_BUNDLE_DIR), help="Edge bundle (default: the shipped one).")
    ap.add_argument("--checkpoint", default=None, help="Full-model checkpoint (default: random official-size weights).")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--long-seconds", type=float, default=124.0)
    ap.add_argument("--short-seconds", type=float, default=4.0)
    ap.add_argument("--rate", type=int, default=16000, help="Sample rate of the test files.")
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16, help="Full-model windows per forward (the runtime's max_batch).")
    ap.add_argument("--cpu", type=int, default=0, help="CPU to pin to (-1: no pinning).")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                    help="cpu: CPU time (in-process: this process; CLI: the child's user+sys), robust on a "
                         "shared machine; wall: elapsed time.")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "e2e_speed.json"))
    args = ap.parse_args(argv)
    clock = CLOCKS[args.clock]
    load_avg = os.getloadavg() if hasattr(os, "getloadavg") else None

    cpus = pin_to_cpu(None if args.cpu < 0 else args.cpu)
    det = Detector(args.bundle, SessionSettings(intra_op_threads=1, inter_op_threads=1))
    rule = det.window_rule("all")
    model, n_params = full_model(args.checkpoint)
    samples: dict[str, list[float]] = {k: [] for k in
                                       ("cli_long", "cli_short", "edge_long", "edge_short", "full_long", "full_short")}
    with tempfile.TemporaryDirectory() as tmp:
        long_f = make_file(Path(tmp), "long.wav", args.long_seconds, args.rate, args.channels, "WAV")
        short_f = make_file(Path(tmp), "short.wav", args.short_seconds, args.rate, args.channels, "WAV")
        calls: dict[str, Callable[[], Any]] = {
            "cli_long": lambda: run_cli(args.bundle, long_f),
            "cli_short": lambda: run_cli(args.bundle, short_f),
            "edge_long": lambda: (0.0, edge_in_process(det, long_f)),
            "edge_short": lambda: (0.0, edge_in_process(det, short_f)),
            "full_long": lambda: full_path(model, long_f, rule, args.batch),
            "full_short": lambda: full_path(model, short_f, rule, args.batch),
        }
        windows: dict[str, int] = {}
        cli_wall: dict[str, list[float]] = {"cli_long": [], "cli_short": []}
        peak_rss: list[int] = []
        for r in range(args.warmup + args.rounds):
            print(f"round {r + 1}/{args.warmup + args.rounds}", file=sys.stderr)
            for name, fn in calls.items():
                ms, out = _timed(fn, clock)
                if name.startswith("cli"):  # the child's own time (spawn → exit), not this process's
                    ms, n = (out["cpu_ms"] if args.clock == "cpu" else out["wall_ms"]), out["windows"]
                    if r >= args.warmup:
                        cli_wall[name].append(out["wall_ms"])
                        peak_rss.append(out["peak_rss_bytes"])
                else:
                    n = out[1] if isinstance(out, tuple) else out
                windows[name] = int(n)
                if r >= args.warmup:
                    samples[name].append(ms)
    n_long, n_short = windows["edge_long"], windows["edge_short"]
    assert windows["cli_long"] == windows["full_long"] == n_long and windows["full_short"] == n_short
    cli = per_window(samples["cli_long"], samples["cli_short"], n_long, n_short)
    edge = per_window(samples["edge_long"], samples["edge_short"], n_long, n_short)
    full = per_window(samples["full_long"], samples["full_short"], n_long, n_short)
    report = {
        "benchmark": "e2e_speed",
        "command": benchmark_command("benchmarks/e2e_speed.py", argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "bundle": args.bundle, "model_id": det.bundle.model_id, "variant": det.bundle.manifest["model"]["variant"],
        "full_model": {"parameters": n_params, "weights": args.checkpoint or "random (official sizes)",
                       "batch": args.batch, "threads": 1},
        "pinned_cpus": cpus, "nice": os.nice(0), "rounds": args.rounds, "warmup_rounds": args.warmup,
        "files": {"long_seconds": args.long_seconds, "short_seconds": args.short_seconds, "rate": args.rate,
                  "channels": args.channels, "windows_long": n_long, "windows_short": n_short,
                  "hop": rule.hop, "window": rule.window},
        "edge_cli": cli, "edge_in_process": edge, "full_in_process": full,
        "clock": args.clock, "load_average_at_start": load_avg,
        "cli_start_to_exit_short_ms": cli["short_ms_median"],
        "cli_wall_ms_median": {k: float(np.median(v)) for k, v in cli_wall.items()},
        "cli_peak_rss_mib_max": max(peak_rss) / 2**20,
        "speedup_cli": full["per_window_ms"] / cli["per_window_ms"],
        "speedup_in_process": full["per_window_ms"] / edge["per_window_ms"],
        "definition": "per-window = (long - short) / (windows_long - windows_short), median over interleaved "
                      "rounds; speedup_cli = full (in process) / edge CLI (fresh `edge-detect score --windows all` "
                      "processes), one core, one thread each; times are CPU time with --clock cpu (the CLI "
                      "child's user+sys from wait4), elapsed time with --clock wall",
        "environment": capture_environment(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"windows {n_long} vs {n_short}; per window: full {full['per_window_ms']:.2f} ms, "
          f"edge CLI {cli['per_window_ms']:.2f} ms, edge in-process {edge['per_window_ms']:.2f} ms; "
          f"speed-up {report['speedup_cli']:.1f}x (CLI), {report['speedup_in_process']:.1f}x (in process); "
          f"CLI start→exit on the short file {cli['short_ms_median']:.0f} ms")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
