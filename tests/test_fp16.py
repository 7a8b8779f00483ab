"""fp16 bundles: the converter, onnxruntime CPU running the result, scores close to fp32."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

onnx = pytest.importorskip("onnx")

from audio_synth import buzzy, speechlike, write as write_wav  # noqa: E402
from edge_detector.bundle import load_bundle  # noqa: E402
from edge_detector.cli import main  # noqa: E402
from edge_detector.detector import Detector  # noqa: E402
from edge_detector.errors import BundleError, ExitCode  # noqa: E402
from edge_detector.session import SessionSettings  # noqa: E402
from quantize.fp16 import FP16_TOLERANCE, convert_bundle, convert_model_to_fp16  # noqa: E402

F32, F16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


@pytest.fixture(scope="module")
def fp16_pair(tiny_bundle_master, tmp_path_factory):
    """(fp32 bundle, its fp16 variant as a sibling '<bundle>-fp16')."""
    import shutil

    root = tmp_path_factory.mktemp("fp16")
    src = root / "default"
    shutil.copytree(tiny_bundle_master, src)
    out, summary = convert_bundle(src, root / "default-fp16", seed=0)
    return src, out, summary


def test_converter_writes_a_valid_fp16_bundle(fp16_pair):
    src, out, summary = fp16_pair
    b = load_bundle(out)  # verifies sha256 of every file
    m = b.manifest
    assert m["model"]["variant"] == "fp16" and m["model_id"].endswith("-fp16")
    assert m["quantization"]["method"] == "fp16"
    assert m["quantization"]["source_bundle"]["model_sha256"] == load_bundle(src).model_sha256
    p = m["parity"]
    assert p["tolerance"] == FP16_TOLERANCE and p["decisions_agree"] is True
    assert max(p["max_abs_diff_random"], p["max_abs_diff_audio"]) <= FP16_TOLERANCE
    assert summary["bytes"] < 0.7 * summary["source_bytes"]
    model = onnx.load(str(b.model_path))
    onnx.checker.check_model(model)
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [F32]  # I/O stay float32
    assert [(o.name, o.type.tensor_type.elem_type) for o in model.graph.output] == [("score", F32), ("embedding", F32)]
    assert {t.data_type for t in model.graph.initializer if t.data_type in (F32, F16)} == {F16}
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["edge_detector.model"])["variant"] == "fp16"


def test_ort_cpu_scores_fp16_within_tolerance(fp16_pair, tmp_path):
    src, out, _ = fp16_pair
    settings = SessionSettings(intra_op_threads=1)
    d32, d16 = Detector(src, settings, require_speech=False), Detector(out, settings, require_speech=False)
    assert d16.provider == "CPUExecutionProvider"
    files = [write_wav(tmp_path / "s.wav", speechlike(6.0, seed=21)), write_wav(tmp_path / "b.wav", buzzy(4.5, seed=22)),
             write_wav(tmp_path / "short.wav", speechlike(1.5, seed=23))]
    for f in files:
        r32, r16 = d32.score_file(f, windows="all"), d16.score_file(f, windows="all")
        assert abs(r32.score - r16.score) <= FP16_TOLERANCE
        assert max(abs(a["score"] - b["score"]) for a, b in zip(r32.windows, r16.windows)) <= FP16_TOLERANCE
        assert r32.decision == r16.decision and np.isfinite(r16.score)


def test_keep_fp32_ops_stay_float32(tiny_bundle_master):
    model = onnx.load(str(tiny_bundle_master / "model.onnx"))
    converted, report = convert_model_to_fp16(model, keep_fp32_ops=["GRU"])
    gru = next(n for n in converted.graph.node if n.op_type == "GRU")
    inits = {t.name: t.data_type for t in converted.graph.initializer}
    assert all(inits[name] == F32 for name in gru.input if name in inits)
    assert report.initializers_fp32 >= 3 and report.casts_inserted >= 4
    import onnxruntime as ort

    sess = ort.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"])
    x = speechlike(4.0375, seed=3)[None, :64600]
    assert np.isfinite(sess.run(None, {"waveform": x})[0]).all()


def test_cli_convert_fp16(tiny_bundle, tmp_path):
    out = tmp_path / "b16"
    res = CliRunner().invoke(main, ["convert-fp16", str(tiny_bundle), "-o", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["variant"] == "fp16" and load_bundle(out).manifest["model"]["variant"] == "fp16"
    again = CliRunner().invoke(main, ["convert-fp16", str(tiny_bundle), "-o", str(out)])
    assert again.exit_code == ExitCode.USAGE and "already exists" in again.stderr
    not_fp32 = CliRunner().invoke(main, ["convert-fp16", str(out), "-o", str(tmp_path / "x")])
    assert not_fp32.exit_code == ExitCode.BAD_BUNDLE and "needs an fp32 bundle" in not_fp32.stderr


def test_tolerance_is_enforced(tiny_bundle, tmp_path):
    from quantize.fp16 import Fp16ParityError

    with pytest.raises(Fp16ParityError, match="fp16 parity failed"):
        convert_bundle(tiny_bundle, tmp_path / "strict", tolerance=1e-9, seed=0)
    assert not (tmp_path / "strict").exists()  # nothing half-written
    with pytest.raises(BundleError):
        convert_bundle(tmp_path / "missing", tmp_path / "o")


def test_jetson_profile_picks_the_fp16_sibling(fp16_pair):
    from firmware_config import load_profile

    src, out, _ = fp16_pair
    assert load_profile("jetson-orin-nano").resolve_bundle(src) == out


def test_fp16_scores_equal_pytorch_within_tolerance(fp16_pair, tiny_model):
    """fp16 against the PyTorch model (not the fp32 runtime path), on windows built here."""
    from export.scoring import score_windows

    _, out, _ = fp16_pair
    signals = [speechlike(2.0, seed=31), buzzy(3.0, seed=32), speechlike(4.5, seed=33, f0=200), buzzy(1.5, seed=34)]
    windows = np.stack([np.tile(x, 64600 // len(x) + 1)[:64600] for x in signals])
    want = score_windows(tiny_model, windows)
    got = Detector(out, SessionSettings(intra_op_threads=1)).score_windows(windows)
    assert float(np.abs(got - want).max()) <= FP16_TOLERANCE
    assert np.ptp(want) > 25 * FP16_TOLERANCE  # the tolerance is small against how far scores spread
