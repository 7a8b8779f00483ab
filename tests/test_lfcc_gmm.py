"""LFCC-GMM as a model family: `train --model lfcc-gmm` on generated audio, then the bundle through the CLI.

A 16-file corpus (two sources x 4 speech-like bona fide + 4 spoof files: other speech-like
signals through a strong pre-emphasis, a stand-in for a synthetic channel that still passes
the runtime's speech check), 4 GMM components, seeded. The bundle must score, gate, calibrate and describe itself like any
other; its LLR must equal scikit-learn's on the same features and parameters.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from audio_synth import speechlike, write
from edge_detector.bundle import load_bundle
from edge_detector.cli import main
from edge_detector.detector import Detector
from edge_detector.errors import BundleError, ExitCode
from edge_detector.gmm import DiagonalGMM, LFCCGMMScorer, load_gmm_pair, logsumexp
from edge_detector.lfcc import LFCCFrontEnd, LFCCSpec
from edge_detector.windows import first_window

sklearn_mixture = pytest.importorskip("sklearn.mixture")
scipy_special = pytest.importorskip("scipy.special")


def tilted(x: np.ndarray) -> np.ndarray:
    """``x[n] - 0.97 x[n-1]``, peak-normalised to 0.3: same rhythm and voicing, another spectral tilt."""
    y = np.append(x[0], x[1:] - 0.97 * x[:-1])
    return (0.3 * y / np.max(np.abs(y))).astype(np.float32)


def make_corpus(root: Path) -> tuple[Path, Path]:
    audio = root / "audio"
    audio.mkdir(parents=True)
    lines, n = [], 0
    for src in ("SRCA", "SRCB"):
        for k in range(4):
            n += 1
            write(audio / f"{src}_B{k}.wav", speechlike(2.0 + 0.5 * k, seed=n, f0=100 + 25 * k))
            lines.append(f"{src}_spk{k} {src}_B{k} - - bonafide")
            write(audio / f"{src}_S{k}.flac", tilted(speechlike(2.0 + 0.5 * k, seed=100 + n, f0=110 + 20 * k)))
            lines.append(f"{src}_spk{k} {src}_S{k} - tts{k} spoof")
    protocol = root / "protocol.txt"
    protocol.write_text("\n".join(lines) + "\n")
    return protocol, audio


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("lfccgmm")
    protocol, audio = make_corpus(root)
    out = root / "run"
    args = ["train", "--model", "lfcc-gmm", "--protocol", str(protocol), "--audio-dir", str(audio), "--out", str(out),
            "--holdout-sources", "SRCB", "--val-fraction", "0.5", "--gmm-components", "4", "--gmm-iter", "5",
            "--seed", "3"]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return protocol, audio, out


def test_train_writes_a_report_and_a_verified_bundle(trained):
    protocol, audio, out = trained
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == "lfcc-gmm" and report["gmm"]["components"] == 4 and report["gmm"]["seed"] == 3
    assert report["train_files"] == 4 and report["val_files"] == 4 and report["heldout"]["files"] == 8
    assert report["heldout"]["sources"] == ["SRCB"]
    # plain vs pre-emphasised speech-like signals is an easy toy task: both sets fully separated
    assert report["val"]["eer"] == 0.0 and report["heldout"]["eer"] == 0.0
    b = load_bundle(out / "bundle")
    m = b.manifest
    assert m["model"]["family"] == "LFCC-GMM" and m["frontend"]["type"] == "lfcc-numpy"
    assert m["gmm"] == {**m["gmm"], "file": "gmm.npz", "components": 4, "dims": 60}
    assert "onnx" not in m and b.model_path == out / "bundle" / "gmm.npz"
    assert len(b.model_sha256) == 64 and m["model_id"].startswith("lfcc-gmm-c4-")


def test_same_seed_gives_the_same_gmms(trained, tmp_path):
    protocol, audio, out = trained
    args = ["train", "--model", "lfcc-gmm", "--protocol", str(protocol), "--audio-dir", str(audio),
            "--out", str(tmp_path / "again"), "--holdout-sources", "SRCB", "--val-fraction", "0.5",
            "--gmm-components", "4", "--gmm-iter", "5", "--seed", "3"]
    assert CliRunner().invoke(main, args, catch_exceptions=False).exit_code == 0
    a, b = load_gmm_pair(out / "bundle" / "gmm.npz"), load_gmm_pair(tmp_path / "again" / "bundle" / "gmm.npz")
    for cls in ("bonafide", "spoof"):
        np.testing.assert_array_equal(a[cls].means, b[cls].means)
    # and the command refuses to overwrite an existing bundle
    res = CliRunner().invoke(main, args)
    assert res.exit_code != 0 and "already exists" in res.output


def _sklearn_gmm(g: DiagonalGMM):
    gm = sklearn_mixture.GaussianMixture(n_components=g.components, covariance_type="diag")
    gm.weights_, gm.means_, gm.covariances_ = g.weights, g.means, g.variances
    gm.precisions_cholesky_ = 1.0 / np.sqrt(g.variances)
    return gm


def test_llr_equals_scikit_learn_on_the_same_parameters(trained):
    _, audio, out = trained
    b = load_bundle(out / "bundle")
    gmms = load_gmm_pair(b.model_path)
    x = speechlike(3.0, seed=77)
    feats = LFCCFrontEnd(LFCCSpec())(first_window(x, 64600))
    want = np.mean(_sklearn_gmm(gmms["bonafide"]).score_samples(feats) - _sklearn_gmm(gmms["spoof"]).score_samples(feats))
    got = Detector(b).score_windows(first_window(x, 64600)[None, :])[0]
    assert got == pytest.approx(want, rel=1e-6, abs=1e-5)
    assert Detector(b).provider == "numpy"


def test_log_sum_exp_is_stable_far_from_every_component():
    rng = np.random.default_rng(0)
    g = DiagonalGMM(np.full(3, 1 / 3), rng.normal(size=(3, 5)), np.full((3, 5), 1e-3))
    far = np.full((2, 5), 50.0)  # every component's density underflows to 0 in float64
    wlp = g.weighted_log_prob(far)
    assert np.all(np.exp(wlp) == 0.0)
    np.testing.assert_allclose(g.log_likelihood(far), scipy_special.logsumexp(wlp, axis=1), rtol=1e-12)
    assert np.all(np.isfinite(g.log_likelihood(far)))
    assert logsumexp(np.array([[-np.inf, -np.inf]]), axis=1)[0] == -np.inf


def test_score_gate_calibrate_info_through_the_cli(trained, tmp_path):
    protocol, audio, out = trained
    runner = CliRunner()
    bundle = str(out / "bundle")
    res = runner.invoke(main, ["score", "--bundle", bundle, str(audio / "SRCB_B1.wav"), str(audio / "SRCB_S1.flac")])
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in res.stdout.strip().splitlines()]
    assert recs[0]["provider"] == "numpy" and recs[0]["model_id"].startswith("lfcc-gmm-c4-")
    assert recs[0]["score"] > 0 > recs[1]["score"]  # uncalibrated: calibrated = LLR, thresholds at 0
    assert runner.invoke(main, ["gate", "--bundle", bundle, str(audio / "SRCB_B2.wav")]).exit_code == ExitCode.ACCEPT
    assert runner.invoke(main, ["gate", "--bundle", bundle, str(audio / "SRCB_S2.flac")]).exit_code == ExitCode.REJECT
    cal = tmp_path / "calibrated"
    res = runner.invoke(main, ["calibrate", bundle, "--protocol", str(protocol), "--audio-dir", str(audio),
                               "--out", str(cal)])
    assert res.exit_code == 0, res.output
    m = load_bundle(cal).manifest
    assert m["calibration"]["method"].startswith("logistic") and m["evaluation"]["files"] == 16
    res = runner.invoke(main, ["info", str(cal)])
    assert res.exit_code == 0 and "LFCC-GMM" in res.output and "2 diagonal GMMs x 4 components" in res.output


def test_a_changed_gmm_file_is_refused_with_exit_7(trained, tmp_path):
    import shutil

    _, audio, out = trained
    bad = tmp_path / "bad"
    shutil.copytree(out / "bundle", bad)
    data = bytearray((bad / "gmm.npz").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bad / "gmm.npz").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        Detector(bad)
    res = CliRunner().invoke(main, ["gate", "--bundle", str(bad), str(audio / "SRCA_B0.wav")])
    assert res.exit_code == ExitCode.BAD_BUNDLE
    assert CliRunner().invoke(main, ["info", str(bad)]).exit_code == ExitCode.BAD_BUNDLE


def test_a_gmm_that_does_not_fit_the_front_end_is_refused(trained, tmp_path):
    import shutil

    _, _, out = trained
    bad = tmp_path / "dims"
    shutil.copytree(out / "bundle", bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["frontend"]["cepstra"] = 19
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="gmm.dims 60 differs"):
        load_bundle(bad)


def test_scoring_an_lfcc_gmm_bundle_loads_no_torch_scipy_or_sklearn(trained, tmp_path):
    from test_runtime_imports import RUN_CLI, probe

    _, audio, out = trained
    args = ["score", str(audio / "SRCA_B1.wav"), "--bundle", str(out / "bundle")]
    body = RUN_CLI.format(args=args) + "\nassert not any(m == 'sklearn' or m.startswith('sklearn.') for m in sys.modules)\n"
    result, p = probe(body, tmp_path)
    assert result["heavy"] == [] and result["code"] == 0, p.stderr
    assert json.loads(p.stdout.splitlines()[0])["provider"] == "numpy"


def test_blas_thread_limit_applies_only_while_scoring():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from edge_detector.gmm import BlasThreads

    before = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    with BlasThreads(1):
        inside = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    after = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    assert inside == [1] * len(before) and after == before


def test_listen_once_decides_with_an_lfcc_gmm_bundle(trained, monkeypatch):
    import sys

    from fake_pyaudio import FakeDevice, FakeModule

    _, _, out = trained
    x = np.concatenate([np.zeros(4800), speechlike(4.5, seed=5), np.zeros(32000)])
    fake = FakeModule([FakeDevice("fake mic", default_rate=16000, rates=(16000,))],
                      autoplay=np.round(x * 32767).astype("<i2"))
    monkeypatch.setitem(sys.modules, "pyaudio", fake.as_module())
    res = CliRunner().invoke(main, ["listen", "--bundle", str(out / "bundle"), "--once"])
    recs = [json.loads(line) for line in res.stdout.strip().splitlines()]
    assert recs and recs[-1]["model_id"].startswith("lfcc-gmm-c4-") and recs[-1]["provider"] == "numpy"
    want = {"accept": ExitCode.ACCEPT, "reject": ExitCode.REJECT, "uncertain": ExitCode.UNCERTAIN}
    assert res.exit_code == want[recs[-1]["decision"]] == ExitCode.ACCEPT  # speech-like: the bona fide side
