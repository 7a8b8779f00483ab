"""Calibration (edge_detector/calibration.py) and `edge-detect calibrate`."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from audio_synth import buzzy, speechlike, write
from edge_detector.bundle import load_bundle, sha256_file
from edge_detector.calibration import choose_thresholds, far_threshold, fit_logistic_calibration, frr_threshold
from edge_detector.cli import main
from edge_detector.detector import Detector
from edge_detector.metrics import compute_eer
from edge_detector.session import SessionSettings


def gaussian_llr(mu1: float, mu0: float, sd: float) -> tuple[float, float]:
    """Exact LLR of N(mu1, sd) vs N(mu0, sd): a*x + b."""
    a = (mu1 - mu0) / sd**2
    b = -(mu1**2 - mu0**2) / (2 * sd**2)
    return a, b


@pytest.mark.parametrize("mu1,mu0,sd,n_bona,n_spoof", [(2.0, -1.0, 1.5, 20000, 20000), (-0.5, -4.0, 1.0, 5000, 30000)])
def test_fit_recovers_a_known_affine_map(mu1, mu0, sd, n_bona, n_spoof):
    rng = np.random.default_rng(0)
    bona = rng.normal(mu1, sd, n_bona)
    spoof = rng.normal(mu0, sd, n_spoof)
    a, b = gaussian_llr(mu1, mu0, sd)
    cal = fit_logistic_calibration(bona, spoof)
    assert cal.scale == pytest.approx(a, rel=0.05)
    assert cal.offset == pytest.approx(b, abs=0.05 * max(1.0, abs(b)))
    x = np.linspace(min(mu0, mu1) - sd, max(mu0, mu1) + sd, 9)
    np.testing.assert_allclose(cal.apply(x), a * x + b, atol=0.1)


def test_unequal_class_sizes_do_not_shift_the_llr():
    """Prior weighting: 10x more spoofs must not move the fitted LLR (it is not a posterior)."""
    rng = np.random.default_rng(1)
    bona = rng.normal(1.0, 1.0, 3000)
    few = fit_logistic_calibration(bona, rng.normal(-1.0, 1.0, 3000))
    many = fit_logistic_calibration(bona, rng.normal(-1.0, 1.0, 30000))
    assert many.offset == pytest.approx(few.offset, abs=0.1)
    assert many.scale == pytest.approx(few.scale, rel=0.1)


def test_perfectly_separated_scores_stay_finite():
    bona = np.array([1.0, 2.0, 3.0, 4.0])
    spoof = np.array([-4.0, -3.0, -2.0, -1.0])
    cal = fit_logistic_calibration(bona, spoof)
    assert np.isfinite(cal.scale) and np.isfinite(cal.offset)
    assert cal.scale > 0
    llr = cal.apply(np.concatenate([bona, spoof]))
    assert np.all(np.isfinite(llr))
    assert np.all(cal.apply(bona) > 0) and np.all(cal.apply(spoof) < 0)
    # constant scores (sd 0) do not divide by zero either
    flat = fit_logistic_calibration(np.ones(5), np.ones(5))
    assert np.isfinite(flat.scale) and np.isfinite(flat.offset)


def test_fit_needs_both_classes():
    with pytest.raises(ValueError):
        fit_logistic_calibration(np.array([]), np.array([1.0]))


@pytest.mark.parametrize("target_far,target_frr", [(0.01, 0.05), (0.1, 0.1), (0.0, 0.0), (0.05, 0.2)])
def test_choose_thresholds_meets_its_targets(target_far, target_frr):
    rng = np.random.default_rng(2)
    bona = rng.normal(1.0, 1.0, 997)
    spoof = rng.normal(-1.0, 1.0, 1003)
    th = choose_thresholds(bona, spoof, target_far=target_far, target_frr=target_frr)
    far = float(np.mean(spoof >= th["accept"]))
    frr = float(np.mean(bona < th["reject"]))
    assert far <= target_far and frr <= target_frr
    assert far == th["far_at_accept"] and frr == th["frr_at_reject"]
    assert th["reject"] <= th["eer_threshold"] <= th["accept"]
    # tight: a slightly lower accept threshold (or higher reject) would break the target
    if th["accept"] > th["eer_threshold"]:
        lower = np.max(spoof[spoof < th["accept"]])
        assert np.mean(spoof >= lower) > target_far
    if th["reject"] < th["eer_threshold"]:
        higher = np.min(bona[bona > th["reject"]])
        assert np.mean(bona < higher) > target_frr
    assert 0.1 < th["eer"] < 0.2  # two unit Gaussians 2 apart: EER about 0.16


def test_far_and_frr_threshold_helpers():
    spoof = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    t = far_threshold(spoof, 0.2)
    assert np.mean(spoof >= t) == pytest.approx(0.2) and 7.0 < t <= 7.0 + 1e-9  # just above the 3rd highest
    bona = spoof.copy()
    t = frr_threshold(bona, 0.3)
    assert np.mean(bona < t) == pytest.approx(0.3) and t == 3.0


# --------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    d = tmp_path_factory.mktemp("calib")
    audio = d / "audio"
    audio.mkdir()
    lines = []
    for i in range(4):
        write(audio / f"B{i}.wav", speechlike(2.0 + 0.3 * i, seed=200 + i, f0=100 + 25 * i))
        lines.append(f"SYN_b{i} B{i} - - bonafide")
        write(audio / f"S{i}.flac", buzzy(2.0 + 0.3 * i, seed=300 + i))
        lines.append(f"SYN_s{i} S{i} - tts spoof")
    (audio / "BAD.wav").write_bytes(b"RIFF....garbage")
    lines.append("SYN_x BAD - tts spoof")
    protocol = d / "protocol.txt"
    protocol.write_text("\n".join(lines) + "\n")
    return protocol, audio


def test_calibrate_resigns_the_manifest(tiny_bundle, labelled):
    protocol, audio = labelled
    before = json.loads((tiny_bundle / "manifest.json").read_text())
    model_sha = sha256_file(tiny_bundle / "model.onnx")
    # the raw scores the device gives, to recompute the fit independently
    det = Detector(tiny_bundle, SessionSettings(intra_op_threads=1), require_speech=False)  # as calibrate does
    bona = [det.score_file(audio / f"B{i}.wav").score for i in range(4)]
    spoof = [det.score_file(audio / f"S{i}.flac").score for i in range(4)]

    r = CliRunner().invoke(main, ["calibrate", str(tiny_bundle), "--protocol", str(protocol), "--audio-dir",
                                  str(audio), "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "skipping BAD" in r.stderr

    b = load_bundle(tiny_bundle)  # re-signed: still verifies
    m = b.manifest
    assert sha256_file(tiny_bundle / "model.onnx") == model_sha == b.model_sha256
    assert m["calibration"]["method"].startswith("logistic")
    assert m["calibration"]["fitted_on"] == {"protocol": "protocol.txt", "bonafide": 4, "spoof": 4}
    expected = fit_logistic_calibration(np.array(bona), np.array(spoof))
    assert m["calibration"]["scale"] == pytest.approx(expected.scale, rel=1e-6)
    assert m["calibration"]["offset"] == pytest.approx(expected.offset, rel=1e-6, abs=1e-9)
    assert (m["calibration"]["scale"], m["calibration"]["offset"]) != (before["calibration"]["scale"],
                                                                       before["calibration"]["offset"])
    assert m["thresholds"] != before["thresholds"]
    assert m["thresholds"]["reject"] <= m["thresholds"]["accept"]
    assert before["evaluation"] is None
    assert m["evaluation"]["files"] == 8
    # EER does not change under an increasing affine map: the raw scores' EER; here the classes separate
    assert m["evaluation"]["eer"] == compute_eer(np.array(bona), np.array(spoof))[0] == 0.0
    # the detector now reports llr = scale * score + offset and decides on it
    res = Detector(tiny_bundle, SessionSettings(intra_op_threads=1)).score_file(audio / "B0.wav")
    assert res.score == pytest.approx(bona[0], abs=1e-6)
    assert res.calibrated == pytest.approx(expected.scale * bona[0] + expected.offset, rel=1e-5, abs=1e-6)


def test_calibrate_to_a_copy_leaves_the_source(tiny_bundle, labelled, tmp_path):
    protocol, audio = labelled
    before = (tiny_bundle / "manifest.json").read_bytes()
    out = tmp_path / "calibrated"
    r = CliRunner().invoke(main, ["calibrate", str(tiny_bundle), "--protocol", str(protocol), "--audio-dir",
                                  str(audio), "-o", str(out), "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert (tiny_bundle / "manifest.json").read_bytes() == before
    assert load_bundle(out).manifest["calibration"]["method"].startswith("logistic")
    again = CliRunner().invoke(main, ["calibrate", str(tiny_bundle), "--protocol", str(protocol), "--audio-dir",
                                      str(audio), "-o", str(out)])
    assert again.exit_code != 0 and "already exists" in again.stderr
