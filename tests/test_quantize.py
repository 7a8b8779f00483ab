"""Static int8 QDQ quantization of bundles, calibrated on decoded protocol audio.

Bundles here use a 1 s window (the model is length-agnostic; the GRU unrolls over 6
steps instead of 29) so that quantizing ~20 variants for the sensitivity report stays
within the test budget.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("torch")

from edge_detector.bundle import load_bundle  # noqa: E402
from edge_detector.detector import Detector  # noqa: E402
from edge_detector.windows import WindowRule  # noqa: E402

from audio_synth import buzzy, speechlike, write  # noqa: E402

WINDOW = 16000


@pytest.fixture(scope="module")
def model():
    from conftest import train_tiny

    return train_tiny(steps=3, seed=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    """A protocol and audio folder: speech-like bona fide, buzzy spoofs, mixed rates/lengths/formats."""
    root = tmp_path_factory.mktemp("corpus")
    audio = root / "audio"
    audio.mkdir()
    lines = []
    for i in range(6):
        write(audio / f"B{i:02d}.wav", speechlike(0.8 + 0.15 * i, seed=40 + i, f0=100 + 15 * i))
        lines.append(f"VCTK_p{i} B{i:02d} - - bonafide")
        write(audio / f"S{i:02d}.flac", buzzy(0.7 + 0.2 * i, sr=22050, seed=60 + i), sr=22050)
        lines.append(f"LJ S{i:02d} - tts{i % 2} spoof")
    protocol = root / "protocol.txt"
    protocol.write_text("\n".join(lines) + "\n")
    return protocol, audio


def _bundle(model, out: Path, frontend: str, gru: str) -> Path:
    from export.onnx_export import build_bundle

    audio = np.stack([speechlike(1.2, seed=1)[:WINDOW], buzzy(1.2, seed=1)[:WINDOW]])
    return build_bundle(model, out, audio_windows=audio, window_rule=WindowRule(window=WINDOW, hop=WINDOW // 2),
                        frontend=frontend, gru=gru, parity_seed=0)


@pytest.fixture(scope="module")
def fp32_matmul(model, tmp_path_factory) -> Path:
    return _bundle(model, tmp_path_factory.mktemp("b") / "fp32-mm", "numpy-fft", "matmul")


def _producer(graph):
    return {o: n for n in graph.node for o in n.output}


def test_quantize_with_sensitivity_and_budget(model, fp32_matmul, corpus, tmp_path):
    from quantize.qdq_graph import quantizable_groups
    from quantize.static_int8 import quantize_bundle

    protocol, audio = corpus
    out = tmp_path / "int8"
    logs: list[str] = []
    res = quantize_bundle(fp32_matmul, out, protocol, audio, calib_count=6, eval_count=6, sensitivity=True,
                          max_eer_increase=0.0, log=logs.append)
    # --- graph: QDQ around every Conv / MatMul, no GRU op left
    graph = onnx.load(str(out / "model.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert "GRU" not in ops
    assert ops.count("QuantizeLinear") > 20 and ops.count("DequantizeLinear") > 40
    prod = _producer(graph)
    excluded = set(res.manifest["quantization"]["excluded_nodes"])
    targets = [n for n in graph.node if n.op_type in ("Conv", "MatMul") and n.name not in excluded]
    assert len(targets) >= 10
    for n in targets:  # activation and weight both come through DequantizeLinear
        assert prod[n.input[0]].op_type == "DequantizeLinear", n.name
        assert prod[n.input[1]].op_type == "DequantizeLinear", n.name
    # --- the device runs it
    b = load_bundle(out)
    det = Detector(b)
    x = np.stack([speechlike(1.5, seed=5)[:WINDOW], buzzy(1.5, seed=5)[:WINDOW]])
    scores = det.score_windows(x)
    ref = Detector(fp32_matmul).score_windows(x)
    assert scores.shape == (2,) and np.all(np.isfinite(scores))
    assert float(np.abs(scores - ref).max()) < 0.05
    from export.scoring import score_windows

    torch_ref = score_windows(model, x)  # the PyTorch model: a reference the runtime does not compute
    assert float(np.abs(scores - torch_ref).max()) < 0.05 and np.ptp(torch_ref) > 0.2
    # --- recipe in the manifest
    m = res.manifest
    q = m["quantization"]
    assert m["model"]["variant"] == "int8" and m["model_id"].endswith("-int8")
    assert q["format"] == "QDQ" and q["per_channel"] is True
    assert q["activation_type"] == "int8" and q["weight_type"] == "int8" and q["activation_symmetric"] is False
    assert q["calibration"]["protocol"] == "protocol.txt" and q["calibration"]["files"] == 6
    assert q["calibration"]["bonafide"] == 3 and q["calibration"]["spoof"] == 3
    assert "sinc-fft-numpy" in q["calibration"]["preprocessing"]
    assert set(q["versions"]) == {"onnxruntime", "onnx"}
    p = q["parity_vs_fp32"]
    assert p["files"] == 6 and 0 < p["mean_abs_diff"] <= p["max_abs_diff"] < 0.05  # int8 differs, slightly
    assert p["decision_agreement"] == 1.0  # scores ~1 apart between classes: no decision moves
    assert m["frontend"] == json.loads((fp32_matmul / "manifest.json").read_text())["frontend"]
    assert q["budget"]["met"] is True and q["budget"]["eer_int8"] <= q["budget"]["eer_fp32"]
    assert q["source_bundle"]["model_sha256"] == load_bundle(fp32_matmul).model_sha256
    # --- sensitivity: one entry per weight group, plus both references
    rep = json.loads((out / "sensitivity.json").read_text())
    assert "sensitivity.json" in m["files"]  # hashed with the bundle
    fp32_graph = onnx.load(str(fp32_matmul / "model.onnx")).graph
    n_conv = sum(n.op_type == "Conv" for n in fp32_graph.node)
    n_gemm = sum(n.op_type == "Gemm" for n in fp32_graph.node)
    assert len(rep["groups"]) == n_conv + n_gemm + 2  # + GRU input and recurrent weight (1 layer)
    assert len({g["group"] for g in rep["groups"]}) == len(rep["groups"])
    hh = [g for g in rep["groups"] if "w_hh" in g["group"]]
    assert len(hh) == 1 and len(hh[0]["nodes"]) > 1  # all unrolled steps in one group
    for g in rep["groups"]:
        assert {"eer", "max_abs_diff", "mean_abs_diff", "decision_agreement", "nodes"} <= set(g)
    assert set(rep["reference"]) == {"all-fp32", "all-int8"}
    assert sorted(rep["ranking"]) == sorted(g["group"] for g in rep["groups"])


def test_cli_exclude_symmetric_no_per_channel(fp32_matmul, corpus, tmp_path):
    from click.testing import CliRunner

    from edge_detector.cli import main

    protocol, audio = corpus
    out = tmp_path / "int8s"
    r = CliRunner().invoke(main, [
        "quantize", str(fp32_matmul), "-o", str(out), "--protocol", str(protocol), "--audio-dir", str(audio),
        "--calib-count", "4", "--exclude", "/head/Gemm,/blocks.0/conv1/Conv", "--symmetric", "--no-per-channel"])
    assert r.exit_code == 0, r.output
    m = load_bundle(out).manifest
    q = m["quantization"]
    assert m["model"]["variant"] == "int8-symmetric"
    assert q["activation_symmetric"] is True and q["per_channel"] is False
    assert set(q["excluded_nodes"]) == {"/head/Gemm", "/blocks.0/conv1/Conv"}
    graph = onnx.load(str(out / "model.onnx")).graph
    prod = _producer(graph)
    conv = next(n for n in graph.node if n.name == "/blocks.0/conv1/Conv")
    assert all(i not in prod or prod[i].op_type != "DequantizeLinear" for i in conv.input)  # stayed fp32
    # symmetric activations: every activation zero point is 0
    inits = {i.name: i for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "QuantizeLinear" and len(n.input) > 2:
            assert not np.any(onnx.numpy_helper.to_array(inits[n.input[2]]))
    assert Detector(out).score_windows(np.zeros((1, WINDOW), np.float32) + 0.01).shape == (1,)
    # unknown exclusion names fail with the bundle untouched
    r = CliRunner().invoke(main, ["quantize", str(fp32_matmul), "-o", str(tmp_path / "x"), "--protocol", str(protocol),
                                  "--audio-dir", str(audio), "--exclude", "no-such-node"])
    assert r.exit_code != 0 and "unknown node or group" in r.output
    assert not (tmp_path / "x").exists()


def test_graph_frontend_onnx_gru_bundle(model, corpus, tmp_path):
    """Without --gru matmul the GRU op stays fp32 (and is recorded so); waveform input still works."""
    from quantize.static_int8 import QuantizationError, quantize_bundle

    protocol, audio = corpus
    src = _bundle(model, tmp_path / "fp32", "graph", "onnx")
    res = quantize_bundle(src, tmp_path / "q", protocol, audio, calib_count=4)
    q = res.manifest["quantization"]
    assert q["onnx_gru_left_fp32"] is True and q["node_counts"]["GRU"] == 1
    assert res.manifest["onnx"]["input"] == "waveform" and res.manifest.get("frontend") is None
    assert Detector(res.bundle).score_windows(np.stack([speechlike(1.1, seed=9)[:WINDOW]])).shape == (1,)
    with pytest.raises(QuantizationError, match="already quantized"):
        quantize_bundle(res.bundle, tmp_path / "qq", protocol, audio, calib_count=2)


def test_speed_recipe_wide_convs_and_int8_gru_weights(model, corpus, tmp_path):
    """--op-types Conv --min-conv-channels N --gru-weights int8 (the shipped sibling's recipe):
    narrow convolutions stay fp32, wide ones get QDQ, the GRU op stays one op reading int8 weights."""
    from click.testing import CliRunner
    from onnx import numpy_helper

    from edge_detector.cli import main

    protocol, audio = corpus
    src = _bundle(model, tmp_path / "fp32", "numpy-fft", "onnx")
    out = tmp_path / "int8"
    r = CliRunner().invoke(main, ["quantize", str(src), "-o", str(out), "--protocol", str(protocol), "--audio-dir",
                                  str(audio), "--calib-count", "6", "--eval-count", "6", "--op-types", "Conv",
                                  "--min-conv-channels", "9", "--gru-weights", "int8", "--sensitivity"])
    assert r.exit_code == 0, r.output
    graph = onnx.load(str(out / "model.onnx")).graph
    prod = _producer(graph)
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    src_graph = onnx.load(str(src / "model.onnx")).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) == sum(n.op_type == "Conv" for n in src_graph.node)

    def in_channels(node) -> int:
        w = node.input[1]
        return int((inits[w] if w in inits else inits[prod[w].input[0]]).shape[1])

    narrow = [n for n in convs if in_channels(n) < 9]
    wide = [n for n in convs if in_channels(n) >= 9]
    assert narrow and wide  # the tiny model has 8-channel stage-1 and 16-channel stage-2 convolutions
    for n in narrow:  # plain fp32: weight an initializer, input not dequantized
        assert n.input[1] in inits and inits[n.input[1]].dtype == np.float32, n.name
        assert n.input[0] not in prod or prod[n.input[0]].op_type != "DequantizeLinear", n.name
    for n in wide:
        assert prod[n.input[0]].op_type == "DequantizeLinear" and prod[n.input[1]].op_type == "DequantizeLinear"
    assert not any(n.op_type == "MatMul" and n.input[1] in prod and prod[n.input[1]].op_type == "DequantizeLinear"
                   for n in graph.node)  # Gemm / MatMul not asked for
    # --- the GRU: one op, W and R read from int8 through per-row DequantizeLinear, close to fp32
    (gru,) = [n for n in graph.node if n.op_type == "GRU"]
    (src_gru,) = [n for n in src_graph.node if n.op_type == "GRU"]
    src_inits = {i.name: numpy_helper.to_array(i) for i in src_graph.initializer}
    for k in (1, 2):
        dq = prod[gru.input[k]]
        assert dq.op_type == "DequantizeLinear"
        q, scale = inits[dq.input[0]], inits[dq.input[1]]
        ref = src_inits[src_gru.input[k]]
        assert q.dtype == np.int8 and q.shape == ref.shape and scale.shape == (ref.shape[1],)
        assert np.abs(q).max() == 127  # each row's largest weight maps to +-127
        err = np.abs(q.astype(np.float32) * scale[None, :, None] - ref)
        assert float((err / scale[None, :, None]).max()) <= 0.5 + 1e-3  # rounding only
    gru_elements = sum(src_inits[src_gru.input[k]].size for k in (1, 2))  # 4 bytes each in fp32, 1 in int8
    weight_bytes = sum(a.nbytes for a in inits.values())
    assert weight_bytes < sum(a.nbytes for a in src_inits.values()) - 2.5 * gru_elements
    # --- manifest and report say what stayed fp32 and why
    q = json.loads((out / "manifest.json").read_text())["quantization"]
    assert q["min_conv_channels"] == 9 and sorted(q["fp32_for_speed_groups"]) == sorted(n.name for n in narrow)
    assert q["gru_weights"]["mode"] == "int8" and q["gru_weights"]["nodes"] == 1 and q["gru_weights"]["weights"] == 2
    assert q["node_counts"]["GRU"] == 1 and q["runtime_kernels"].get("QLinearConv", 0) == len(wide)
    rep = json.loads((out / "sensitivity.json").read_text())
    names = {g["group"] for g in rep["groups"]}
    assert gru.name in names and not names & {n.name for n in narrow}
    assert len(names) == len(wide) + 1 and rep["fp32_for_speed"]["groups"] == q["fp32_for_speed_groups"]
    x = np.stack([speechlike(1.5, seed=5)[:WINDOW], buzzy(1.5, seed=5)[:WINDOW]])
    scores, ref_scores = Detector(out).score_windows(x), Detector(src).score_windows(x)
    assert float(np.abs(scores - ref_scores).max()) < 0.05 and np.ptp(ref_scores) > 0.2
    # --- the GRU group excluded: its weights stay fp32 initializers
    r = CliRunner().invoke(main, ["quantize", str(src), "-o", str(tmp_path / "nogru"), "--protocol", str(protocol),
                                  "--audio-dir", str(audio), "--calib-count", "4", "--op-types", "Conv",
                                  "--gru-weights", "int8", "--exclude", gru.name])
    assert r.exit_code == 0, r.output
    g2 = onnx.load(str(tmp_path / "nogru" / "model.onnx")).graph
    (gru2,) = [n for n in g2.node if n.op_type == "GRU"]
    assert gru2.input[1] in {i.name for i in g2.initializer}
    assert json.loads((tmp_path / "nogru" / "manifest.json").read_text())["quantization"]["gru_weights"]["nodes"] == 0


def test_balanced_order_and_reader():
    from edge_detector.protocol import ProtocolEntry
    from quantize.static_int8 import FeatureReader, balanced_order

    entries = [ProtocolEntry("A", f"b{i}", "-", "bonafide") for i in range(5)]
    entries += [ProtocolEntry("L", f"s{i}", "x", "spoof") for i in range(3)]
    order = balanced_order(entries, seed=1)
    assert [e.label for e in order[:6]] == ["bonafide", "spoof"] * 3
    assert order == balanced_order(entries, seed=1)
    r = FeatureReader("features", np.zeros((5, 2, 3), np.float32), batch_size=2)
    assert len(r) == 3 and [b["features"].shape[0] for b in iter(r.get_next, None)] == [2, 2, 1]
    r.rewind()
    assert r.get_next()["features"].shape == (2, 2, 3)
