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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(REPO))  # the checkout first: never a stale installed copy


def _check_imports_come_from_the_checkout() -> None:
    """Refuse to run if a project package would be imported from anywhere but this checkout.

    A stale installed copy (a non-editable install, another clone on PYTHONPATH) would let
    the suite pass while the code being changed is broken.
    """
    import importlib

    for name in ("edge_detector", "export", "quantize", "firmware_config"):
        mod = importlib.import_module(name)
        where = Path(mod.__file__).resolve()
        if REPO not in where.parents:
            pytest.exit(f"{name} is imported from {where}, not from the checkout {REPO}: "
                        f"reinstall with `pip install -e .` or fix PYTHONPATH", returncode=4)


_check_imports_come_from_the_checkout()

from audio_synth import buzzy, speechlike  # noqa: E402

TINY_SIZES = dict(sinc_filters=8, stage1_channels=8, stage2_channels=16, gru_hidden=32, gru_layers=1, fc1_dim=32)


def train_tiny(steps: int = 6, seed: int = 0, sizes: dict | None = None):
    """A tiny RawNet2 that has seen a few batches, with batch-norm statistics measured on real inputs.

    A few Adam steps leave the BN running statistics mostly at their initial values, and
    in eval mode the model then gives nearly the same score to every input (a spread of
    ~1e-3 over very different signals): tolerances of 1e-2 would then hide a wrong graph.
    The statistics are therefore re-estimated (cumulative average, no weight change) on a
    held batch of both classes, so scores differ by about 1 between speech-like and buzzy
    audio (see ``test_tiny_model_is_discriminative``).
    """
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
    recalibrate_batchnorm(model, seed=seed)
    return model.eval()


def recalibrate_batchnorm(model, seed: int = 0, n_per_class: int = 4) -> None:
    """Set every BN layer's running mean/var to the exact statistics of one batch of both classes."""
    torch = pytest.importorskip("torch")

    rng = np.random.default_rng(10_000 + seed)
    rows = [speechlike(4.0375, seed=int(rng.integers(0, 10_000)), f0=float(rng.uniform(90, 220)))
            for _ in range(n_per_class)]
    rows += [buzzy(4.0375, seed=int(rng.integers(0, 10_000))) for _ in range(n_per_class)]
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one batch gives its exact statistics
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(np.stack(rows)[:, :64600]))
    for m, momentum in zip(bns, saved):
        m.momentum = momentum
    model.eval()


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
    build_bundle(tiny_model, out, checkpoint_path=str(tiny_checkpoint), audio_windows=audio, overwrite=True,
                 parity_seed=0)
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
