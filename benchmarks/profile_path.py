"""Where the time and memory of `edge-detect score` / `gate` go, stage by stage, on one core.

The decision path is decode → mono → resample → windows → front end → ONNX → combine
→ JSON. This script times each stage with the runtime's own functions on synthetic
speech-like files (one short file at 16 kHz, one long stereo file at 44.1 kHz: the
resampler's cost depends on the rate), plus:

- ``ort_ops``: onnxruntime's own profiler on the bundle(s), time per operator type and
  the slowest nodes (one thread), to say what the graph spends its time on
  (e.g. the int8 QDQ graph against fp32);
- ``imports``: wall time and resident memory after each import a fresh ``gate`` process
  makes (interpreter, numpy, soundfile, onnxruntime, click, the detector);
- ``floor``: a fresh process that only imports numpy and onnxruntime, creates the bundle's
  session and runs one window: the peak RSS and CPU time no `gate` can go below;
- ``process``: fresh ``edge-detect gate FILE`` processes: wall and CPU time from spawn to
  exit and the process's peak RSS (VmHWM at exit).

Timing: the script pins itself (and its child processes) to one CPU (``--cpu``), uses
one onnxruntime thread, and runs the stages of every file round-robin for ``--rounds``
rounds (interleaved, so drift on a shared machine hits every stage alike); medians are
reported with every sample kept. Stages are timed in CPU time of the process by default
(``--clock cpu``): on a machine shared with other jobs, wall time mostly measures how long
the process waited for a core. Processes report wall and CPU time. Run it at a fixed nice
level (the committed results used ``nice -n 15``).

    python benchmarks/profile_path.py [--bundle B ...] [--rounds 7] [--cpu 0] [--out PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

#: The environment child processes get: the caller's, without the thread settings below
#: (a user's `edge-detect` does not run with them; they change what numpy maps at import).
CHILD_ENV = dict(os.environ)
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # before numpy loads
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_detector.audio import check_scorable, load_audio, to_mono_float  # noqa: E402
from edge_detector.benchmarking.environment import benchmark_command, capture_environment  # noqa: E402
from edge_detector.defaults import DEFAULT_BUNDLE_DIR  # noqa: E402
from edge_detector.demo_audio import synthesize_vowels  # noqa: E402
from edge_detector.detector import Detector, decide  # noqa: E402
from edge_detector.resample import resample  # noqa: E402
from edge_detector.session import SessionSettings  # noqa: E402
from edge_detector.windows import combine_scores, make_windows, window_starts  # noqa: E402

#: (name, seconds, sample rate, channels, format): short official-rule input and a long file.
DEFAULT_FILES = (("short_16k_mono.wav", 4.0, 16000, 1, "WAV"), ("long_44k1_stereo.flac", 124.0, 44100, 2, "FLAC"))
#: What a fresh `gate` process imports, in order (cumulative: each line includes the ones above).
IMPORT_STEPS = ("numpy", "soundfile", "onnxruntime", "click", "edge_detector.detector", "edge_detector.commands.gate")


def pin_to_cpu(cpu: Optional[int]) -> Optional[list[int]]:
    """Restrict this process (and children it starts) to one CPU; return the CPUs now usable."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    os.sched_setaffinity(0, {int(cpu)})
    return sorted(os.sched_getaffinity(0))


