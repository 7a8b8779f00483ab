"""Per-window latency: warm-up, then many timed runs of one window (batch 1).

Session creation is excluded (it is reported on its own), the thread count and graph
level are fixed per measurement, and the raw per-run timings are kept so a histogram
can show whether a median hides a bimodal distribution (a second core busy with
something else shows up as a second mode, not as a slightly higher median).
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, Optional

import click
import numpy as np

from ..detector import Detector
from ..session import SessionSettings
from .stats import latency_summary

__all__ = ["time_calls", "measure_bundle_latency", "WINDOW_SECONDS"]

#: 64 600 samples at 16 kHz: the audio one window covers.
WINDOW_SECONDS = 64600 / 16000.0


def time_calls(fn: Callable[[], Any], warmup: int, runs: int, label: Optional[str] = None) -> np.ndarray:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` times timed; return milliseconds.

    Warm-up matters for onnxruntime (first runs allocate the arena and pick kernels) and
    for PyTorch (oneDNN primitive creation). A progress bar goes to stderr when
    ``label`` is given.
    """
    if runs < 1:
        raise ValueError("runs must be at least 1")
    out = np.empty(runs, dtype=np.float64)
    bar_ctx = click.progressbar(length=warmup + runs, label=label, file=sys.stderr) \
        if label else None
    bar = bar_ctx.__enter__() if bar_ctx else None
    try:
        for _ in range(max(0, warmup)):
            fn()
            if bar:
                bar.update(1)
        for i in range(runs):
            t0 = time.perf_counter_ns()
            fn()
            out[i] = (time.perf_counter_ns() - t0) / 1e6
            if bar:
                bar.update(1)
    finally:
        if bar_ctx:
            bar_ctx.__exit__(None, None, None)
    return out


def measure_bundle_latency(bundle_path: str, window: np.ndarray, threads: int, warmup: int, runs: int,
                           label: Optional[str] = None, settings: Optional[SessionSettings] = None,
                           window_seconds: float = WINDOW_SECONDS) -> dict[str, Any]:
    """Latency of one bundle at ``threads`` intra-op threads, through ``Detector.score_windows``.

    ``score_windows`` is what the runtime calls, so the figure includes its small
    per-call overhead (contiguity check, output reshape) as a deployment would.
    """
    s = settings or SessionSettings()
    s = SessionSettings(intra_op_threads=threads, inter_op_threads=s.inter_op_threads,
                        allow_spinning=s.allow_spinning, graph_optimization_level=s.graph_optimization_level,
                        providers=list(s.providers))
    t0 = time.perf_counter()
    det = Detector(bundle_path, s)
    session_ms = (time.perf_counter() - t0) * 1000.0
    batch = np.ascontiguousarray(window.reshape(1, -1), dtype=np.float32)
    samples = time_calls(lambda: det.score_windows(batch), warmup, runs, label=label)
    rec = latency_summary(samples, window_seconds)
    rec.update({
        "threads": threads,
        "warmup": warmup,
        "batch": 1,
        "session_create_ms": session_ms,
        "provider": det.provider,
        "graph_optimization_level": s.graph_optimization_level or det.bundle.manifest["onnx"]["graph_optimization_level"],
        "allow_spinning": s.allow_spinning,
        "samples_ms": [round(float(v), 4) for v in samples],
    })
    return rec
