"""Our AASIST (export/aasist.py) against the official implementation's outputs.

``../shared/models/aasist/`` (beside the clone; CI has it) holds the published weights and
``reference_logits.json``: clovaai/aasist's logits on inputs anyone can regenerate. The
``synth:SEED`` inputs are rebuilt here from the file's own formula; the ``dev:`` entries
need the dev corpus, which tests never read, so they are checked by the tools instead.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export.aasist import (  # noqa: E402
    AASIST,
    AASISTConfig,
    bonafide_logit,
    count_parameters,
    kept_nodes,
    load_aasist,
    save_aasist,
)

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "models" / "aasist"
TOLERANCE = 1e-4


def synth_input(seed: int) -> np.ndarray:
    """``synth:SEED`` of reference_logits.json: f0 drawn first, then the noise, float32."""
    rng = np.random.default_rng(seed)
    f0 = 110 + 60 * rng.random()
    t = np.arange(64600) / 16000
    x = 0.3 * np.sin(2 * np.pi * f0 * t * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))) + 0.05 * rng.standard_normal(64600)
    return np.float32(x)


def needs_shared() -> Path:
    if not (SHARED / "reference_logits.json").is_file():
        pytest.skip(f"official AASIST weights not found at {SHARED} (the shared folder beside the clone)")
    return SHARED


@pytest.mark.parametrize("name,params", [("AASIST-L", 85_306), ("AASIST", 297_866)])
def test_official_weights_match_reference_logits(name, params):
    shared = needs_shared()
    ref = json.loads((shared / "reference_logits.json").read_text())["models"][name]
    keys = sorted(k for k in ref if k.startswith("synth:"))
    assert len(keys) >= 2
    model, meta = load_aasist(shared / f"{name}.pth")
    assert model.config.name == name
    assert meta["repository"] == "clovaai/aasist" and meta["licence"] == "MIT"
    assert count_parameters(model) == params
    assert sum(v.numel() for v in model.state_dict().values()) == {"AASIST": 299_550, "AASIST-L": 86_270}[name]
    x = torch.from_numpy(np.stack([synth_input(int(k.split(":")[1])) for k in keys]))
    with torch.no_grad():
        got = model(x).numpy()
    want = np.array([ref[k] for k in keys], dtype=np.float64)
    np.testing.assert_allclose(got, want, atol=TOLERANCE, rtol=0)


def tiny_config() -> AASISTConfig:
    return AASISTConfig(name="tiny", encoder=[[1, 4], [4, 6]], gat_dims=[6, 5], pool_ratios=[0.5, 0.5, 0.5, 0.5],
                        window=8000)


def test_strict_loading_and_round_trip(tmp_path):
    torch.manual_seed(0)
    model = AASIST(tiny_config()).eval()
    path = tmp_path / "tiny.pt"
    save_aasist(model, path, meta={"note": "test"})
    loaded, meta = load_aasist(path)
    assert meta["note"] == "test" and len(meta["sha256"]) == 64
    x = torch.from_numpy(np.stack([synth_input(1)[:8000], synth_input(2)[:8000]]))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    # a missing key or a state dict that is no AASIST is refused
    state = model.state_dict()
    del state["pos_S"]
    torch.save({"state_dict": state, "config": model.config.to_dict()}, tmp_path / "broken.pt")
    with pytest.raises(RuntimeError, match="pos_S"):
        load_aasist(tmp_path / "broken.pt")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an AASIST"):
        load_aasist(tmp_path / "other.pt")


def test_shapes_and_graph_pooling():
    cfg = tiny_config()
    model = AASIST(cfg).eval()
    x = torch.from_numpy(np.stack([synth_input(3)[:8000]]))
    with torch.no_grad():
        pooled = model.front(x)
        feats = model.encode(pooled)
        logits = model(x)
    assert tuple(pooled.shape) == (1, 1, 23, (8000 - 129 + 1) // 3)
    # two blocks, each a 1x3 max-pool over time; the height (23 spectral nodes) is kept
    assert tuple(feats.shape) == (1, 6, 23, ((8000 - 128) // 3) // 3 // 3)
    assert tuple(logits.shape) == (1, 2) and torch.equal(bonafide_logit(logits), logits[:, 1])
    assert [kept_nodes(23, 0.4), kept_nodes(29, 0.5), kept_nodes(9, 0.7), kept_nodes(1, 0.1)] == [9, 14, 6, 1]
    # pooling keeps the highest-gated nodes, gated, in descending gate order
    pool = model.pool_S
    h = torch.tensor([[[0.0] * 5 + [1.0], [0.0] * 5 + [3.0], [0.0] * 5 + [2.0], [0.0] * 5 + [-1.0]]])
    with torch.no_grad():
        pool.proj.weight.copy_(torch.tensor([[0, 0, 0, 0, 0, 1.0]]))
        pool.proj.bias.zero_()
        out = pool(h)
    gate = torch.sigmoid(torch.tensor([3.0, 2.0]))
    torch.testing.assert_close(out[0, :, 5], torch.tensor([3.0, 2.0]) * gate)