def make_file(folder: Path, name: str, seconds: float, rate: int, channels: int, fmt: str) -> Path:
    """A speech-like file (formant-synthesised vowels, tiled) of the given length, rate and channels."""
    base = synthesize_vowels(5.0, sr=rate, seed=1)
    n = int(round(seconds * rate))
    mono = np.tile(base, n // len(base) + 1)[:n]
    data = mono if channels == 1 else np.stack([mono * (0.9 ** c) for c in range(channels)], axis=1)
    path = folder / name
    sf.write(str(path), data, rate, format=fmt, subtype="PCM_16")
    return path


#: Clocks the stages can be timed with: CPU time of this process (robust on a shared machine:
#: time spent descheduled does not count) or wall time.
CLOCKS = {"cpu": time.process_time_ns, "wall": time.perf_counter_ns}
_CLOCK = [CLOCKS["cpu"]]


def _ms(fn: Callable[[], Any]) -> tuple[float, Any]:
    clock = _CLOCK[0]
    t0 = clock()
    out = fn()
    return (clock() - t0) / 1e6, out


def path_stages(det: Detector, path: Path, windows: str) -> dict[str, float]:
    """One pass through the score path, each stage timed (ms), with the runtime's functions.

    Stages follow :meth:`Detector.score_file`: decode (soundfile), mono mix, resampling,
    the scorability check, the speech-presence check when the detector runs one, window
    placement, front end, ONNX, combination/calibration/decision, the JSON record. With a
    numpy front end and ``--windows all`` the front end runs as the runtime runs it
    (:meth:`SincFFTFrontEnd.features_windows`, ``max_batch`` windows per span).
    ``load_audio`` and ``score_file`` are also timed whole: the stage split re-runs their
    parts one by one, the whole calls are the truth if their internals change.
    """
    rec: dict[str, float] = {}
    rule = det.window_rule(windows)
    rec["decode"], (data, rate) = _ms(lambda: sf.read(str(path), dtype="float32", always_2d=True))
    rec["mono"], mono = _ms(lambda: to_mono_float(data))
    sr = det.bundle.sample_rate
    rec["resample"], x = _ms(lambda: np.clip(resample(mono, int(rate), sr), -1.0, 1.0))
    rec["check"], _ = _ms(lambda: check_scorable(x, sr, det.bundle.min_seconds))
    rec["speech_check"] = 0.0
    if getattr(det, "require_speech", False):
        from edge_detector.speech_presence import judge
        from edge_detector.windows import scored_audio

        rec["speech_check"], _ = _ms(lambda: judge(scored_audio(x, rule), sr))
    scorer = det.scorer
    fe = getattr(scorer, "frontend", None)
    spans = fe is not None and hasattr(fe, "features_windows") and rule.mode == "all" and len(x) > rule.window
    if spans:
        rec["windows"], starts = _ms(lambda: window_starts(len(x), rule.window, rule.hop))
    else:
        rec["windows"], (batch, starts) = _ms(lambda: make_windows(x, rule))
    fe_ms = run_ms = 0.0
    scores = []
    for i in range(0, len(starts), det.max_batch):
        if spans:
            t, feats = _ms(lambda: fe.features_windows(x, starts[i: i + det.max_batch], rule.window))
        else:
            t, feats = _ms(lambda: scorer.model_inputs(batch[i: i + det.max_batch]))
        fe_ms += t
        t, sc = _ms(lambda: scorer.run_inputs(feats))
        run_ms += t
        scores.append(sc)
    rec["frontend"], rec["onnx"] = fe_ms, run_ms
    scores_arr = np.concatenate(scores)

    def combine() -> str:
        combined = combine_scores(scores_arr, rule.combine)
        return decide(det.bundle.calibrate(combined), det.bundle.accept_threshold, det.bundle.reject_threshold)

    rec["combine"], _ = _ms(combine)
    result = det.score_samples(x, source=str(path), windows=windows)  # untimed: builds the record
    rec["json"], _ = _ms(lambda: json.dumps(result.to_record()))
    rec["load_audio_whole"], _ = _ms(lambda: load_audio(path, sr, max_seconds=det.bundle.max_seconds))
    rec["score_file_whole"], res = _ms(lambda: det.score_file(path, windows=windows))
    rec["windows_scored"] = float(len(res.windows))
    return rec


STAGES = ("decode", "mono", "resample", "check", "speech_check", "windows", "frontend", "onnx", "combine", "json")


def profile_files(bundle: str, files: list[Path], windows: str, rounds: int, warmup: int) -> dict[str, Any]:
    det = Detector(bundle, SessionSettings(intra_op_threads=1, inter_op_threads=1))
    samples: dict[str, list[dict[str, float]]] = {p.name: [] for p in files}
    for r in range(warmup + rounds):
        for p in files:  # round-robin over files: every stage of every file sampled across the run
            rec = path_stages(det, p, windows)
            if r >= warmup:
                samples[p.name].append(rec)
    out = {}
    for name, recs in samples.items():
        med = {k: float(np.median([r[k] for r in recs])) for k in recs[0]}
        staged = sum(med[k] for k in STAGES)
        n_win = int(med["windows_scored"])
        info = sf.info(str(next(p for p in files if p.name == name)))
        out[name] = {
            "seconds": info.duration, "source_rate": info.samplerate, "channels": info.channels,
            "windows": n_win, "median_ms": med,
            "share_of_stages": {k: med[k] / staged for k in STAGES},
            "stages_sum_ms": staged, "per_window_ms": staged / n_win,
            "samples_ms": {k: [round(r[k], 4) for r in recs] for k in STAGES + ("score_file_whole",)},
        }
    return out


def onnx_op_profile(model_path: str, input_name: str, feats: np.ndarray, runs: int = 100, warmup: int = 10,
                    top: int = 12) -> dict[str, Any]:
    """onnxruntime's profiler on one ONNX file and input: per-op-type and slowest-node medians (µs), 1 thread."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
        for _ in range(warmup + runs):
            sess.run(None, {input_name: feats})
        events = json.loads(Path(sess.end_profiling()).read_text())
    by_node: dict[tuple[str, str], list[float]] = {}
    run_us = [e["dur"] for e in events if e.get("name") == "model_run"][warmup:]
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_node.setdefault((e["args"]["op_name"], e["name"][: -len("_kernel_time")]), []).append(e["dur"])
    per_op: dict[str, float] = {}
    counts: dict[str, int] = {}
    for (op, _), d in by_node.items():
        per_op[op] = per_op.get(op, 0.0) + float(np.median(d[warmup:] or d))
        counts[op] = counts.get(op, 0) + 1
    nodes = sorted(((float(np.median(d[warmup:] or d)), op, n) for (op, n), d in by_node.items()), reverse=True)
    kernels = sum(per_op.values())
    return {
        "model": str(model_path), "nodes_executed": len(by_node), "model_run_median_us": float(np.median(run_us)),
        "kernel_sum_us": kernels,
        "per_op_type_us": {k: {"us": round(v, 1), "nodes": counts[k], "share": round(v / kernels, 4)}
                           for k, v in sorted(per_op.items(), key=lambda kv: -kv[1])},
        "slowest_nodes_us": [{"us": round(t, 1), "op": op, "node": n} for t, op, n in nodes[:top]],
        "note": "onnxruntime profiler on, 1 thread, graph level all; profiling adds per-node overhead, so "
                "model_run here exceeds an unprofiled run (more so for graphs with many small nodes)",
    }


def ort_op_profile(bundle: str) -> dict[str, Any]:
    """:func:`onnx_op_profile` of a bundle's graph on the features of one synthetic window."""
    det = Detector(bundle, SessionSettings(intra_op_threads=1))
    x = (0.1 * np.random.default_rng(0).standard_normal((1, det.bundle.window_rule.window))).astype(np.float32)
    rec = onnx_op_profile(str(det.bundle.model_path), det.bundle.manifest["onnx"]["input"],
                          det.scorer.model_inputs(x))
    rec.update({"bundle": str(bundle), "variant": det.bundle.manifest["model"]["variant"]})
    return rec


_IMPORT_PROBE = r"""
import sys, time, json, importlib
def hwm():
    for l in open('/proc/self/status'):
        if l.startswith('VmHWM'): return int(l.split()[1]) * 1024
out = [{"step": "interpreter", "t_s": 0.0, "cpu_s": time.process_time(), "peak_rss_bytes": hwm()}]
t0 = time.perf_counter()
for name in sys.argv[1:]:
    importlib.import_module(name)
    out.append({"step": name, "t_s": time.perf_counter() - t0, "cpu_s": time.process_time(),
                "peak_rss_bytes": hwm()})
print(json.dumps(out))
"""


def import_profile(repeats: int) -> list[dict[str, Any]]:
    """Cumulative import time (wall and CPU, the CPU time including the interpreter's start-up) and
    peak RSS of a fresh process, median over ``repeats``."""
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", _IMPORT_PROBE, *IMPORT_STEPS], capture_output=True, text=True,
                             check=True, cwd=str(ROOT), env=CHILD_ENV)
        runs.append(json.loads(out.stdout))
    return [{"step": runs[0][i]["step"], "t_ms": 1000 * float(np.median([r[i]["t_s"] for r in runs])),
             "cpu_ms": 1000 * float(np.median([r[i]["cpu_s"] for r in runs])),
             "peak_rss_mib": float(np.median([r[i]["peak_rss_bytes"] for r in runs])) / 2**20}
            for i in range(len(runs[0]))]


