"""RawNet2 → ONNX bundle, with a parity gate against PyTorch.

The TorchScript exporter (``dynamo=False``) is used on purpose: the dynamo exporter
writes GRU with ``linear_before_reset=0`` (pytorch/pytorch issue 189225), which is not
PyTorch's GRU. Whatever the exporter, the parity gate compares onnxruntime — created
exactly as the device creates it — with the original PyTorch model on fresh random
windows and on real decoded audio, and refuses to write a bundle that disagrees.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from edge_detector.bundle import default_manifest, load_bundle, sha256_file, write_manifest
from edge_detector.errors import EdgeDetectorError
from edge_detector.session import SessionSettings, make_session
from edge_detector.windows import WINDOW_SAMPLES, WindowRule

from .fold import FoldedRawNet2
from .rawnet2 import RawNet2, count_parameters
from .scoring import score_windows

OPSET = 17
PARITY_TOLERANCE = 1e-4


class ParityError(EdgeDetectorError):
    """The exported model does not reproduce PyTorch within tolerance."""

    kind = "parity_failed"


@dataclass
class ParityReport:
    tolerance: float
    n_random: int
    n_audio: int
    max_abs_diff_random: float
    max_abs_diff_audio: Optional[float]
    graph_optimization_level: str

    @property
    def max_abs_diff(self) -> float:
        vals = [self.max_abs_diff_random] + ([self.max_abs_diff_audio] if self.max_abs_diff_audio is not None else [])
        return max(vals)

    def to_dict(self) -> dict[str, Any]:
        return {"tolerance": self.tolerance, "n_random": self.n_random, "n_audio": self.n_audio,
                "max_abs_diff_random": self.max_abs_diff_random, "max_abs_diff_audio": self.max_abs_diff_audio,
                "graph_optimization_level": self.graph_optimization_level, "reference": "PyTorch fp32 RawNet2"}


def export_onnx(module: torch.nn.Module, path: Path, window: int = WINDOW_SAMPLES, opset: int = OPSET) -> None:
    """Write ``module`` (waveform [batch, window] → score [batch]) with a dynamic batch axis."""
    module = module.eval()
    dummy = torch.zeros(2, window)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (dummy,), str(path), dynamo=False, opset_version=opset, input_names=["waveform"],
            output_names=["score"], dynamic_axes={"waveform": {0: "batch"}, "score": {0: "batch"}},
            do_constant_folding=True,
        )
    check_gru_semantics(path)


def check_gru_semantics(path: Path) -> None:
    """Every ONNX GRU must use PyTorch's semantics (``linear_before_reset=1``)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for node in model.graph.node:
        if node.op_type == "GRU":
            lbr = [a.i for a in node.attribute if a.name == "linear_before_reset"]
            if lbr != [1]:
                raise ParityError(f"{path}: GRU node {node.name} has linear_before_reset={lbr}, PyTorch needs 1")


def parity_check(
    reference: RawNet2,
    onnx_path: Path,
    audio_windows: Optional[np.ndarray] = None,
    n_random: int = 4,
    tolerance: float = PARITY_TOLERANCE,
    seed: Optional[int] = None,
    graph_level: str = "all",
    window: int = WINDOW_SAMPLES,
) -> ParityReport:
    """Compare onnxruntime with PyTorch; raise ParityError when max |Δscore| > tolerance."""
    sess = make_session(onnx_path, SessionSettings(graph_optimization_level=graph_level))
    rng = np.random.default_rng(seed)  # seed None = fresh inputs on every export
    rand = (rng.standard_normal((n_random, window)) * rng.uniform(0.01, 0.5, (n_random, 1))).astype(np.float32)

    def diff(batch: np.ndarray) -> float:
        ref = score_windows(reference, batch, batch_size=8)
        got = np.concatenate([sess.run(["score"], {"waveform": batch[i:i + 8]})[0] for i in range(0, len(batch), 8)])
        return float(np.max(np.abs(ref - got)))

    d_rand = diff(rand)
    d_audio = diff(np.asarray(audio_windows, dtype=np.float32)) if audio_windows is not None and len(audio_windows) else None
    report = ParityReport(tolerance, n_random, 0 if d_audio is None else len(audio_windows), d_rand, d_audio, graph_level)
    if report.max_abs_diff > tolerance:
        raise ParityError(
            f"parity gate failed: max |score(onnxruntime) - score(PyTorch)| = {report.max_abs_diff:.3g} "
            f"> tolerance {tolerance:g} (random {d_rand:.3g}, audio {d_audio})"
        )
    return report


