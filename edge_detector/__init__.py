"""edge-detector: audio anti-spoofing on the device (numpy + onnxruntime + soundfile).

Importing this package never imports torch, onnx or scipy: the device runtime is
numpy, onnxruntime and soundfile only. Heavy names load lazily on first use.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Detector", "Bundle", "load_bundle", "__version__"]


def __getattr__(name: str):
    if name == "Detector":
        from .detector import Detector

        return Detector
    if name in ("Bundle", "load_bundle"):
        from . import bundle

        return getattr(bundle, name)
    raise AttributeError(name)