#: The memory floor of any process that scores with numpy + onnxruntime: peak RSS (VmHWM) and CPU
#: time after the two imports, after creating the bundle's session (one thread, graph level all,
#: the runtime's settings) and after running it on one window of zeros.
_FLOOR_PROBE = r"""
import json, sys, time
def hwm():
    for l in open('/proc/self/status'):
        if l.startswith('VmHWM'): return int(l.split()[1]) * 1024
out = [{"step": "interpreter", "cpu_s": time.process_time(), "peak_rss_bytes": hwm()}]
import numpy as np
import onnxruntime
out.append({"step": "import numpy + onnxruntime", "cpu_s": time.process_time(), "peak_rss_bytes": hwm()})
from edge_detector.session import SessionSettings, make_session
sess = make_session(sys.argv[1], SessionSettings(intra_op_threads=1, inter_op_threads=1, graph_optimization_level=sys.argv[2]))
out.append({"step": "+ session", "cpu_s": time.process_time(), "peak_rss_bytes": hwm()})
inp = sess.get_inputs()[0]
shape = [1 if not isinstance(d, int) else d for d in inp.shape]
sess.run(None, {inp.name: np.zeros(shape, np.float32)})
out.append({"step": "+ one window", "cpu_s": time.process_time(), "peak_rss_bytes": hwm()})
print(json.dumps(out))
"""


