"""Per-window latency: warm-up, then many timed runs of one window (batch 1).

Session creation is excluded (it is reported on its own), the thread count and graph
level are fixed per measurement, and the raw per-run timings are kept so a histogram
can show whether a median hides a bimodal distribution (a second core busy with
something else shows up as a second mode, not as a slightly higher median).
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Optional

import click
import numpy as np

from ..detector import Detector
from ..session import SessionSettings
from .stats import latency_summary

__all__ = ["CLOCKS", "time_calls", "time_interleaved", "measure_bundle_latency", "bundle_latency_callable",
           "latency_record", "WINDOW_SECONDS", "INTERLEAVE_BLOCK"]

#: Timed runs per model and block in :func:`time_interleaved`.
INTERLEAVE_BLOCK = 10

#: 64 600 samples at 16 kHz: the audio one window covers.
WINDOW_SECONDS = 64600 / 16000.0


@contextmanager
def _progress(length: int, label: Optional[str]) -> Iterator[Callable[[], None]]:
    """A click progress bar on stderr when ``label`` is given; yields ``advance()`` (a no-op without)."""
    if not label:
        yield lambda: None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield lambda: bar.update(1)


#: The default clock: wall time. ``time.process_time_ns`` (CPU time of this process) is the
#: one to pass on a machine shared with other jobs: time spent descheduled does not count,
#: so single-threaded work is measured by what it costs, not by how busy the machine was.
WALL_CLOCK = time.perf_counter_ns

#: ``--clock`` choices of ``edge-detect bench``: ``cpu`` is the CPU time of the whole process
#: (all its threads), so it equals a latency only at one intra-op thread.
CLOCKS: dict[str, Callable[[], int]] = {"wall": WALL_CLOCK, "cpu": time.process_time_ns}


def _elapsed_ms(fn: Callable[[], Any], clock: Callable[[], int] = WALL_CLOCK) -> float:
    t0 = clock()
    fn()
    return (clock() - t0) / 1e6


def time_calls(fn: Callable[[], Any], warmup: int, runs: int, label: Optional[str] = None,
               clock: Callable[[], int] = WALL_CLOCK) -> np.ndarray:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` times timed on ``clock``; return milliseconds.

    Warm-up matters for onnxruntime (first runs allocate the arena and pick kernels) and
    for PyTorch (oneDNN primitive creation). A progress bar goes to stderr when
    ``label`` is given.
    """
    if runs < 1:
        raise ValueError("runs must be at least 1")
    out = np.empty(runs, dtype=np.float64)
    with _progress(max(0, warmup) + runs, label) as advance:
        for _ in range(max(0, warmup)):
            fn()
            advance()
        for i in range(runs):
            out[i] = _elapsed_ms(fn, clock)
            advance()
    return out


def time_interleaved(fns: dict[str, Callable[[], Any]], warmup: int, runs: int, block: int = INTERLEAVE_BLOCK,
                     block_warmup: int = 2, label: Optional[str] = None,
                     clock: Callable[[], int] = WALL_CLOCK) -> dict[str, np.ndarray]:
    """Time several models in alternating blocks; return milliseconds per model.

    Why: the edge/full ratio is the figure the targets are stated in, and on a shared
    machine the speed drifts by tens of per cent over a minute. Timing the full model
    for 20 s and then each bundle for 1 s lets that drift land in the ratio. Here every
    model gets ``warmup`` untimed calls, then rounds run a block of ``block_warmup``
    untimed plus ``block`` timed calls of each model in turn until each has ``runs``
    samples, so every model is sampled across the whole measurement period. The untimed
    calls at the start of a block let caches and thread pools settle after the previous
    model (a 67 MB full model evicts a 0.7 MB edge model from the caches); a device runs
    one model alone, so that steady state is the one to report. ``clock`` returns
    nanoseconds (default wall time; see :data:`WALL_CLOCK`).
    """
    if runs < 1 or block < 1:
        raise ValueError("runs and block must be at least 1")
    out = {name: np.empty(runs, dtype=np.float64) for name in fns}
    done = dict.fromkeys(fns, 0)
    rounds = -(-runs // block)
    with _progress(rounds * len(fns), label) as advance:
        for fn in fns.values():
            for _ in range(max(0, warmup)):
                fn()
        for _ in range(rounds):
            for name, fn in fns.items():
                for _ in range(max(0, block_warmup)):
                    fn()
                for _ in range(min(block, runs - done[name])):
                    out[name][done[name]] = _elapsed_ms(fn, clock)
                    done[name] += 1
                advance()
    return out


def bundle_latency_callable(bundle_path: str, window: np.ndarray, settings: SessionSettings
                            ) -> tuple[Callable[[], Any], Detector, float]:
    """``(call, detector, session_create_ms)``: one ``Detector.score_windows`` call on ``window``.

    ``score_windows`` is what the runtime calls, so the figure includes its small
    per-call overhead (contiguity check, output reshape) as a deployment would.
    """
    t0 = time.perf_counter()
    det = Detector(bundle_path, settings)
    session_ms = (time.perf_counter() - t0) * 1000.0
    batch = np.ascontiguousarray(window.reshape(1, -1), dtype=np.float32)
    return (lambda: det.score_windows(batch)), det, session_ms


def latency_record(samples: np.ndarray, det: Detector, settings: SessionSettings, threads: int, warmup: int,
                   session_ms: float, window_seconds: float = WINDOW_SECONDS) -> dict[str, Any]:
    """Summary and raw samples of one bundle's latency, with the settings it ran under."""
    rec = latency_summary(samples, window_seconds)
    rec.update({
        "threads": threads,
        "warmup": warmup,
        "batch": 1,
        "session_create_ms": session_ms,
        "provider": det.provider,
        "graph_optimization_level": settings.graph_optimization_level
        or (det.bundle.manifest.get("onnx") or {}).get("graph_optimization_level"),
        "allow_spinning": settings.allow_spinning,
        "samples_ms": [round(float(v), 4) for v in samples],
    })
    return rec


def measure_bundle_latency(bundle_path: str, window: np.ndarray, threads: int, warmup: int, runs: int,
                           label: Optional[str] = None, settings: Optional[SessionSettings] = None,
                           window_seconds: float = WINDOW_SECONDS,
                           clock: Callable[[], int] = WALL_CLOCK) -> dict[str, Any]:
    """Latency of one bundle at ``threads`` intra-op threads, through ``Detector.score_windows``.

    ``score_windows`` is what the runtime calls, so the figure includes its small
    per-call overhead (contiguity check, output reshape) as a deployment would.
    """
    s = settings or SessionSettings()
    s = SessionSettings(intra_op_threads=threads, inter_op_threads=s.inter_op_threads,
                        allow_spinning=s.allow_spinning, graph_optimization_level=s.graph_optimization_level,
                        providers=list(s.providers))
    call, det, session_ms = bundle_latency_callable(bundle_path, window, s)
    samples = time_calls(call, warmup, runs, label=label, clock=clock)
    return latency_record(samples, det, s, threads, warmup, session_ms, window_seconds)
