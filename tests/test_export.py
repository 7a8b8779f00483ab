"""Export (export/onnx_export.py and `edge-detect export`): ONNX bundle and its parity gate.

Every model here is the project's tiny RawNet2 exported by the project's own path; every
comparison runs a real onnxruntime session against the PyTorch model.
"""
from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from click.testing import CliRunner  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402

from audio_synth import buzzy, speechlike, write  # noqa: E402
from edge_detector.bundle import load_bundle, sha256_file  # noqa: E402
from edge_detector.cli import main  # noqa: E402
from edge_detector.session import SessionSettings, make_session  # noqa: E402
from edge_detector.sincbank import sinc_filters  # noqa: E402
from edge_detector.windows import first_window  # noqa: E402
from export.fold import FoldedRawNet2  # noqa: E402
from export.onnx_export import (  # noqa: E402
    PARITY_TOLERANCE,
    ParityError,
    build_bundle,
    check_gru_semantics,
)
from export.scoring import score_windows  # noqa: E402

W = 64600


def audio_windows(n: int = 3, seed: int = 20) -> np.ndarray:
    rows = []
    for i in range(n):
        x = speechlike(2.5 + i, seed=seed + i, f0=90 + 40 * i) if i % 2 == 0 else buzzy(3.0, seed=seed + i)
        rows.append(first_window(x))
    return np.stack(rows)


def random_windows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, W)) * rng.uniform(0.01, 0.5, (n, 1))).astype(np.float32)


def run(sess, batch: np.ndarray) -> np.ndarray:
    return sess.run(["score"], {"waveform": np.ascontiguousarray(batch, dtype=np.float32)})[0]


# --------------------------------------------------------------------------- build_bundle


