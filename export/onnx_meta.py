"""Copy bundle-manifest facts into an ONNX file's ``metadata_props`` (onnx only, no torch).

Kept apart from :mod:`export.onnx_export` so that the quantization step, which needs
onnx and onnxruntime but not PyTorch, can re-stamp the int8 model it writes.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Manifest keys mirrored into the model file (the pattern of k2-fsa/sherpa-onnx exports).
METADATA_KEYS = ("format", "format_version", "model_id", "model", "audio", "windows", "score", "calibration",
                 "thresholds", "source_checkpoint", "frontend", "quantization", "parity")


def add_onnx_metadata(onnx_path: Path, manifest: dict[str, Any]) -> None:
    """Replace the model's ``metadata_props`` with the manifest's facts (values as JSON strings)."""
    import onnx

    model = onnx.load(str(onnx_path))
    del model.metadata_props[:]
    for key in METADATA_KEYS:
        entry = model.metadata_props.add()
        entry.key = f"edge_detector.{key}"
        entry.value = json.dumps(manifest.get(key))
    model.producer_name = "edge-detector"
    onnx.save(model, str(onnx_path))


def seal_bundle(staging: Path, out: Path, onnx_path: Path, manifest: dict[str, Any]) -> None:
    """Finish a bundle built in ``staging``: stamp ``manifest`` into the ONNX file, hash every file and
    write ``manifest.json`` (validated), then publish ``staging`` as ``out``.

    Raises BundleError when the manifest does not validate (nothing is published then).
    """
    from edge_detector.bundle import publish, write_manifest

    add_onnx_metadata(onnx_path, manifest)
    write_manifest(staging, manifest)
    publish(staging, out)
