"""The numpy FFT sinc front end: exactness vs direct convolution, manifest field, device path."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edge_detector.bundle import load_bundle, write_manifest
from edge_detector.errors import BundleError
from edge_detector.frontend import FrontEndSpec, SincFFTFrontEnd, choose_fft_size, make_frontend

from audio_synth import buzzy, speechlike

torch = pytest.importorskip("torch")
F = torch.nn.functional


def direct(x: np.ndarray, bank: np.ndarray, pool: int = 3) -> np.ndarray:
    """The reference: F.conv1d (direct, cross-correlation) + abs + max_pool1d (floor mode),
    in float32 exactly as the PyTorch model runs it."""
    y = F.conv1d(torch.from_numpy(x)[:, None, :], torch.from_numpy(np.array(bank))[:, None, :])
    return F.max_pool1d(torch.abs(y), pool).numpy()


@pytest.mark.parametrize(
    "filters,kernel,length,fft_size",
    [(20, 1024, 64600, None), (4, 1024, 64600, 2048), (4, 1024, 64600, 65536), (5, 129, 3001, None),
     (3, 31, 100, None), (20, 1024, 1030, None)],
)
def test_equals_direct_convolution(filters, kernel, length, fft_size):
    rng = np.random.default_rng(filters + length)
    x = (rng.standard_normal((2, length)) * rng.uniform(0.05, 0.9, (2, 1))).astype(np.float32)
    fe = SincFFTFrontEnd(FrontEndSpec(filters=filters, kernel=kernel), fft_size=fft_size)
    got = fe(x)
    want = direct(x, fe.filters)
    assert got.shape == want.shape == (2, filters, (length - fe.spec.taps + 1) // 3)
    assert got.dtype == np.float32
    scale = float(np.abs(x).max())
    assert float(np.abs(got - want).max()) <= 1e-5 * scale


def test_equals_direct_convolution_on_speech():
    x = np.stack([speechlike(4.1, seed=3)[:64600], buzzy(4.1, seed=3)[:64600]])
    fe = SincFFTFrontEnd(FrontEndSpec(filters=20))
    assert float(np.abs(fe(x) - direct(x, fe.filters)).max()) <= 1e-5 * float(np.abs(x).max())


@pytest.mark.parametrize("pool", [1, 9, 27, 81])
def test_other_pools_equal_direct_convolution(pool):
    """Pools up to 40 take the strided-maximum path, wider ones (coarse-time AASIST variants) one reduction."""
    x = (np.random.default_rng(pool).standard_normal((1, 6000)) * 0.4).astype(np.float32)
    fe = SincFFTFrontEnd(FrontEndSpec(filters=3, kernel=129, pool=pool))
    got, want = fe(x), direct(x, fe.filters, pool)
    assert got.shape == want.shape == (1, 3, (6000 - 129 + 1) // pool)
    assert float(np.abs(got - want).max()) <= 1e-5


def test_pruned_bank_uses_the_original_grid():
    spec = FrontEndSpec(filters=3, kernel=1024, keep=(1, 4, 7), total=10)
    from edge_detector.sincbank import sinc_filters

    np.testing.assert_array_equal(spec.bank(), sinc_filters(10, 1024)[[1, 4, 7]])
    x = np.random.default_rng(0).standard_normal((1, 4000)).astype(np.float32) * 0.3
    assert float(np.abs(SincFFTFrontEnd(spec)(x) - direct(x, spec.bank())).max()) <= 1e-5
    assert FrontEndSpec.from_manifest(spec.to_manifest()) == spec
    with pytest.raises(BundleError):
        FrontEndSpec(filters=2, keep=(1, 4, 7), total=10)


def test_manifest_round_trip_and_errors():
    spec = FrontEndSpec(filters=20, kernel=1024)
    entry = spec.to_manifest()
    assert entry == {"type": "sinc-fft-numpy", "filters": 20, "kernel": 1025, "sample_rate": 16000, "pool": 3}
    assert FrontEndSpec.from_manifest(entry).output_shape(64600) == (20, 21192)
    assert make_frontend(None) is None
    with pytest.raises(BundleError, match="unknown front-end type"):
        FrontEndSpec.from_manifest(dict(entry, type="mel-gpu"))
    with pytest.raises(BundleError):
        FrontEndSpec.from_manifest(dict(entry, pool=0))
    with pytest.raises(BundleError):
        FrontEndSpec.from_manifest("sinc")
    assert choose_fft_size(1030, 1025) == 2048  # single block for short windows
    assert choose_fft_size(8000, 1025) == 8192


def test_fft_size_is_5_smooth_and_pads_least():
    """RawNet2's window: 9000 points = 8 blocks of 7976 valid outputs (63 808 for 63 576
    needed), against 8192 points = 9 blocks of 7168 (64 512). Hand-computed."""
    assert choose_fft_size(64600, 1025) == 9000
    for window in (9000, 16000, 32000, 64600, 96000):
        n = choose_fft_size(window, 1025)
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        assert m == 1 and 8192 <= n <= 9216
        hop = n - 1025 + 1
        blocks = -(-(window - 1024) // hop)
        for other in (8192, 9216):  # never more samples transformed than the power-of-two sizes
            assert blocks * n <= -(-(window - 1024) // (other - 1024)) * other


@pytest.mark.parametrize("window", [1030, 9000, 20000, 64600])
def test_default_block_size_equals_direct_convolution(window):
    spec = FrontEndSpec(filters=6, kernel=1024)
    x = np.random.default_rng(window).standard_normal(window).astype(np.float32)
    got = SincFFTFrontEnd(spec).filtered(x)
    bank = spec.bank().astype(np.float64)
    direct = np.stack([np.correlate(x.astype(np.float64), h, mode="valid") for h in bank])
    assert got.shape == direct.shape
    assert np.abs(got - direct).max() <= 2e-5 * np.abs(direct).max()


# --------------------------------------------------------------------------- export + device path


@pytest.fixture(scope="module")
def small_model():
    from conftest import train_tiny

    return train_tiny(steps=2, seed=5)


@pytest.fixture(scope="module")
def fft_bundle(small_model, tmp_path_factory):
    from export.onnx_export import build_bundle

    audio = np.stack([speechlike(4.1, seed=11)[:64600], buzzy(4.1, seed=11)[:64600]])
    out = tmp_path_factory.mktemp("fe") / "fft"
    return build_bundle(small_model, out, audio_windows=audio, frontend="numpy-fft", parity_seed=0)


def test_export_numpy_frontend_bundle(fft_bundle, small_model):
    import onnx

    from edge_detector.detector import Detector
    from export.scoring import score_windows

    m = json.loads((fft_bundle / "manifest.json").read_text())
    assert m["frontend"] == {"type": "sinc-fft-numpy", "filters": 8, "kernel": 1025, "sample_rate": 16000, "pool": 3}
    assert m["onnx"]["input"] == "features" and m["onnx"]["input_shape"] == ["batch", 8, 21192]
    assert m["exporter"]["frontend"] == "numpy-fft"
    assert "numpy sinc-fft-numpy" in m["parity"]["device_path"]
    graph = onnx.load(str(fft_bundle / "model.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert "Abs" not in ops and ops.count("Conv") == 13  # the 1025-tap sinc conv is gone
    assert graph.node[0].op_type == "BatchNormalization"  # the graph starts at first_bn
    # the public API is unchanged: raw windows in, raw scores out, equal to PyTorch
    x = np.stack([speechlike(5.0, seed=21)[:64600], buzzy(5.0, seed=22)[:64600], speechlike(4.1, seed=23)[:64600]])
    det = Detector(fft_bundle)
    got = det.score_windows(x)
    assert got.shape == (3,)
    np.testing.assert_allclose(got, score_windows(small_model, x), atol=1e-4)
    res = det.score_samples(speechlike(2.0, seed=24))  # short audio: tiled, then the front end
    assert np.isfinite(res.score)


def test_unknown_frontend_type_is_a_bundle_error(fft_bundle, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(fft_bundle, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m["frontend"]["type"] = "sinc-fft-cuda"
    (dst / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="unknown front-end type"):
        load_bundle(dst)
    m["frontend"] = {"type": "sinc-fft-numpy", "filters": 8, "kernel": 1025, "sample_rate": 8000, "pool": 3}
    with pytest.raises(BundleError, match="sample_rate"):
        write_manifest(dst, m)


def test_graph_and_manifest_must_agree(fft_bundle, tmp_path):
    """A features graph declared as a waveform graph (frontend removed) is refused at load."""
    from edge_detector.detector import Detector

    dst = tmp_path / "b"
    shutil.copytree(fft_bundle, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m["frontend"] = None
    write_manifest(dst, m)
    with pytest.raises(BundleError, match="rank"):
        Detector(dst)


@pytest.mark.slow
def test_cli_export_options(small_model, tmp_path):
    from click.testing import CliRunner

    from edge_detector.cli import main
    from export.rawnet2 import save_checkpoint

    ckpt = tmp_path / "m.pt"
    save_checkpoint(small_model, str(ckpt))
    out = tmp_path / "bundle"
    # a fixed --parity-seed: the gate's random windows are otherwise fresh on every export, and this test
    # must not depend on which ones a run draws (unseeded, it failed once in four clean-clone runs at 1.08e-4)
    r = CliRunner().invoke(main, ["export", str(ckpt), "-o", str(out), "--frontend", "numpy-fft", "--gru", "matmul",
                                  "--parity-seed", "0"])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["exporter"]["frontend"] == "numpy-fft" and m["exporter"]["gru"] == "matmul"
    assert m["frontend"]["type"] == "sinc-fft-numpy"


def test_features_one_writes_into_a_given_buffer():
    spec = FrontEndSpec(filters=4, kernel=1024)
    fe = SincFFTFrontEnd(spec)
    x = np.random.default_rng(5).standard_normal(20000).astype(np.float32)
    want = fe.features_one(x)
    buf = np.full(want.shape, np.nan, dtype=np.float32)
    got = fe.features_one(x, out=buf)
    assert got is buf and np.array_equal(buf, want)
    with pytest.raises(ValueError, match="float32"):
        fe.features_one(x, out=np.empty((4, 3), dtype=np.float32))
