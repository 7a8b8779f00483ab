"""`edge-detect export` with AASIST checkpoints, and the unchanged runtime commands on the bundle.

A tiny randomly initialised AASIST (our checkpoint format) always runs; the official
AASIST-L weights from ``../shared/models/aasist`` run when that folder is beside the clone.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from audio_synth import speechlike, write  # noqa: E402
from conftest import set_thresholds  # noqa: E402
from edge_detector.audio import load_audio  # noqa: E402
from edge_detector.bundle import load_bundle, sha256_file  # noqa: E402
from edge_detector.cli import main  # noqa: E402
from edge_detector.detector import Detector  # noqa: E402
from edge_detector.session import SessionSettings  # noqa: E402
from edge_detector.windows import first_window  # noqa: E402
from export.aasist import AASIST, AASISTConfig, save_aasist  # noqa: E402
from test_aasist import SHARED, needs_shared, synth_input  # noqa: E402


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny AASIST (random weights, full 64 600-sample window), saved as our checkpoint, and a speech file."""
    torch.manual_seed(0)
    cfg = AASISTConfig(name="tiny", encoder=[[1, 4], [4, 6]], gat_dims=[6, 5], pool_ratios=[0.5, 0.5, 0.5, 0.5])
    model = AASIST(cfg).eval()
    d = tmp_path_factory.mktemp("aasist")
    save_aasist(model, d / "tiny.pt")
    write(d / "speech.wav", speechlike(4.5, seed=3))
    return model, d


def test_export_detects_aasist_and_the_runtime_scores_it(tiny, tmp_path):
    model, d = tiny
    out = tmp_path / "bundle"
    r = invoke("export", str(d / "tiny.pt"), "-o", str(out), "--frontend", "numpy-fft",
               "--parity-audio", str(d / "speech.wav"), "--parity-seed", "1")
    assert r.exit_code == 0, r.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"]["family"] == "AASIST" and m["model"]["config"]["encoder"] == [[1, 4], [4, 6]]
    assert m["score"]["kind"] == "logit_bonafide"
    # 69 of the 70 bands: the 3x3 pool drops the last one
    assert m["frontend"]["filters"] == 69 and m["frontend"]["keep"] == list(range(69)) and m["frontend"]["total"] == 70
    assert m["parity"]["n_audio"] == 1 and m["parity"]["max_abs_diff_audio"] <= 1e-4
    assert m["source_checkpoint"]["sha256"] == sha256_file(d / "tiny.pt")
    assert "LICENSE" not in m["files"]  # not a published file: no licence to carry

    x = first_window(load_audio(d / "speech.wav").samples, 64600)
    with torch.no_grad():
        want = float(model(torch.from_numpy(x[None]))[0, 1])
    rec = json.loads(invoke("score", str(d / "speech.wav"), "--bundle", str(out)).stdout)
    assert rec["score"] == pytest.approx(want, abs=1e-4)
    assert rec["llr"] == pytest.approx(rec["score"], abs=1e-6)  # uncalibrated: calibrated = logit[1]

    info = invoke("info", str(out))
    assert info.exit_code == 0 and "AASIST" in info.output
    set_thresholds(out, accept=want - 1.0, reject=want - 2.0)
    assert invoke("gate", str(d / "speech.wav"), "--bundle", str(out)).exit_code == 0
    set_thresholds(out, accept=want + 2.0, reject=want + 1.0)
    assert invoke("gate", str(d / "speech.wav"), "--bundle", str(out)).exit_code == 3


def test_export_refuses_gru_option_and_wrong_family(tiny, tmp_path):
    _, d = tiny
    r = invoke("export", str(d / "tiny.pt"), "-o", str(tmp_path / "b"), "--gru", "matmul")
    assert r.exit_code != 0 and "AASIST has no recurrent layer" in r.output
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}, "config": {}}, tmp_path / "other.pt")
    r = invoke("export", str(tmp_path / "other.pt"), "-o", str(tmp_path / "c"), "--family", "aasist")
    assert r.exit_code != 0 and "cannot load as AASIST" in r.output
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_official_aasist_l_bundle_reproduces_the_reference_logit(tmp_path):
    shared = needs_shared()
    out = tmp_path / "aasist-l"
    r = invoke("export", str(shared / "AASIST-L.pth"), "-o", str(out), "--frontend", "numpy-fft", "--parity-seed", "0")
    assert r.exit_code == 0, r.output
    bundle = load_bundle(out)
    m = bundle.manifest
    assert m["model"]["family"] == "AASIST-L" and m["model"]["parameters"] == 85_306
    src = m["source_checkpoint"]
    assert (src["repository"], src["licence"], src["file"]) == ("clovaai/aasist", "MIT", "AASIST-L.pth")
    assert src["sha256"] == "814331d088032bb4c3fa61cc014789eadeed464209dd094ab3a2dd6ffbdce27a"
    assert (out / "LICENSE").read_text() == (SHARED / "LICENSE").read_text() and "LICENSE" in m["files"]
    ref = json.loads((shared / "reference_logits.json").read_text())["models"]["AASIST-L"]["synth:1"]
    det = Detector(out, SessionSettings(intra_op_threads=1))
    got = det.score_windows(synth_input(1)[None])
    assert float(np.asarray(got).reshape(-1)[0]) == pytest.approx(ref[1], abs=1e-4)