def model_identity(model: RawNet2, checkpoint_path: Optional[str]) -> tuple[str, dict[str, Any]]:
    """A short stable model id and the source-checkpoint record for the manifest."""
    cfg = model.config
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    short = h.hexdigest()[:12]
    model_id = f"rawnet2-s{cfg.sinc_filters}-c{cfg.stage2_channels}-g{cfg.gru_hidden}x{cfg.gru_layers}-{short}"
    src: dict[str, Any] = {"weights_sha256": h.hexdigest()}
    if checkpoint_path:
        src.update({"file": Path(checkpoint_path).name, "sha256": sha256_file(checkpoint_path)})
    return model_id, src


def add_onnx_metadata(onnx_path: Path, manifest: dict[str, Any]) -> None:
    """Copy the manifest's facts into ONNX ``metadata_props`` (values as JSON strings)."""
    import onnx

    model = onnx.load(str(onnx_path))
    del model.metadata_props[:]
    for key in ("format", "format_version", "model_id", "model", "audio", "windows", "score", "calibration",
                "thresholds", "source_checkpoint", "quantization", "parity"):
        entry = model.metadata_props.add()
        entry.key = f"edge_detector.{key}"
        entry.value = json.dumps(manifest.get(key))
    model.producer_name = "edge-detector"
    onnx.save(model, str(onnx_path))


def build_bundle(
    model: RawNet2,
    out_dir: str | Path,
    checkpoint_path: Optional[str] = None,
    audio_windows: Optional[np.ndarray] = None,
    window_rule: Optional[WindowRule] = None,
    tolerance: float = PARITY_TOLERANCE,
    n_random: int = 4,
    export_module: Optional[torch.nn.Module] = None,
    variant: str = "fp32",
    extra_manifest: Optional[dict[str, Any]] = None,
    overwrite: bool = False,
) -> Path:
    """Export, run the parity gate, write model + manifest into ``out_dir`` atomically."""
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise EdgeDetectorError(f"{out}: already exists (use --overwrite)")
    model = model.eval()
    rule = window_rule or WindowRule()
    module = export_module if export_module is not None else FoldedRawNet2(model)
    tmp = Path(tempfile.mkdtemp(prefix=".bundle-", dir=str(out.parent if out.parent.exists() else Path.cwd())))
    try:
        onnx_path = tmp / "model.onnx"
        export_onnx(module, onnx_path, window=rule.window)
        report = parity_check(model, onnx_path, audio_windows, n_random=n_random, tolerance=tolerance, window=rule.window)
        model_id, src = model_identity(model, checkpoint_path)
        manifest = default_manifest(model_id=model_id, model_config=model.config.to_dict(),
                                    parameters=count_parameters(model), variant=variant, opset=OPSET,
                                    source_checkpoint=src, window_rule=rule)
        manifest["parity"] = report.to_dict()
        manifest["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        manifest["exporter"] = {"torch": torch.__version__, "exporter": "torchscript (dynamo=False)"}
        if extra_manifest:
            manifest.update(extra_manifest)
        add_onnx_metadata(onnx_path, manifest)
        write_manifest(tmp, manifest)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    load_bundle(out)  # the bundle we wrote must load and verify
    return out
