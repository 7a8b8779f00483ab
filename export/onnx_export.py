"""RawNet2 → ONNX bundle, with a parity gate against PyTorch.

The TorchScript exporter (``dynamo=False``) is used on purpose: the dynamo exporter
writes GRU with ``linear_before_reset=0`` (pytorch/pytorch issue 189225), which is not
PyTorch's GRU. Whatever the exporter, the parity gate compares onnxruntime — created
exactly as the device creates it — with the original PyTorch model on fresh random
windows and on real decoded audio, and refuses to write a bundle that disagrees.

Two export options change the graph, never the function:

- ``frontend="numpy-fft"``: the fixed sinc stage (|conv| + max-pool 3) runs on the
  device in numpy (:mod:`edge_detector.frontend`, FFT overlap-save) and the graph starts
  at ``first_bn`` with input ``features``; the manifest's ``frontend`` field says so.
- ``gru="matmul"``: the GRU is written as MatMul + elementwise ops
  (:mod:`export.gru_matmul`) so static int8 can quantize the recurrent weights.

The parity gate always runs the device path — :class:`edge_detector.detector.WindowScorer`
(numpy front end if any, then onnxruntime) — against the *original* PyTorch RawNet2 on raw
waveforms, so neither rewrite can slip through unchecked.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from edge_detector.bundle import default_manifest, load_bundle, sha256_file
from edge_detector.output_dir import check_output_dir, staged_dir
from edge_detector.detector import WindowScorer
from edge_detector.errors import EdgeDetectorError
from edge_detector.frontend import FrontEndSpec
from edge_detector.session import SessionSettings, make_session
from edge_detector.windows import WINDOW_SAMPLES, WindowRule

from .embedding import add_embedding, record_embedding
from .fold import FoldedBody, FoldedRawNet2
from .gru_matmul import MatMulGRU
from .onnx_meta import seal_bundle
from .rawnet2 import RawNet2, count_parameters
from .scoring import score_windows

#: ``--frontend`` choices: the sinc stage inside the graph, or in numpy on the device.
FRONTEND_CHOICES = ("graph", "numpy-fft")
#: ``--gru`` choices: the ONNX GRU op, or the MatMul rewrite that int8 can quantize.
GRU_CHOICES = ("onnx", "matmul")

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
    frontend: Optional[str] = None  # numpy front-end type the device path used (None: in the graph)

    @property
    def max_abs_diff(self) -> float:
        vals = [self.max_abs_diff_random] + ([self.max_abs_diff_audio] if self.max_abs_diff_audio is not None else [])
        return max(vals)

    def to_dict(self) -> dict[str, Any]:
        return {"tolerance": self.tolerance, "n_random": self.n_random, "n_audio": self.n_audio,
                "max_abs_diff_random": self.max_abs_diff_random, "max_abs_diff_audio": self.max_abs_diff_audio,
                "graph_optimization_level": self.graph_optimization_level, "reference": "PyTorch fp32 RawNet2",
                "device_path": (f"numpy {self.frontend} + onnxruntime" if self.frontend else "onnxruntime")}


def export_onnx(module: torch.nn.Module, path: Path, window: int = WINDOW_SAMPLES, opset: int = OPSET,
                input_name: str = "waveform", input_shape: Optional[Sequence[int]] = None) -> None:
    """Write ``module`` (input [batch, ...] → score [batch]) with a dynamic batch axis.

    The default input is the waveform ``[batch, window]``; a module after a numpy front end
    takes ``input_name="features"`` with ``input_shape=(filters, pooled)``. Only the batch
    axis is dynamic: a MatMul GRU is unrolled over the time steps this shape implies.
    """
    module = module.eval()
    shape = tuple(input_shape) if input_shape is not None else (window,)
    dummy = torch.zeros(2, *shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (dummy,), str(path), dynamo=False, opset_version=opset, input_names=[input_name],
            output_names=["score"], dynamic_axes={input_name: {0: "batch"}, "score": {0: "batch"}},
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
    frontend: Optional[FrontEndSpec] = None,
    input_name: Optional[str] = None,
) -> ParityReport:
    """Compare the device path with PyTorch; raise ParityError when max |Δscore| > tolerance.

    The device path is :class:`WindowScorer`: the numpy front end when ``frontend`` is
    given (the graph then takes ``features``), then onnxruntime at ``graph_level``. The
    reference is always the original RawNet2 on the same raw waveforms.
    """
    sess = make_session(onnx_path, SessionSettings(graph_optimization_level=graph_level))
    name = input_name or ("features" if frontend is not None else "waveform")
    scorer = WindowScorer(sess, name, "score", frontend, max_batch=8, where=str(onnx_path))
    rng = np.random.default_rng(seed)  # seed None = fresh inputs on every export
    rand = (rng.standard_normal((n_random, window)) * rng.uniform(0.01, 0.5, (n_random, 1))).astype(np.float32)

    def diff(batch: np.ndarray) -> float:
        ref = score_windows(reference, batch, batch_size=8)
        got = scorer.score(batch)
        return float(np.max(np.abs(ref - got)))

    d_rand = diff(rand)
    d_audio = diff(np.asarray(audio_windows, dtype=np.float32)) if audio_windows is not None and len(audio_windows) else None
    report = ParityReport(tolerance, n_random, 0 if d_audio is None else len(audio_windows), d_rand, d_audio, graph_level,
                          frontend.type if frontend is not None else None)
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


def frontend_spec_for(model: RawNet2) -> FrontEndSpec:
    """The numpy front end equal to ``model``'s sinc stage (pruned bank included)."""
    return FrontEndSpec.from_config(model.config.to_dict(), pool=3)


