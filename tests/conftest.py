"""Shared fixtures: a tiny RawNet2 trained for a few steps on synthetic audio, and its bundle.

The model is the project's own class at tiny sizes and goes through the project's own
export path (fold, TorchScript export, parity gate, manifest), so every runtime test
runs a real onnxruntime session on a real exported file.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from audio_synth import buzzy, speechlike  # noqa: E402

TINY_SIZES = dict(sinc_filters=8, stage1_channels=8, stage2_channels=16, gru_hidden=32, gru_layers=1, fc1_dim=32)


def train_tiny(steps: int = 6, seed: int = 0, sizes: dict | None = None):
    """A tiny RawNet2 that has seen a few batches (so BN statistics and weights are not at init)."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from export.rawnet2 import RawNet2, RawNet2Config

    torch.manual_seed(seed)
    model = RawNet2(RawNet2Config(**(sizes or TINY_SIZES)))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    for step in range(steps):
        xs, ys = [], []
        for i in range(2):
            s = int(rng.integers(0, 10_000))
            xs.append(speechlike(4.0375, seed=s, f0=float(rng.uniform(90, 220))))
            ys.append(1)
            xs.append(buzzy(4.0375, seed=s))
            ys.append(0)
        x = torch.from_numpy(np.stack(xs)[:, :64600])
        y = torch.tensor(ys)
        loss = F.nll_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model():
    return train_tiny()


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_model, tmp_path_factory) -> Path:
    from export.rawnet2 import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(tiny_model, str(path), meta={"test": True})
    return path


@pytest.fixture(scope="session")
def tiny_bundle_master(tiny_model, tiny_checkpoint, tmp_path_factory) -> Path:
    from export.onnx_export import build_bundle

    audio = np.stack([speechlike(4.0375, seed=7)[:64600], buzzy(4.0375, seed=7)[:64600]])
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    build_bundle(tiny_model, out, checkpoint_path=str(tiny_checkpoint), audio_windows=audio, overwrite=True)
    return out


@pytest.fixture()
def tiny_bundle(tiny_bundle_master, tmp_path) -> Path:
    """A private copy of the tiny bundle (tests may tamper with it)."""
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_master, dst)
    return dst


def set_thresholds(bundle_dir: Path, accept: float, reject: float) -> None:
    """Re-sign a bundle with other thresholds (to force accept / reject / uncertain in tests)."""
    import json

    from edge_detector.bundle import write_manifest

    m = json.loads((bundle_dir / "manifest.json").read_text())
    m["thresholds"]["accept"] = accept
    m["thresholds"]["reject"] = reject
    write_manifest(bundle_dir, m)
