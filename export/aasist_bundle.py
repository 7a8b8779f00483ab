"""AASIST / AASIST-L checkpoint → bundle: ONNX (TorchScript exporter), parity gate, manifest.

The bundle is an ordinary ONNX bundle (the runtime's ``AASIST`` / ``AASIST-L`` families in
:mod:`edge_detector.families` run it exactly like RawNet2's), with these differences in
the manifest:

- ``model.family``: ``"AASIST-L"`` for the AASIST-L configuration, else ``"AASIST"``;
  ``model.config``: :class:`export.aasist.AASISTConfig` as a dict;
- ``score.kind`` ``"logit_bonafide"``: the graph outputs ``logit[1]``, the official AASIST
  score (clovaai/aasist writes ``logits[:, 1]``), higher = more bona fide; uncalibrated
  bundles use ``calibrated = score`` until ``edge-detect calibrate`` fits the mapping;
- ``source_checkpoint``: the file's name and sha256 and, for a published file, where it
  comes from (repository, commit, path), its licence (MIT) and copyright holder; the
  licence text is copied into the bundle (``LICENSE``, hashed like every file) when the
  checkpoint's folder has one, as the MIT licence asks of copies.

``frontend="numpy-fft"`` makes the graph start after the sinc stage (see
:mod:`export.aasist_export`); the parity gate always compares the device path
(:class:`edge_detector.detector.WindowScorer`) with the PyTorch model on raw windows.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from edge_detector.bundle import default_manifest, load_bundle
from edge_detector.errors import EdgeDetectorError
from edge_detector.output_dir import staged_dir
from edge_detector.windows import WindowRule

from .aasist import AASIST, count_parameters
from .aasist_export import AASISTBody, AASISTScore, frontend_spec_for
from .onnx_export import FRONTEND_CHOICES, OPSET, PARITY_TOLERANCE, ParityReport, export_onnx, parity_check
from .onnx_meta import seal_bundle

#: Windows per parity call: AASIST's first maps are large (a window's encoder input is 23 × 21 490
#: with 32 channels), so the gate runs a few windows at a time to bound memory.
PARITY_CHUNK = 2


def family_name(model: AASIST) -> str:
    """The manifest's ``model.family``: ``AASIST-L`` for that configuration, ``AASIST`` otherwise."""
    return "AASIST-L" if model.config.name == "AASIST-L" else "AASIST"


