"""onnxruntime session settings: threads, spinning, graph level, providers with fallback.

Session options are one place so that the parity gate, the benchmarks and the device
runtime create sessions the same way (a different graph optimisation level can change
results in the last digits and timings a lot).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import onnxruntime as ort

from .errors import BundleError

_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
ProviderSpec = Union[str, tuple[str, dict[str, Any]]]


@dataclass
class SessionSettings:
    """How to run the model on this device (a profile in firmware_config/ fills these)."""

    intra_op_threads: int = 0  # 0 = onnxruntime default (all cores)
    inter_op_threads: int = 1
    allow_spinning: bool = True
    graph_optimization_level: Optional[str] = None  # None = what the bundle states
    providers: Sequence[ProviderSpec] = field(default_factory=lambda: ["CPUExecutionProvider"])


def provider_name(spec: ProviderSpec) -> str:
    return spec if isinstance(spec, str) else spec[0]


def resolve_providers(requested: Sequence[ProviderSpec]) -> tuple[list[ProviderSpec], list[str]]:
    """Keep the providers this onnxruntime build offers, warn about the others, end with CPU."""
    available = set(ort.get_available_providers())
    chosen: list[ProviderSpec] = []
    missing: list[str] = []
    for spec in requested:
        name = provider_name(spec)
        if name in available:
            chosen.append(spec)
        else:
            missing.append(name)
    if missing:
        warnings.warn(
            f"onnxruntime here offers {sorted(available)}; falling back past missing provider(s) {missing}",
            RuntimeWarning,
            stacklevel=3,
        )
    if not any(provider_name(s) == "CPUExecutionProvider" for s in chosen):
        chosen.append("CPUExecutionProvider")
    return chosen, missing


def make_session(model_path: Union[str, Path], settings: Optional[SessionSettings] = None,
                 default_level: str = "all") -> ort.InferenceSession:
    """Create an InferenceSession; a damaged model file becomes a BundleError."""
    s = settings or SessionSettings()
    level = s.graph_optimization_level or default_level
    if level not in _LEVELS:
        raise BundleError(f"unknown graph optimisation level {level!r}; use one of {sorted(_LEVELS)}")
    so = ort.SessionOptions()
    so.graph_optimization_level = _LEVELS[level]
    so.intra_op_num_threads = int(s.intra_op_threads)
    so.inter_op_num_threads = int(s.inter_op_threads)
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if s.allow_spinning else "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "1" if s.allow_spinning else "0")
    providers, _ = resolve_providers(list(s.providers))
    try:
        return ort.InferenceSession(str(model_path), sess_options=so, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"{model_path}: onnxruntime cannot load the model ({first[:300]})") from None


#: Distributions that all install the same ``onnxruntime`` Python package.
ONNXRUNTIME_BUILDS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
                      "onnxruntime-qnn", "onnxruntime-training")


def installed_onnxruntime_builds() -> list[str]:
    """Which onnxruntime distributions pip has installed here.

    More than one means their files overwrote each other (the CPU build pulled in by this
    package's default dependency next to a GPU build, say): providers then depend on
    which was installed last. `doctor` reports it with the fix.
    """
    from importlib import metadata

    found = []
    for name in ONNXRUNTIME_BUILDS:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found