def floor_profile(bundle: str, repeats: int) -> list[dict[str, Any]]:
    """Peak RSS and CPU time of a fresh process that only imports numpy and onnxruntime, then creates
    the bundle's session, then runs one window: the floor under any `gate` (median over ``repeats``)."""
    from edge_detector.bundle import load_bundle

    b = load_bundle(bundle)
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", _FLOOR_PROBE, str(b.model_path),
                              b.manifest["onnx"]["graph_optimization_level"]], capture_output=True, text=True,
                             check=True, cwd=str(ROOT), env=CHILD_ENV)
        runs.append(json.loads(out.stdout))
    return [{"step": runs[0][i]["step"], "cpu_ms": 1000 * float(np.median([r[i]["cpu_s"] for r in runs])),
             "peak_rss_mib": float(np.median([r[i]["peak_rss_bytes"] for r in runs])) / 2**20}
            for i in range(len(runs[0]))]


#: Runs the CLI in this interpreter and reports the process's own peak RSS (VmHWM) at exit on stderr,
#: also when the command ends with ``os._exit`` (edge_detector.cli.FAST_EXIT_COMMANDS skip atexit).
#: (``ru_maxrss`` of a child from ``wait4`` is unusable: Linux carries the forking parent's peak into it.)
_CLI_WITH_PEAK = r"""
import atexit, os, sys
def _peak():
    for l in open('/proc/self/status'):
        if l.startswith('VmHWM'):
            sys.stderr.write('PEAK_RSS_KIB ' + l.split()[1] + '\n')
            sys.stderr.flush()
atexit.register(_peak)
_os_exit = os._exit
def _exit_with_peak(code):
    _peak()
    _os_exit(code)
os._exit = _exit_with_peak
sys.argv = ['edge-detect'] + sys.argv[1:]
from edge_detector.cli import main
main()
"""


def run_cli_process(args: list[str], wrapper: str = _CLI_WITH_PEAK) -> dict[str, Any]:
    """One fresh ``edge-detect ARGS`` process: wall and CPU ms (spawn → exit), peak RSS, exit code, stdout.

    ``wrapper`` is the ``python -c`` program that runs the CLI and prints ``PEAK_RSS_KIB``.
    """
    argv = [sys.executable, "-c", wrapper, *args]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=str(ROOT), env=CHILD_ENV)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = (time.perf_counter() - t0) * 1000.0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    peak = [ln for ln in stderr.splitlines() if ln.startswith("PEAK_RSS_KIB ")]
    if not peak:
        raise RuntimeError(f"edge-detect {' '.join(args)} reported no peak RSS: {stderr[-500:]}")
    return {"wall_ms": wall, "cpu_ms": (usage.ru_utime + usage.ru_stime) * 1000.0,
            "peak_rss_bytes": int(peak[-1].split()[1]) * 1024, "exit_code": proc.returncode, "stdout": stdout}