def test_build_bundle_writes_a_verified_bundle_with_parity_report(tiny_bundle_master, tiny_model, tiny_checkpoint):
    bundle = load_bundle(tiny_bundle_master)
    m = bundle.manifest
    assert sorted(p.name for p in tiny_bundle_master.iterdir()) == ["manifest.json", "model.onnx"]
    assert set(m["files"]) == {"model.onnx"}
    assert m["files"]["model.onnx"]["sha256"] == sha256_file(tiny_bundle_master / "model.onnx")
    parity = m["parity"]
    assert parity["tolerance"] == PARITY_TOLERANCE == 1e-4
    assert parity["n_random"] == 4 and parity["n_audio"] == 2
    assert 0.0 <= parity["max_abs_diff_random"] <= 1e-4
    assert 0.0 <= parity["max_abs_diff_audio"] <= 1e-4
    assert parity["graph_optimization_level"] == m["onnx"]["graph_optimization_level"] == "all"
    assert m["model"]["config"] == tiny_model.config.to_dict()
    assert m["model"]["parameters"] == sum(p.numel() for p in tiny_model.parameters())
    assert m["source_checkpoint"]["sha256"] == sha256_file(tiny_checkpoint)
    assert m["source_checkpoint"]["file"] == tiny_checkpoint.name
    assert m["windows"] == {"window": W, "hop": W // 2, "mode": "first", "combine": "mean", "pad": "repeat"}
    assert m["score"]["orientation"] == "higher_is_bonafide"
    assert "dynamo=False" in m["exporter"]["exporter"]


def test_graph_is_folded_and_fused(tiny_bundle_master):
    model = onnx.load(str(tiny_bundle_master / "model.onnx"))
    ops = collections.Counter(n.op_type for n in model.graph.node)
    # only first_bn and bn_before_gru remain: each block's bn2 is folded into conv1
    assert ops["BatchNormalization"] == 2
    # 6 attention Linears + ONE head Linear (fc1_gru and fc2_gru fused into hidden -> 1)
    assert ops["Gemm"] + ops["MatMul"] == 7
    assert ops["GRU"] == 1
    # the fixed sinc bank is a constant of the graph, equal to the numpy bank
    consts = [numpy_helper.to_array(t) for t in model.graph.initializer]
    consts += [numpy_helper.to_array(a.t) for n in model.graph.node if n.op_type == "Constant"
               for a in n.attribute if a.name == "value"]
    bank = sinc_filters(8, 1024, 16000)
    assert any(c.shape == (8, 1, 1025) and np.array_equal(c[:, 0, :], bank) for c in consts)


def test_onnx_metadata_props_carry_the_manifest(tiny_bundle_master):
    model = onnx.load(str(tiny_bundle_master / "model.onnx"))
    manifest = json.loads((tiny_bundle_master / "manifest.json").read_text())
    props = {p.key: p.value for p in model.metadata_props}
    assert model.producer_name == "edge-detector"
    for key in ("format", "format_version", "model_id", "model", "audio", "windows", "score", "calibration",
                "thresholds", "source_checkpoint", "quantization", "parity"):
        assert json.loads(props[f"edge_detector.{key}"]) == manifest[key], key
    # onnxruntime sees them too (what a device could read without the manifest)
    sess = make_session(tiny_bundle_master / "model.onnx")
    custom = sess.get_modelmeta().custom_metadata_map
    assert json.loads(custom["edge_detector.model_id"]) == manifest["model_id"]


def test_dynamic_batch_axis(tiny_bundle_master):
    sess = make_session(tiny_bundle_master / "model.onnx", SessionSettings(intra_op_threads=1))
    shape = sess.get_inputs()[0].shape
    assert isinstance(shape[0], str) and shape[1] == W
    x = random_windows(5, seed=1)
    one = run(sess, x[:1])
    five = run(sess, x)
    assert one.shape == (1,) and five.shape == (5,)
    np.testing.assert_allclose(five[:1], one, atol=1e-5)
    singles = np.concatenate([run(sess, x[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(five, singles, atol=1e-5)


@pytest.fixture(scope="module", params=[11, 12])
def reference_scores(tiny_model, request):
    """Seeded inputs (random and synthetic audio, not those of the export's own gate) and the PyTorch scores."""
    seed = request.param
    batch = np.concatenate([random_windows(2, seed=seed), audio_windows(2, seed=100 + seed)])
    return seed, batch, score_windows(tiny_model, batch)


@pytest.mark.parametrize("level", ["all", "disabled"])
def test_fresh_parity_with_pytorch(tiny_bundle_master, reference_scores, level):
    seed, batch, ref = reference_scores
    sess = make_session(tiny_bundle_master / "model.onnx",
                        SessionSettings(intra_op_threads=1, graph_optimization_level=level))
    got = run(sess, batch)
    diff = np.abs(ref - got)
    assert diff[:2].max() <= 1e-4, (seed, diff)  # random windows
    assert diff[2:].max() <= 1e-4, (seed, diff)  # synthetic audio windows
    assert np.ptp(ref[2:]) > 0.3  # the model is not constant: parity is not trivially met


# --------------------------------------------------------------------------- the parity gate


def _perturbed(model, delta: float = 1e-3) -> FoldedRawNet2:
    folded = FoldedRawNet2(model)
    with torch.no_grad():
        folded.head.bias.add_(delta)  # slightly different from the reference
    return folded


def test_parity_gate_fails_on_a_different_graph(tiny_model, tiny_bundle, tmp_path):
    out = tmp_path / "bad_bundle"
    with pytest.raises(ParityError, match="parity gate failed"):
        build_bundle(tiny_model, out, audio_windows=audio_windows(1), n_random=1,
                     export_module=_perturbed(tiny_model), parity_seed=0)
    assert not out.exists()
    # a failed overwrite keeps the old bundle, and no temporary folder is left behind
    before = sha256_file(tiny_bundle / "model.onnx")
    with pytest.raises(ParityError):
        build_bundle(tiny_model, tiny_bundle, n_random=1, export_module=_perturbed(tiny_model, 1e-2), overwrite=True,
                     parity_seed=1)
    assert sha256_file(tiny_bundle / "model.onnx") == before
    load_bundle(tiny_bundle)
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_gru_with_linear_before_reset_0_is_rejected(tiny_bundle_master, tmp_path):
    src = tiny_bundle_master / "model.onnx"
    check_gru_semantics(src)  # ours passes
    model = onnx.load(str(src))
    grus = [n for n in model.graph.node if n.op_type == "GRU"]
    assert len(grus) == 1
    node = grus[0]
    kept = [a for a in node.attribute if a.name != "linear_before_reset"]
    assert len(kept) == len(node.attribute) - 1
    del node.attribute[:]
    node.attribute.extend(kept + [helper.make_attribute("linear_before_reset", 0)])
    bad = tmp_path / "dynamo_like.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(ParityError, match="linear_before_reset"):
        check_gru_semantics(bad)
    # the attribute matters: the edited graph computes another function
    x = audio_windows(2, seed=80)
    good_scores = run(make_session(src), x)
    bad_scores = run(make_session(bad), x)
    assert np.max(np.abs(good_scores - bad_scores)) > 1e-4
    # and an absent attribute (ONNX default 0) is rejected too
    del node.attribute[:]
    node.attribute.extend(kept)
    onnx.save(model, str(bad))
    with pytest.raises(ParityError):
        check_gru_semantics(bad)


# --------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def parity_audio_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("parity_audio")
    write(d / "a.wav", speechlike(3.0, seed=90))
    write(d / "b.flac", buzzy(2.0, seed=91))
    write(d / "c.wav", speechlike(5.0, sr=44100, seed=92), sr=44100)
    (d / "0bad.wav").write_bytes(b"not audio at all")  # sorted first: decoded and skipped
    return d


def test_cli_export_writes_a_bundle(tiny_checkpoint, parity_audio_dir, tmp_path):
    out = tmp_path / "not" / "yet" / "there"  # parent folders are created
    result = CliRunner().invoke(main, ["export", str(tiny_checkpoint), "-o", str(out), "--parity-audio",
                                       str(parity_audio_dir), "--parity-count", "2", "--windows", "all",
                                       "--combine", "min", "--hop", "16000"])
    assert result.exit_code == 0, result.output
    m = load_bundle(out).manifest
    assert m["parity"]["n_audio"] == 2  # --parity-count decodable files; bad.wav skipped with a message
    assert m["parity"]["max_abs_diff_audio"] <= 1e-4
    assert m["windows"]["mode"] == "all" and m["windows"]["combine"] == "min" and m["windows"]["hop"] == 16000
    assert m["source_checkpoint"]["sha256"] == sha256_file(tiny_checkpoint)
    assert "0bad.wav" in result.stderr and "wrote" in result.stderr
    # exporting over it without --overwrite is refused and leaves it alone
    again = CliRunner().invoke(main, ["export", str(tiny_checkpoint), "-o", str(out)])
    assert again.exit_code != 0 and "already exists" in again.stderr
    load_bundle(out)


def test_cli_parity_failure_exits_non_zero_and_leaves_nothing(tiny_checkpoint, tmp_path):
    """A tolerance no float32 graph can meet (BN folding alone moves scores by ~1e-7).

    The gate's random windows are seeded: an unlucky fresh draw can give max |Δ| exactly 0.
    """
    out = tmp_path / "strict"
    result = CliRunner().invoke(main, ["export", str(tiny_checkpoint), "-o", str(out), "--tolerance", "1e-12",
                                       "--parity-seed", "3"])
    assert result.exit_code != 0
    assert "parity gate failed" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2 and "Traceback" not in result.output
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_written_out_selu_equals_selu_everywhere():
    """The stage-1 SELU is exported as Relu + Exp (faster in onnxruntime): same function,
    including large inputs (exp only ever sees min(x, 0)) and exactly zero."""
    import torch.nn.functional as F

    from export.fold import selu_vectorised

    x = torch.cat([torch.linspace(-30, 30, 20001), torch.tensor([0.0, -0.0, 1e-30, -1e-30, 88.0, 1e4, -1e4])])
    got, want = selu_vectorised(x), F.selu(x)
    assert torch.isfinite(got).all()
    assert torch.allclose(got, want, rtol=2e-7, atol=3e-7)
