"""Cost of one `edge-detect gate` decision against file length and sample rate (issues 16 and 19).

A decision under the first-window rule needs the first 4.04 s of audio. Its cost must not
grow with the file's length or depend on how the source rate relates to 16 kHz. This runs
the real CLI (`edge-detect gate FILE`, one onnxruntime thread, pinned to one core with
``taskset`` when available) as a child process on files it writes into a temporary folder,
and reads the child's wall time and CPU time (``wait4`` rusage) and its own peak RSS (VmHWM
at exit, reported by the child: ``ru_maxrss`` of a child started with vfork carries the
parent's peak). Each case is run ``--runs`` times after one warm-up; medians are reported,
and ratios are taken against the 10 s / 16 kHz case measured in the same run;
``length_independence`` compares the 10 min 44.1 kHz file with a 4.5 s one.

Cases: 10 s and 10 min mono files at 8000, 16000, 22050, 44100, 44101 and 48000 Hz, 4.5 s
files at 16 and 44.1 kHz, a 10 s and a 10 min stereo 192 kHz file, and (to show flat memory
with ``--windows all``, which must decode everything) the 10 s and 10 min 44.1 kHz files
under ``--windows all``.
The audio is the `make-demo` formant synthesis (it passes the speech check, so the model
runs), tiled to length.

    python benchmarks/decode_cost.py [--runs 3] [--out benchmarks/results/decode_cost.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from edge_detector.demo_audio import synthesize_vowels
from edge_detector.resample import resample

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_path import _CLI_WITH_PEAK, CHILD_ENV  # noqa: E402  (the CLI with its VmHWM printed at exit)

REPO = Path(__file__).resolve().parents[1]

RATES = [8000, 16000, 22050, 44100, 44101, 48000]
LENGTHS = {"10s": 10.0, "10min": 600.0}


def write_case(path: Path, seconds: float, rate: int, channels: int) -> None:
    """Tile 10 s of formant vowels (at ``rate``) to ``seconds``, written in 10 s blocks (flat memory)."""
    base = synthesize_vowels(10.0, sr=16000, seed=0)
    if rate != 16000:
        base = resample(base, 16000, rate)
    block = np.repeat(base[:, None], channels, axis=1) if channels > 1 else base
    if channels == 2:
        block = block * np.array([1.0, 0.8], dtype=np.float32)
    n_total = int(round(seconds * rate))
    subtype = "PCM_16"
    with sf.SoundFile(str(path), "w", rate, channels, subtype=subtype) as f:
        done = 0
        while done < n_total:
            part = block[: n_total - done]
            f.write(part)
            done += len(part)


def run_gate(path: Path, windows: str, pin: bool) -> dict:
    cmd = [sys.executable, "-c", _CLI_WITH_PEAK, "gate", "--threads", "1", "--windows", windows, str(path)]
    if pin and shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=CHILD_ENV)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = err.strip().splitlines()
    peak = [ln for ln in lines if ln.startswith("PEAK_RSS_KIB ")]
    if not peak:
        raise RuntimeError(f"gate {path.name} reported no peak RSS: {err[-500:]}")
    lines = [ln for ln in lines if not ln.startswith("PEAK_RSS_KIB ")]
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mib": int(peak[-1].split()[1]) / 1024.0,
            "exit_code": proc.returncode, "stderr_tail": lines[-1:]}


def measure(path: Path, windows: str, runs: int, pin: bool) -> dict:
    run_gate(path, windows, pin)  # warm-up (page cache, imports)
    rs = [run_gate(path, windows, pin) for _ in range(runs)]
    codes = sorted({r["exit_code"] for r in rs})
    return {
        "wall_s_median": round(statistics.median(r["wall_s"] for r in rs), 4),
        "cpu_s_median": round(statistics.median(r["cpu_s"] for r in rs), 4),
        "peak_rss_mib_median": round(statistics.median(r["peak_rss_mib"] for r in rs), 2),
        "exit_codes": codes,
        "decision_note": rs[-1]["stderr_tail"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/decode_cost.json"))
    ap.add_argument("--no-pin", action="store_true", help="do not pin the child to core 0 with taskset")
    ap.add_argument("--quick", action="store_true", help="10 s files only (a smoke run)")
    args = ap.parse_args(argv)
    pin = not args.no_pin
    cases = [(f"{rate}Hz_mono_{name}", rate, 1, secs, "first") for name, secs in LENGTHS.items() for rate in RATES]
    cases += [(f"{rate}Hz_mono_4.5s", rate, 1, 4.5, "first") for rate in (16000, 44100)]
    cases += [(f"192000Hz_stereo_{name}", 192000, 2, secs, "first") for name, secs in LENGTHS.items()]
    cases += [(f"44100Hz_mono_{name}_windows_all", 44100, 1, secs, "all") for name, secs in LENGTHS.items()]
    if args.quick:
        cases = [c for c in cases if c[3] <= 10.0]
    results = {}
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="decode_cost_") as tmp:
        for name, rate, channels, secs, windows in cases:
            path = Path(tmp) / f"{rate}_{channels}_{secs:g}.wav"
            if not path.exists():
                for old in Path(tmp).glob("*.wav"):  # one long file on disk at a time
                    old.unlink()
                write_case(path, secs, rate, channels)
            r = measure(path, windows, args.runs, pin)
            r.update({"rate": rate, "channels": channels, "seconds": secs, "windows": windows,
                      "file_mib": round(path.stat().st_size / 2**20, 1)})
            results[name] = r
            print(f"{name}: {r['wall_s_median']:.3f} s wall, {r['cpu_s_median']:.3f} s cpu, "
                  f"{r['peak_rss_mib_median']:.1f} MiB, exit {r['exit_codes']}", file=sys.stderr)
    ref = results["16000Hz_mono_10s"]
    for r in results.values():
        r["wall_ratio_vs_16k_10s"] = round(r["wall_s_median"] / ref["wall_s_median"], 3)
        r["cpu_ratio_vs_16k_10s"] = round(r["cpu_s_median"] / ref["cpu_s_median"], 3)
        r["rss_ratio_vs_16k_10s"] = round(r["peak_rss_mib_median"] / ref["peak_rss_mib_median"], 3)
    first = [r for r in results.values() if r["windows"] == "first"]
    long_, short = results.get("44100Hz_mono_10min"), results.get("44100Hz_mono_4.5s")
    independence = None if long_ is None or short is None else {
        "case": "gate, first window: 10 min vs 4.5 s mono 44.1 kHz",
        "cpu_ratio": round(long_["cpu_s_median"] / short["cpu_s_median"], 3),
        "wall_ratio": round(long_["wall_s_median"] / short["wall_s_median"], 3),
        "rss_ratio": round(long_["peak_rss_mib_median"] / short["peak_rss_mib_median"], 3)}
    report = {
        "benchmark": "edge-detect gate: wall time, CPU time and peak RSS of the whole process vs file length and rate",
        "command": "python benchmarks/decode_cost.py" + (f" --runs {args.runs}" if args.runs != 3 else "")
                   + (" --no-pin" if args.no_pin else "") + (" --quick" if args.quick else ""),
        "bundle": "shipped default (edge_detector/models/default)",
        "method": "child process per run (edge-detect gate --threads 1 via python -c), pinned to core 0 with "
                  "taskset when present; one warm-up then --runs runs; medians; CPU time from the child's rusage "
                  "(wait4), peak RSS = the child's VmHWM at exit",
        "length_independence": independence,
        "runs": args.runs,
        "pinned": bool(pin and shutil.which("taskset")),
        "summary_first_window": {
            "cpu_s_min": min(r["cpu_s_median"] for r in first), "cpu_s_max": max(r["cpu_s_median"] for r in first),
            "rss_mib_min": min(r["peak_rss_mib_median"] for r in first),
            "rss_mib_max": max(r["peak_rss_mib_median"] for r in first),
        },
        "cases": results,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_at_start": os.getloadavg()[0],
        "elapsed_s": round(time.time() - t_start, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"-> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