def export_module_for(model: RawNet2, frontend: str = "graph", gru: str = "onnx") -> torch.nn.Module:
    """The inference module to export for the chosen front end and recurrence."""
    if frontend not in FRONTEND_CHOICES:
        raise EdgeDetectorError(f"unknown front end {frontend!r}; choose one of {FRONTEND_CHOICES}")
    if gru not in GRU_CHOICES:
        raise EdgeDetectorError(f"unknown GRU form {gru!r}; choose one of {GRU_CHOICES}")
    recurrent = MatMulGRU(model.gru).eval() if gru == "matmul" else None
    folded = FoldedRawNet2(model, recurrent=recurrent)
    return FoldedBody(folded) if frontend == "numpy-fft" else folded


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
    frontend: str = "graph",
    gru: str = "onnx",
    parity_seed: Optional[int] = None,
) -> Path:
    """Export, run the parity gate, write model + manifest into ``out_dir`` atomically.

    ``parity_seed`` seeds the gate's random windows (None: fresh ones on every export).

    ``frontend``: "graph" (the sinc stage in ONNX, input ``waveform``) or "numpy-fft"
    (the device computes it in numpy; input ``features``; manifest ``frontend`` set).
    ``gru``: "onnx" (the GRU op) or "matmul" (quantizable MatMul form). A custom
    ``export_module`` must match the chosen front end's input.
    """
    out = check_output_dir(out_dir, overwrite)
    model = model.eval()
    rule = window_rule or WindowRule()
    module = export_module if export_module is not None else export_module_for(model, frontend, gru)
    spec = frontend_spec_for(model) if frontend == "numpy-fft" else None
    if spec is not None and spec.output_length(rule.window) <= 0:
        raise EdgeDetectorError(f"window of {rule.window} samples is too short for the {spec.taps}-tap front end")
    # The temporary folder sits next to the target so the final rename stays on one file system
    # (and works when the target's parent folder does not exist yet).
    with staged_dir(out) as tmp:
        onnx_path = tmp / "model.onnx"
        if spec is not None:
            export_onnx(module, onnx_path, window=rule.window, input_name="features",
                        input_shape=spec.output_shape(rule.window))
        else:
            export_onnx(module, onnx_path, window=rule.window)
        report = parity_check(model, onnx_path, audio_windows, n_random=n_random, tolerance=tolerance,
                              window=rule.window, frontend=spec, seed=parity_seed)
        # second output "embedding" (the final layer's input) for `edge-detect adapt`, parity-checked too
        embedding = add_embedding(model, onnx_path, audio_windows, spec, tolerance, rule.window, seed=parity_seed)
        model_id, src = model_identity(model, checkpoint_path)
        manifest = default_manifest(model_id=model_id, model_config=model.config.to_dict(),
                                    parameters=count_parameters(model), variant=variant, opset=OPSET,
                                    source_checkpoint=src, window_rule=rule, frontend=spec)
        manifest["parity"] = report.to_dict()
        record_embedding(manifest, embedding)
        manifest["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        manifest["exporter"] = {"torch": torch.__version__, "exporter": "torchscript (dynamo=False)",
                                "frontend": frontend, "gru": gru}
        if extra_manifest:
            manifest.update(extra_manifest)
        seal_bundle(tmp, out, onnx_path, manifest)
    load_bundle(out)  # the bundle we wrote must load and verify
    return out
