"""Several windows of one signal through the numpy front end at once (the `--windows all` path).

`features_windows` filters the span of overlapping windows once and max-pools each
window's slice; these tests hold it to the per-window computation and to the direct
float64 cross-correlation, and check that the scorer gives the same scores as scoring
the stacked windows.
"""
from __future__ import annotations

import numpy as np
import pytest

from edge_detector.detector import WindowScorer
from edge_detector.frontend import FrontEndSpec, SincFFTFrontEnd
from edge_detector.windows import WindowRule, make_windows, window_starts

from audio_synth import speechlike


def direct_features(x: np.ndarray, bank: np.ndarray, pool: int = 3) -> np.ndarray:
    """float64 valid cross-correlation, |.|, floor-mode max-pool: ``[filters, pooled]``."""
    y = np.stack([np.correlate(x.astype(np.float64), h.astype(np.float64), mode="valid") for h in bank])
    n = y.shape[1] // pool
    return np.abs(y[:, : n * pool]).reshape(len(bank), n, pool).max(axis=2)


@pytest.mark.parametrize("window,hop,length", [(6000, 3000, 20011), (6000, 2500, 6001), (3000, 3000, 12000),
                                               (3000, 4000, 15000)])
def test_windows_of_one_signal_equal_each_window_alone(window, hop, length):
    spec = FrontEndSpec(filters=5, kernel=1024, keep=(0, 3, 9, 12, 19), total=20)
    fe = SincFFTFrontEnd(spec, fft_size=2048)  # several blocks per window, and blocks straddling windows
    rng = np.random.default_rng(length)
    x = (rng.standard_normal(length) * 0.3).astype(np.float32)
    starts = window_starts(length, window, hop)  # the last one aligned to the end: any offset mod pool
    got = fe.features_windows(x, starts, window)
    alone = fe(np.stack([x[s: s + window] for s in starts]))
    assert got.shape == alone.shape == (len(starts), 5, (window - 1025 + 1) // 3)
    scale = float(np.abs(alone).max())
    assert float(np.abs(got - alone).max()) <= 1e-6 * scale
    for w in (0, len(starts) - 1):
        want = direct_features(x[starts[w]: starts[w] + window], spec.bank())
        assert float(np.abs(got[w] - want).max()) <= 2e-6 * float(np.abs(want).max())


def test_features_windows_writes_into_out_and_checks_its_input():
    fe = SincFFTFrontEnd(FrontEndSpec(filters=3, kernel=128))
    x = np.random.default_rng(1).standard_normal(5000).astype(np.float32)
    buf = np.full((3, 3, (1000 - 129 + 1) // 3), np.nan, dtype=np.float32)
    got = fe.features_windows(x, [0, 500, 4000], 1000, out=buf)
    assert got is buf and not np.isnan(buf).any()
    np.testing.assert_allclose(buf[1], fe.features_one(x[500:1500]), rtol=0, atol=1e-6 * float(np.abs(buf).max()))
    assert fe.features_windows(x, [], 1000).shape == (0, 3, 290)
    with pytest.raises(ValueError, match="outside"):
        fe.features_windows(x, [4500], 1000)
    with pytest.raises(ValueError, match="float32"):
        fe.features_windows(x, [0], 1000, out=np.empty((2, 3, 290), np.float32))


@pytest.fixture(scope="module")
def mean_model(tmp_path_factory):
    """A real ONNX graph on features: score = mean over filters and time + 0.01 * max (batch axis kept)."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    nodes = [helper.make_node("ReduceMean", ["features"], ["m"], axes=[1, 2], keepdims=0),
             helper.make_node("ReduceMax", ["features"], ["mx"], axes=[1, 2], keepdims=0),
             helper.make_node("Mul", ["mx", "c"], ["mx2"]),
             helper.make_node("Add", ["m", "mx2"], ["score"])]
    graph = helper.make_graph(nodes, "mean", [helper.make_tensor_value_info("features", TensorProto.FLOAT,
                                                                           ["batch", 4, "t"])],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
                              initializer=[helper.make_tensor("c", TensorProto.FLOAT, [], [0.01])])
    path = tmp_path_factory.mktemp("mean") / "mean.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def test_scorer_scores_a_signal_like_its_stacked_windows(mean_model):
    spec = FrontEndSpec(filters=4, kernel=1024)
    scorer = WindowScorer(mean_model, "features", "score", spec, max_batch=3)  # 7 windows: batches 3+3+1
    x = speechlike(2.0, seed=4)[:31000]
    rule = WindowRule(window=8000, hop=4000, mode="all")
    scores, starts = scorer.score_signal(x, rule)
    batch, want_starts = make_windows(x, rule)
    want = scorer.score(batch)
    assert starts == want_starts and len(starts) == 7
    np.testing.assert_allclose(scores, want, rtol=1e-5, atol=0)
    first, first_starts = scorer.score_signal(x, WindowRule(window=8000, hop=4000, mode="first"))
    assert first_starts == [0] and first.shape == (1,)
    np.testing.assert_allclose(first, want[:1], rtol=1e-5, atol=0)
