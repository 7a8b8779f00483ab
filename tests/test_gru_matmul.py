"""MatMulGRU: PyTorch GRU semantics from MatMul + elementwise ops, and its ONNX export."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from export.gru_matmul import MatMulGRU  # noqa: E402

from conftest import TINY_SIZES  # noqa: E402


@pytest.mark.parametrize(
    "inp,hidden,layers,batch_first,steps",
    [(16, 32, 1, True, 29), (20, 24, 2, True, 7), (8, 5, 3, False, 4), (128, 256, 2, True, 29), (128, 1024, 1, True, 5)],
)
def test_matches_nn_gru_fp32(inp, hidden, layers, batch_first, steps):
    torch.manual_seed(inp * 1000 + hidden + layers)
    gru = torch.nn.GRU(inp, hidden, num_layers=layers, batch_first=batch_first).eval()
    mm = MatMulGRU(gru).eval()
    x = torch.randn((3, steps, inp) if batch_first else (steps, 3, inp))
    with torch.no_grad():
        ref, _ = gru(x)
        got, state = mm(x)
    assert state is None
    want = ref[:, -1:, :] if batch_first else ref[-1:, :, :]
    assert got.shape == want.shape  # only the last step is computed
    assert float((got - want).abs().max()) <= 1e-5


def test_matches_with_large_weights_and_biases():
    """Saturating gates and a large b_hn (the linear_before_reset term) still match."""
    torch.manual_seed(3)
    gru = torch.nn.GRU(6, 9, num_layers=2, batch_first=True)
    with torch.no_grad():
        for p in gru.parameters():
            p.uniform_(-1.5, 1.5)
    x = torch.randn(4, 11, 6)
    with torch.no_grad():
        ref = gru(x)[0][:, -1:]
        got = MatMulGRU(gru)(x)[0]
    assert float((got - ref).abs().max()) <= 1e-5


def test_single_step_and_unsupported_forms():
    gru = torch.nn.GRU(4, 3, batch_first=True)
    x = torch.randn(2, 1, 4)
    with torch.no_grad():
        assert float((MatMulGRU(gru)(x)[0] - gru(x)[0][:, -1:]).abs().max()) <= 1e-6
    with pytest.raises(ValueError):
        MatMulGRU(torch.nn.GRU(4, 3, bidirectional=True))
    with pytest.raises(ValueError):
        MatMulGRU(torch.nn.GRU(4, 3, bias=False))


def _tiny(layers: int):
    from export.rawnet2 import RawNet2, RawNet2Config

    torch.manual_seed(layers)
    model = RawNet2(RawNet2Config(**dict(TINY_SIZES, gru_layers=layers))).eval()
    with torch.no_grad():  # non-trivial BN statistics, as after training
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return model


def test_folded_model_with_matmul_gru_equals_original():
    from export.fold import FoldedRawNet2
    from export.rawnet2 import bonafide_score

    model = _tiny(layers=2)
    folded = FoldedRawNet2(model, recurrent=MatMulGRU(model.gru))
    x = torch.randn(2, 64600) * 0.1
    with torch.no_grad():
        assert float((folded(x) - bonafide_score(model(x))).abs().max()) <= 1e-5


@pytest.mark.slow
def test_export_has_no_gru_and_passes_parity(tmp_path):
    """--gru matmul: the ONNX graph has MatMul instead of GRU, and the parity gate passes."""
    from audio_synth import buzzy, speechlike
    from export.onnx_export import build_bundle

    model = _tiny(layers=2)
    audio = np.stack([speechlike(4.1, seed=1)[:64600], buzzy(4.1, seed=1)[:64600]])
    out = build_bundle(model, tmp_path / "b", audio_windows=audio, gru="matmul", tolerance=1e-4, parity_seed=0)
    graph = onnx.load(str(out / "model.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert "GRU" not in ops
    # input projection once per layer + one recurrent product per step after the first (29 steps)
    assert ops.count("MatMul") == 2 * (1 + 28)
    weights = {i.name for i in graph.initializer}
    hh = [n for n in graph.node if n.op_type == "MatMul" and any("w_hh" in i for i in n.input)]
    assert len(hh) == 2 * 28 and all(n.input[1] in weights for n in hh)  # shared initializers, no per-step copies
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["exporter"]["gru"] == "matmul"
    assert manifest["parity"]["max_abs_diff_random"] <= 1e-4
