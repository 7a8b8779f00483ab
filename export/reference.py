"""The full fp32 PyTorch model as the benchmark's reference (training side: imports torch).

Accuracy is scored on CUDA when it is available (fast on a big eval set) and on the CPU
otherwise; the report states which. TF32 is switched off on CUDA: Ampere and later
GPUs would otherwise run convolutions in TF32 by default, and the "fp32 reference"
would silently lose about three decimal digits — more than the tolerance the export
parity gate holds the bundle to.

Latency is always measured on the CPU, at the same thread counts, warm-up and run
counts as the bundles, so the edge/full ratios compare like with like on the machine
the edge model is meant for; CUDA latency is added as a separate figure when present.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from edge_detector.benchmarking.latency import WINDOW_SECONDS, time_calls
from edge_detector.bundle import sha256_file
from edge_detector.errors import EdgeDetectorError, ExitCode
from edge_detector.benchmarking.stats import latency_summary

from .rawnet2 import RawNet2, bonafide_score, count_parameters, load_checkpoint

__all__ = ["FullReference", "ReferenceDeviceError", "load_reference", "pick_device"]


class ReferenceDeviceError(EdgeDetectorError):
    """The requested reference device does not exist here."""

    exit_code = ExitCode.USAGE
    kind = "no_such_device"


@dataclass
class FullReference:
    """The full model loaded twice: on the scoring device, and on the CPU for latency."""

    checkpoint: Path
    model_cpu: RawNet2
    model_score: RawNet2
    device: str
    meta: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """Checkpoint identity, size and the device facts the report must state."""
        info: dict[str, Any] = {
            "checkpoint": str(self.checkpoint),
            "checkpoint_sha256": sha256_file(self.checkpoint),
            "checkpoint_bytes": self.checkpoint.stat().st_size,
            "parameters": count_parameters(self.model_cpu),
            "config": self.model_cpu.config.to_dict(),
            "scoring_device": self.device,
            "torch": torch.__version__,
            "torch_threads_default": torch.get_num_threads(),
            "precision": "fp32",
        }
        if self.device.startswith("cuda"):
            info["cuda_device_name"] = torch.cuda.get_device_name(torch.device(self.device))
            info["cuda_version"] = torch.version.cuda
            info["tf32"] = {"matmul": torch.backends.cuda.matmul.allow_tf32,
                            "cudnn": torch.backends.cudnn.allow_tf32}
        return info

    @torch.inference_mode()
    def score(self, windows: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """log P(bona fide) for each row of a ``[n, 64600]`` float32 array (eval mode)."""
        out = []
        for i in range(0, len(windows), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(windows[i:i + batch_size], dtype=np.float32))
            out.append(bonafide_score(self.model_score(x.to(self.device))).float().cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0, np.float64)

    def cpu_callable(self, window: np.ndarray) -> Callable[[], Any]:
        """One batch-1 CPU forward pass of the full model on ``window`` (threads: ``torch.set_num_threads``)."""
        x = torch.from_numpy(np.ascontiguousarray(window.reshape(1, -1), dtype=np.float32))

        def call() -> None:
            with torch.inference_mode():
                self.model_cpu(x)

        return call

    def cpu_latency_record(self, samples: np.ndarray, threads: int, warmup: int) -> dict[str, Any]:
        rec = latency_summary(samples, WINDOW_SECONDS)
        rec.update({"threads": threads, "warmup": warmup, "batch": 1, "device": "cpu",
                    "samples_ms": [round(float(v), 4) for v in samples]})
        return rec

    def cuda_latency(self, window: np.ndarray, warmup: int, runs: int,
                     label: Optional[str] = None) -> Optional[dict[str, Any]]:
        """Per-window latency on the scoring GPU (synchronised per run), or None without CUDA."""
        if not self.device.startswith("cuda"):
            return None
        x = torch.from_numpy(np.ascontiguousarray(window.reshape(1, -1), dtype=np.float32)).to(self.device)

        def call() -> None:
            self.model_score(x)
            torch.cuda.synchronize()

        with torch.inference_mode():
            samples = time_calls(call, warmup, runs, label=label)
        rec = latency_summary(samples, WINDOW_SECONDS)
        rec.update({"batch": 1, "device": self.device, "samples_ms": [round(float(v), 4) for v in samples]})
        return rec


def pick_device(requested: str = "auto") -> str:
    """``auto`` → ``cuda`` when torch sees a GPU, else ``cpu``; an explicit request is honoured or refused."""
    if requested == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ReferenceDeviceError("--reference-device cuda requested but torch sees no CUDA device "
                                   f"(torch {torch.__version__}); use --reference-device auto or cpu")
    return "cuda:0" if requested == "cuda" else requested


def load_reference(checkpoint: str | os.PathLike, device: str = "auto",
                   log: Callable[[str], None] = lambda m: None) -> FullReference:
    """Load the full checkpoint strictly (official .pth or ours), in eval mode, fp32."""
    path = Path(checkpoint)
    model, meta = load_checkpoint(str(path), map_location="cpu")
    model = model.float().eval()
    dev = pick_device(device)
    if dev.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        scorer = copy.deepcopy(model).to(dev).eval()
    else:
        scorer = model
    log(f"reference: {path} ({count_parameters(model):,} parameters) scoring on {dev}")
    return FullReference(checkpoint=path, model_cpu=model, model_score=scorer, device=dev, meta=meta)
