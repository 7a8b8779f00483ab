"""The exact environment a benchmark ran in: a timing without it cannot be compared.

int8 speed depends on VNNI (x86) or the dot-product extension (Arm), thread counts on
the cores actually usable (a container may see fewer than the host has), and scores in
the last digits on library versions. Library versions are read from package metadata,
so recording "torch 2.13.0" never imports torch (the device-only path must not).
"""
from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from ..cpu import INTERESTING, cpu_info

__all__ = ["capture_environment", "cpu_record"]

_PACKAGES = ("numpy", "onnxruntime", "onnxruntime-gpu", "soundfile", "click", "matplotlib", "torch", "onnx", "scipy")
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ORT_NUM_THREADS",
                "CUDA_VISIBLE_DEVICES")
_ARM_ONLY = {"asimd", "asimddp", "asimdhp", "i8mm", "sve", "sve2", "bf16"}


def _read(path: str) -> Optional[str]:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def cpu_record() -> dict[str, Any]:
    """The CPU as :func:`edge_detector.cpu.cpu_info` describes it (the same facts `doctor` shows).

    ``flags`` lists every feature of interest for this architecture as present or
    absent, so "no avx512_vnni" is stated rather than left to be inferred from silence.
    """
    info = cpu_info()
    arm = info.machine in ("aarch64", "arm64") or bool(set(info.features) & _ARM_ONLY)
    relevant = [f for f in INTERESTING if (f in _ARM_ONLY) == arm]
    return {
        "model": info.model,
        "board": info.board,
        "l4t": info.l4t,
        "machine": info.machine,
        "usable_cpus": info.cores,
        "logical_cpus": info.cores_total,
        "flags": {f: (f in info.features) for f in relevant},
        "int8_dot_product": info.int8_fast_path,
        "flags_source": info.source,
    }


def _version(name: str) -> Optional[str]:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _git(root: Path) -> Optional[dict[str, Any]]:
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return {"commit": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def _meminfo_total() -> Optional[int]:
    text = _read("/proc/meminfo")
    if not text:
        return None
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def _project_relative(path: str, root: Path) -> str:
    """``path`` relative to the project ``root`` when it lies inside it (no machine paths in results)."""
    try:
        return str(Path(os.path.abspath(path)).relative_to(root)) if Path(path).is_absolute() else path
    except ValueError:
        return path


def benchmark_command(script: str, argv: Optional[list[str]] = None) -> str:
    """The command line that reproduces this benchmark run, as recorded in its result file.

    ``script``: the benchmark's path relative to the project root (e.g. ``benchmarks/e2e_speed.py``);
    ``argv``: its arguments (default ``sys.argv[1:]``). The interpreter is given relative to the
    project root, and prefixed by ``nice -n N`` only when the process really runs at nice level N.
    """
    root = Path(__file__).resolve().parents[2]
    nice = os.nice(0)
    parts = [_project_relative(sys.executable, root), script, *(argv if argv is not None else sys.argv[1:])]
    return (f"nice -n {nice} " if nice else "") + " ".join(parts)


def capture_environment() -> dict[str, Any]:
    """Everything about this machine and software a benchmark figure depends on.

    Never imports torch; torch's runtime facts (CUDA device, thread count) are added by
    the reference model when the full benchmark loads it.
    """
    import numpy as np
    import onnxruntime as ort

    root = Path(__file__).resolve().parents[2]
    try:
        load = list(os.getloadavg())
    except (AttributeError, OSError):
        load = None
    return {
        "cpu": cpu_record(),
        "memory_total_bytes": _meminfo_total(),
        "platform": platform.platform(),
        "kernel": platform.release(),
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": _project_relative(sys.executable, root)},
        "packages": {name: _version(name) for name in _PACKAGES},
        "numpy_runtime": np.__version__,
        "onnxruntime": {"version": ort.__version__, "device": ort.get_device(),
                        "available_providers": ort.get_available_providers()},
        "thread_env": {k: os.environ[k] for k in _THREAD_VARS if k in os.environ},
        "loadavg_1_5_15": load,
        "git": _git(root),
    }
