"""Cold start and peak RSS, measured on fresh processes that run only the edge path.

The parent starts :mod:`edge_detector.benchmarking.probe` with the same interpreter and
times from just before the fork/exec to the moment the probe's ``first_decision`` line
arrives on its stdout: interpreter start-up, imports, bundle hash verification, session
creation, decoding and one inference — what a user waits for after
``edge-detect gate file.wav`` — and not the process teardown. The median of a few runs
is reported with every run kept; the OS page cache is warm after the first run (dropping
it needs root), which the report states.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Optional

from ..errors import EdgeDetectorError

__all__ = ["ProbeError", "run_probe", "measure_process"]


class ProbeError(EdgeDetectorError):
    """The edge-only probe process failed."""

    kind = "probe_failed"


def _probe_env() -> dict[str, str]:
    """The caller's environment, with this package importable even from a source checkout."""
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_probe(bundle: str, threads: int = 1, windows: int = 8, audio: Optional[str] = None,
              providers: Optional[list[str]] = None, timeout: float = 300.0) -> dict[str, Any]:
    """Start one probe process; return its report plus ``cold_start_ms`` and ``process_wall_ms``."""
    cmd = [sys.executable, "-m", "edge_detector.benchmarking.probe", "--bundle", str(bundle),
           "--threads", str(threads), "--windows", str(windows)]
    if audio:
        cmd += ["--audio", str(audio)]
    if providers:
        cmd += ["--providers", ",".join(providers)]
    env = _probe_env()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    cold_ms: Optional[float] = None
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if cold_ms is None and '"first_decision"' in line:
                cold_ms = (time.perf_counter() - t0) * 1000.0
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise ProbeError(f"edge-only probe for {bundle} did not finish within {timeout:.0f} s") from None
    wall_ms = (time.perf_counter() - t0) * 1000.0
    if proc.returncode != 0 or cold_ms is None:
        tail = (err or "").strip().splitlines()[-5:]
        raise ProbeError(f"edge-only probe for {bundle} failed (exit {proc.returncode}): {' | '.join(tail)}")
    done = [json.loads(line) for line in lines if '"done"' in line]
    if not done:
        raise ProbeError(f"edge-only probe for {bundle} printed no report")
    report = done[-1]
    report["cold_start_ms"] = cold_ms
    report["process_wall_ms"] = wall_ms
    return report


def measure_process(bundle: str, threads: int, repeats: int = 3, windows: int = 8,
                    audio: Optional[str] = None, providers: Optional[list[str]] = None) -> dict[str, Any]:
    """Median cold start and peak RSS over ``repeats`` fresh probe processes."""
    runs = [run_probe(bundle, threads=threads, windows=windows, audio=audio, providers=providers)
            for _ in range(max(1, repeats))]
    cold = [r["cold_start_ms"] for r in runs]
    rss = [r["peak_rss_bytes"] for r in runs]
    return {
        "threads": threads,
        "repeats": len(runs),
        "windows_after_first": windows,
        "audio": runs[0]["audio"],
        "cold_start_ms": statistics.median(cold),
        "cold_start_runs_ms": cold,
        "cold_start_definition": "fresh `python -m edge_detector.benchmarking.probe` → first decision printed "
                                 "(interpreter start, imports, bundle verify, session, decode, 1 inference); "
                                 "page cache warm after the first run",
        "peak_rss_bytes": max(rss),
        "peak_rss_runs_bytes": rss,
        "peak_rss_source": runs[0]["peak_rss_source"],
        "rss_after_imports_bytes": runs[0]["rss_after_imports_bytes"],
        "torch_imported": any(r["torch_imported"] for r in runs),
        "scipy_imported": any(r["scipy_imported"] for r in runs),
        "onnx_imported": any(r["onnx_imported"] for r in runs),
        "in_process_first_decision_s": statistics.median(r["t_first_decision_s"] for r in runs),
        "in_process_bundle_and_session_s": statistics.median(r["t_bundle_and_session_s"] for r in runs),
        "provider": runs[0]["provider"],
    }