def process_profile(args: list[str], repeats: int) -> dict[str, Any]:
    """Fresh ``edge-detect ARGS`` processes: wall and CPU time spawn → exit, and the process's peak RSS."""
    runs = [run_cli_process(args) for _ in range(repeats)]
    rss = [r["peak_rss_bytes"] for r in runs]
    return {"argv": ["edge-detect", *args], "repeats": repeats,
            "wall_ms_median": float(np.median([r["wall_ms"] for r in runs])),
            "cpu_ms_median": float(np.median([r["cpu_ms"] for r in runs])),
            "wall_ms": [round(r["wall_ms"], 2) for r in runs], "cpu_ms": [round(r["cpu_ms"], 2) for r in runs],
            "peak_rss_bytes_max": int(max(rss)), "peak_rss_mib_max": max(rss) / 2**20,
            "peak_rss_mb_max": max(rss) / 1e6, "exit_codes": [r["exit_code"] for r in runs],
            "definition": "wall: spawn to exit of a fresh interpreter running the CLI; cpu: its user+sys time "
                          "(wait4), what the process costs whatever else the machine runs; peak RSS: VmHWM at exit"}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", action="append", default=None,
                    help="Bundle(s) for the ORT operator profile (default: the shipped default and its -int8 "
                         "sibling if present). The path profile uses the first.")
    ap.add_argument("--windows", default="all", choices=["first", "all"])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--process-repeats", type=int, default=5)
    ap.add_argument("--cpu", type=int, default=0, help="CPU to pin to (-1: no pinning).")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                    help="cpu: this process's CPU time (robust on a shared machine); wall: elapsed time.")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "profile_path.json"))
    args = ap.parse_args(argv)
    _CLOCK[0] = CLOCKS[args.clock]

    cpus = pin_to_cpu(None if args.cpu < 0 else args.cpu)
    load_avg = os.getloadavg() if hasattr(os, "getloadavg") else None
    bundles = args.bundle or [str(DEFAULT_BUNDLE_DIR)] + (
        [str(DEFAULT_BUNDLE_DIR.with_name(DEFAULT_BUNDLE_DIR.name + "-int8"))]
        if (DEFAULT_BUNDLE_DIR.with_name(DEFAULT_BUNDLE_DIR.name + "-int8") / "manifest.json").is_file() else [])
    with tempfile.TemporaryDirectory() as tmp:
        files = [make_file(Path(tmp), *spec) for spec in DEFAULT_FILES]
        print(f"path profile: {bundles[0]}, {args.rounds} rounds", file=sys.stderr)
        path = profile_files(bundles[0], files, args.windows, args.rounds, args.warmup)
        print("operator profiles", file=sys.stderr)
        ops = [ort_op_profile(b) for b in bundles]
        print("imports and processes", file=sys.stderr)
        imports = import_profile(args.process_repeats)
        floor = floor_profile(bundles[0], args.process_repeats)
        gate_bundle = ["--bundle", bundles[0]]
        procs = {
            "gate_short": process_profile(["gate", str(files[0]), "--threads", "1"]
                                          + gate_bundle, args.process_repeats),
            "score_all_long": process_profile(["score", "--windows", "all", str(files[1]),
                                                                    "--threads", "1"] + gate_bundle,
                                              max(1, args.process_repeats // 2)),
        }
    report = {
        "benchmark": "profile_path",
        "command": benchmark_command("benchmarks/profile_path.py", argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pinned_cpus": cpus, "nice": os.nice(0), "onnxruntime_threads": 1, "windows": args.windows,
        "clock": args.clock, "load_average_at_start": load_avg,
        "rounds": args.rounds, "warmup_rounds": args.warmup,
        "timing": "medians of warmed rounds; every file's stages run round-robin in each round",
        "bundle": bundles[0], "path": path, "ort_ops": ops, "imports": imports, "floor": floor, "process": procs,
        "environment": capture_environment(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    for name, rec in path.items():
        stages = ", ".join(f"{k} {rec['median_ms'][k]:.2f}" for k in STAGES)
        print(f"{name}: {rec['windows']} windows, {rec['per_window_ms']:.2f} ms/window; {stages} (ms)")
    for o in ops:
        print(f"{o['variant']}: model_run {o['model_run_median_us']:.0f} us (profiled), "
              + ", ".join(f"{k} {v['us']:.0f}" for k, v in list(o['per_op_type_us'].items())[:6]))
    for i in imports:
        print(f"import {i['step']}: wall {i['t_ms']:.0f} ms, CPU {i['cpu_ms']:.0f} ms, peak RSS {i['peak_rss_mib']:.1f} MiB")
    for i in floor:
        print(f"floor {i['step']}: CPU {i['cpu_ms']:.0f} ms, peak RSS {i['peak_rss_mib']:.1f} MiB")
    for k, p in procs.items():
        print(f"{k}: wall {p['wall_ms_median']:.0f} ms, CPU {p['cpu_ms_median']:.0f} ms, peak RSS {p['peak_rss_mib_max']:.1f} MiB "
              f"({p['peak_rss_mb_max']:.1f} MB), exit {p['exit_codes'][0]}")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