def weights_digest(model: AASIST) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def chunked_parity(model: AASIST, onnx_path: Path, audio: Optional[np.ndarray], n_random: int, tolerance: float,
                   rule: WindowRule, spec: Any, seed: Optional[int]) -> ParityReport:
    """:func:`export.onnx_export.parity_check` a few windows at a time; one merged report.

    Raises ParityError (from the first chunk that fails) when any |Δscore| exceeds ``tolerance``.
    """
    chunks = [None] if audio is None or not len(audio) else [audio[i:i + PARITY_CHUNK]
                                                               for i in range(0, len(audio), PARITY_CHUNK)]
    reports = []
    for i, chunk in enumerate(chunks):
        n = max(1, -(-n_random // len(chunks)))
        reports.append(parity_check(model, onnx_path, chunk, n_random=n, tolerance=tolerance, window=rule.window,
                                    frontend=spec, seed=None if seed is None else seed + i))
    audio_diffs = [r.max_abs_diff_audio for r in reports if r.max_abs_diff_audio is not None]
    first = reports[0]
    return ParityReport(tolerance, sum(r.n_random for r in reports), sum(r.n_audio for r in reports),
                        max(r.max_abs_diff_random for r in reports), max(audio_diffs) if audio_diffs else None,
                        first.graph_optimization_level, first.frontend)


def aasist_manifest(model: AASIST, meta: dict[str, Any], checkpoint_path: Optional[str], rule: WindowRule,
                    spec: Any, variant: str) -> dict[str, Any]:
    """The manifest of an AASIST bundle (see the module docstring for what differs from RawNet2's)."""
    family = family_name(model)
    digest = weights_digest(model)
    src: dict[str, Any] = {"weights_sha256": digest}
    if checkpoint_path:
        src["file"] = Path(checkpoint_path).name
    for key in ("sha256", "repository", "commit", "path", "licence", "copyright", "origin"):
        if key in meta:
            src[key] = meta[key]
    if "repository" in meta:
        src["reference"] = "Jung et al., AASIST, ICASSP 2022, arXiv 2110.01200"
    m = default_manifest(model_id=f"{family.lower()}-{digest[:12]}", model_config=model.config.to_dict(),
                         parameters=count_parameters(model), variant=variant, opset=OPSET, source_checkpoint=src,
                         window_rule=rule, frontend=spec)
    m["model"]["family"] = family
    m["score"] = {**m["score"], "kind": "logit_bonafide",
                  "description": "logit[1] (bona fide) of the model, the official AASIST score; higher = more bona fide"}
    m["calibration"] = {"method": "none", "scale": 1.0, "offset": 0.0,
                        "description": "uncalibrated: calibrated = logit[1]; run `edge-detect calibrate`"}
    return m


def build_aasist_bundle(
    model: AASIST,
    out_dir: str | Path,
    meta: Optional[dict[str, Any]] = None,
    checkpoint_path: Optional[str] = None,
    audio_windows: Optional[np.ndarray] = None,
    window_rule: Optional[WindowRule] = None,
    tolerance: float = PARITY_TOLERANCE,
    n_random: int = 4,
    overwrite: bool = False,
    frontend: str = "graph",
    parity_seed: Optional[int] = None,
    variant: str = "fp32",
) -> Path:
    """Export ``model``, run the parity gate, write ``model.onnx`` + ``manifest.json`` (+ ``LICENSE``)
    into ``out_dir`` atomically; returns the bundle path.

    Raises EdgeDetectorError when ``out_dir`` exists (without ``overwrite``), the front end is
    unknown or the window does not fit it, and ParityError when the gate fails (nothing written).
    The encoder's SELUs stay ``Selu`` ops: written as Relu + Exp (:func:`export.fold.selu_vectorised`,
    faster on RawNet2's small maps) they cost 8 % more on AASIST-L's ``[32, 23, 21 490]`` maps
    (one thread: 228 ms against 212 ms per window, ``benchmarks/results/aasist/edge_aasist-l.json``,
    variants ``fft-selu`` / ``fft``).
    """
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise EdgeDetectorError(f"{out}: already exists (use --overwrite)")
    if frontend not in FRONTEND_CHOICES:
        raise EdgeDetectorError(f"unknown front end {frontend!r}; choose one of {FRONTEND_CHOICES}")
    model = model.eval()
    meta = meta or {}
    rule = window_rule or WindowRule(window=model.config.window)
    if rule.window != model.config.window:
        raise EdgeDetectorError(f"window of {rule.window} samples, but the model was built for {model.config.window}")
    spec = frontend_spec_for(model) if frontend == "numpy-fft" else None
    with staged_dir(out) as tmp:
        onnx_path = tmp / "model.onnx"
        if spec is not None:
            export_onnx(AASISTBody(model), onnx_path, input_name="features", input_shape=spec.output_shape(rule.window))
        else:
            export_onnx(AASISTScore(model), onnx_path, window=rule.window)
        report = chunked_parity(model, onnx_path, audio_windows, n_random, tolerance, rule, spec, parity_seed)
        manifest = aasist_manifest(model, meta, checkpoint_path, rule, spec, variant)
        parity = report.to_dict()
        parity["reference"] = f"PyTorch fp32 {family_name(model)} (export/aasist.py)"
        manifest["parity"] = parity
        manifest["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        manifest["exporter"] = {"torch": torch.__version__, "exporter": "torchscript (dynamo=False)",
                                "frontend": frontend, "selu": "Selu op"}
        licence = Path(checkpoint_path).parent / "LICENSE" if checkpoint_path else None
        if licence is not None and licence.is_file() and "licence" in meta:
            shutil.copyfile(licence, tmp / "LICENSE")
            manifest["files"]["LICENSE"] = {}
        seal_bundle(tmp, out, onnx_path, manifest)
    load_bundle(out)  # the bundle we wrote must load and verify
    return out
