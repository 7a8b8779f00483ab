"""A process that runs only the edge path: for cold start and peak memory.

Run as ``python -m edge_detector.benchmarking.probe --bundle B [--audio F] [--threads T]
[--windows K]``. It imports the runtime, loads and verifies the bundle, creates the
session, makes one decision (printing a ``first_decision`` line at once, so the parent
can time "fresh process start → first decision"), scores K more windows, and prints a
``done`` line with its peak resident memory.

Peak RSS must be measured in a process of its own: inside the benchmark process the
figure would include PyTorch, the full model, matplotlib and every decoded window.
This module imports nothing the device does not ship (no torch, no click) and reports
whether torch ended up in ``sys.modules`` anyway, so a regression is visible in the
report rather than silently inflating the memory figure.
"""
from __future__ import annotations

import time

_T_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from typing import Any, Optional  # noqa: E402


def _status_kib(field: str) -> Optional[int]:
    """A ``VmXXX:`` line of /proc/self/status in KiB (Linux only), else None."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def memory_snapshot() -> dict[str, Any]:
    """Peak and current resident set size, in bytes.

    ``VmHWM`` (Linux) is the resident high-water mark; ``ru_maxrss`` is the portable
    fallback (KiB on Linux, bytes on macOS).
    """
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    maxrss_bytes = maxrss if sys.platform == "darwin" else maxrss * 1024
    hwm, rss = _status_kib("VmHWM"), _status_kib("VmRSS")
    return {
        "peak_rss_bytes": hwm * 1024 if hwm is not None else maxrss_bytes,
        "peak_rss_source": "VmHWM" if hwm is not None else "ru_maxrss",
        "ru_maxrss_bytes": maxrss_bytes,
        "rss_bytes": rss * 1024 if rss is not None else None,
    }


def synthetic_signal(seconds: float = 5.0, sample_rate: int = 16000):
    """The make-demo signal (formant-synthesised vowels, float32), when no audio file is given.

    Speech-like on purpose: noise would be refused by the speech-presence check before the
    model runs. Its synthesis (~50 ms) falls inside the measured first decision; `bench`
    passes a file instead.
    """
    from edge_detector.sanity import formant_vowels

    return formant_vowels(seconds, sr=sample_rate)


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edge_detector.benchmarking.probe",
                                 description="Run only the edge path once: cold start and peak RSS.")
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--audio", default=None, help="Audio file for the first decision (default: synthetic).")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--windows", type=int, default=8, help="Windows scored after the first decision.")
    ap.add_argument("--providers", default="CPUExecutionProvider",
                    help="Comma-separated onnxruntime execution providers, in order of preference.")
    args = ap.parse_args(argv)

    t_args = time.perf_counter()
    import numpy as np

    from edge_detector.detector import Detector
    from edge_detector.session import SessionSettings
    from edge_detector.windows import first_window

    t_import = time.perf_counter()
    mem_import = memory_snapshot()
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    det = Detector(args.bundle, SessionSettings(intra_op_threads=args.threads, providers=providers))
    t_session = time.perf_counter()
    if args.audio:
        result = det.score_file(args.audio)
        samples = None
    else:
        samples = synthetic_signal()
        result = det.score_samples(samples, source="synthetic")
    t_first = time.perf_counter()
    _emit({"event": "first_decision", "decision": result.decision, "score": result.score})

    if samples is None:
        from edge_detector.audio import load_audio

        samples = load_audio(args.audio, det.bundle.sample_rate).samples
    batch = first_window(samples, det.bundle.window_rule.window)[None, :]
    for _ in range(max(0, args.windows)):
        det.score_windows(batch)
    t_done = time.perf_counter()
    mem = memory_snapshot()
    _emit({
        "event": "done",
        "pid": os.getpid(),
        "threads": args.threads,
        "windows": args.windows,
        "audio": args.audio or "synthetic",
        "provider": det.provider,
        # .get(): a test may plant None in sys.modules to make an import fail.
        "torch_imported": sys.modules.get("torch") is not None,
        "scipy_imported": sys.modules.get("scipy") is not None,
        "onnx_imported": sys.modules.get("onnx") is not None,
        # Seconds since this module started executing (interpreter start-up precedes it;
        # the parent's wall clock covers that).
        "t_imports_s": t_import - t_args,
        "t_bundle_and_session_s": t_session - t_import,
        "t_first_decision_s": t_first - _T_START,
        "t_windows_s": t_done - t_first,
        "rss_after_imports_bytes": mem_import["rss_bytes"],
        **mem,
        "numpy": np.__version__,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
