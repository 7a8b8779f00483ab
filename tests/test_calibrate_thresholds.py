"""Which thresholds `calibrate` writes: the right target on the right side, on calibrated scores.

Expected thresholds are computed here by brute force over every candidate threshold,
and the raw scores the fit should see come from the PyTorch model (not the Detector), so
a command that swaps the FAR/FRR targets, puts thresholds on raw scores, drops the
clamp at the EER point or the "both classes" check fails these tests.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from audio_synth import buzzy, speechlike, write
from edge_detector.calibration import choose_thresholds, fit_logistic_calibration
from edge_detector.cli import main
from edge_detector.metrics import compute_eer

W = 64600


def brute_accept(spoof: np.ndarray, target_far: float) -> float:
    """Lowest threshold t with mean(spoof >= t) <= target_far, searched over every useful candidate."""
    cands = np.concatenate([spoof, np.nextafter(spoof, np.inf)])
    ok = [t for t in cands if np.mean(spoof >= t) <= target_far]
    return float(min(ok))


def brute_reject(bona: np.ndarray, target_frr: float) -> float:
    """Highest threshold t with mean(bona < t) <= target_frr (t is one of the scores)."""
    ok = [t for t in bona if np.mean(bona < t) <= target_frr]
    return float(max(ok))


@pytest.mark.parametrize("target_far,target_frr", [(0.02, 0.30), (0.30, 0.02), (0.45, 0.45), (0.0, 0.0)])
def test_thresholds_match_brute_force_and_clamp_at_the_eer_point(target_far, target_frr):
    rng = np.random.default_rng(7)
    bona = rng.normal(1.0, 1.0, 301)
    spoof = rng.normal(-1.0, 1.0, 299)
    _, t_eer = compute_eer(bona, spoof)
    th = choose_thresholds(bona, spoof, target_far=target_far, target_frr=target_frr)
    want_accept = max(t_eer, brute_accept(spoof, target_far))
    want_reject = min(t_eer, brute_reject(bona, target_frr))
    assert th["accept"] == want_accept and th["reject"] == want_reject
    assert th["eer_threshold"] == t_eer
    # the rates reported are those of these thresholds under the decision rule (>= accept, < reject)
    assert th["far_at_accept"] == np.mean(spoof >= want_accept) and th["frr_at_reject"] == np.mean(bona < want_reject)
    assert th["uncertain_bonafide"] == np.mean((bona >= want_reject) & (bona < want_accept))
    assert th["uncertain_spoof"] == np.mean((spoof >= want_reject) & (spoof < want_accept))
    assert (th["target_far"], th["target_frr"]) == (target_far, target_frr)


def test_default_targets_are_1_and_5_percent():
    rng = np.random.default_rng(11)
    th = choose_thresholds(rng.normal(1.0, 1.0, 200), rng.normal(-1.0, 1.0, 200))
    assert (th["target_far"], th["target_frr"]) == (0.01, 0.05)


def test_loose_targets_are_clamped_to_the_eer_threshold():
    """FAR/FRR targets looser than the EER would cross the thresholds; both stop at the EER point."""
    rng = np.random.default_rng(8)
    bona, spoof = rng.normal(1.0, 1.0, 400), rng.normal(-1.0, 1.0, 400)
    _, t_eer = compute_eer(bona, spoof)
    assert brute_accept(spoof, 0.45) < t_eer < brute_reject(bona, 0.45)  # the clamp is needed here
    th = choose_thresholds(bona, spoof, target_far=0.45, target_frr=0.45)
    assert th["accept"] == t_eer == th["reject"]
    assert th["uncertain_bonafide"] == 0.0 and th["uncertain_spoof"] == 0.0


def test_asymmetric_targets_land_on_their_own_side():
    rng = np.random.default_rng(9)
    bona, spoof = rng.normal(1.0, 1.0, 500), rng.normal(-1.0, 1.0, 500)
    strict_far = choose_thresholds(bona, spoof, target_far=0.01, target_frr=0.3)
    strict_frr = choose_thresholds(bona, spoof, target_far=0.3, target_frr=0.01)
    assert strict_far["far_at_accept"] <= 0.01 and strict_far["accept"] > strict_frr["accept"] + 0.5
    assert strict_frr["frr_at_reject"] <= 0.01 and strict_frr["reject"] < strict_far["reject"] - 0.5


# --------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def overlapping(tmp_path_factory):
    """Six files per class; one of each class sounds like the other, so the classes overlap."""
    d = tmp_path_factory.mktemp("calib_overlap")
    audio = d / "audio"
    audio.mkdir()
    lines, labels = [], {}
    for i in range(6):
        bona = speechlike(2.0 + 0.2 * i, seed=400 + i, f0=95 + 20 * i) if i else buzzy(2.2, seed=450)
        spoof = buzzy(2.0 + 0.2 * i, seed=500 + i) if i else speechlike(2.3, seed=550, f0=150)
        write(audio / f"B{i}.wav", bona)
        write(audio / f"S{i}.wav", spoof)
        lines += [f"SYN B{i} - - bonafide", f"SYN S{i} - tts spoof"]
        labels[f"B{i}"], labels[f"S{i}"] = 1, 0
    (d / "protocol.txt").write_text("\n".join(lines) + "\n")
    return d / "protocol.txt", audio, labels


def torch_raw_scores(model, audio, names) -> np.ndarray:
    """The first-window score of each file from the PyTorch model (an independent reference)."""
    from export.scoring import score_windows

    rows = []
    for name in names:
        x, sr = sf.read(str(audio / f"{name}.wav"), dtype="float32")
        assert sr == 16000
        rows.append(np.tile(x, W // len(x) + 1)[:W])
    return score_windows(model, np.stack(rows))


def test_calibrate_writes_the_targets_it_was_given(tiny_model, tiny_bundle, overlapping):
    protocol, audio, labels = overlapping
    names = sorted(labels)
    raw = torch_raw_scores(tiny_model, audio, names).astype(np.float64)
    y = np.array([labels[n] for n in names])
    assert raw[y == 1].min() < raw[y == 0].max()  # the classes overlap: targets matter
    r = CliRunner().invoke(main, ["calibrate", str(tiny_bundle), "--protocol", str(protocol), "--audio-dir",
                                  str(audio), "--target-far", "0.0", "--target-frr", "0.34", "--threads", "1"])
    assert r.exit_code == 0, r.output
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    cal = fit_logistic_calibration(raw[y == 1], raw[y == 0])
    assert m["calibration"]["scale"] == pytest.approx(cal.scale, rel=1e-3)
    assert m["calibration"]["offset"] == pytest.approx(cal.offset, rel=1e-3, abs=1e-3)
    llr = cal.apply(raw)
    _, t_eer = compute_eer(llr[y == 1], llr[y == 0])
    want_accept = max(t_eer, brute_accept(llr[y == 0], 0.0))
    want_reject = min(t_eer, brute_reject(llr[y == 1], 0.34))
    assert m["thresholds"]["accept"] == pytest.approx(want_accept, abs=1e-3)
    assert m["thresholds"]["reject"] == pytest.approx(want_reject, abs=1e-3)
    assert (m["thresholds"]["target_far"], m["thresholds"]["target_frr"]) == (0.0, 0.34)
    assert m["thresholds"]["far_at_accept"] == 0.0  # no spoof of this data reaches the accept threshold
    # the swapped or raw-score alternatives are measurably different here
    swapped = choose_thresholds(llr[y == 1], llr[y == 0], target_far=0.34, target_frr=0.0)
    on_raw = choose_thresholds(raw[y == 1], raw[y == 0], target_far=0.0, target_frr=0.34)
    assert abs(swapped["accept"] - want_accept) > 0.05 or abs(swapped["reject"] - want_reject) > 0.05
    assert abs(on_raw["accept"] - want_accept) > 0.05


def test_calibrate_refuses_one_class_and_writes_nothing(tiny_bundle, tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    write(audio / "B0.wav", speechlike(2.0, seed=600))
    write(audio / "B1.wav", speechlike(2.5, seed=601))
    (audio / "S0.wav").write_bytes(b"RIFF not really audio")  # the only spoof cannot be decoded
    protocol = tmp_path / "protocol.txt"
    protocol.write_text("SYN B0 - - bonafide\nSYN B1 - - bonafide\nSYN S0 - tts spoof\n")
    before = (tiny_bundle / "manifest.json").read_bytes()
    r = CliRunner().invoke(main, ["calibrate", str(tiny_bundle), "--protocol", str(protocol), "--audio-dir",
                                  str(audio), "--threads", "1"])
    assert r.exit_code == 5, r.output
    assert "both classes" in r.stderr and "Traceback" not in r.output
    assert (tiny_bundle / "manifest.json").read_bytes() == before


# --------------------------------------------------------------------------- edges mutation testing found unguarded


def test_fit_with_a_single_example_per_class_and_its_message():
    cal = fit_logistic_calibration(np.array([1.0, 2.0]), np.array([0.0]))
    assert np.isfinite(cal.scale) and cal.scale > 0
    with pytest.raises(ValueError, match="needs both bona fide and spoofed examples"):
        fit_logistic_calibration(np.array([1.0]), np.array([]))


@pytest.mark.parametrize("target", [1.0, 0.0])
def test_rate_targets_at_the_ends_of_0_1_are_accepted(target):
    rng = np.random.default_rng(10)
    bona, spoof = rng.normal(1.0, 1.0, 50), rng.normal(-1.0, 1.0, 50)
    th = choose_thresholds(bona, spoof, target_far=target, target_frr=target)
    assert th["target_far"] == target and th["target_frr"] == target


@pytest.mark.parametrize("bad", [1.0000001, 2.0, -0.1, "0.5", None])
def test_rate_targets_outside_0_1_are_refused_by_name(bad):
    from edge_detector.calibration import CalibrationError

    with pytest.raises(CalibrationError, match="target_far must be a rate between 0 and 1"):
        choose_thresholds(np.array([1.0, 2.0]), np.array([0.0, -1.0]), target_far=bad)


def test_far_target_of_one_accepts_at_the_lowest_spoof():
    spoof = np.array([3.0, -2.0, 0.5, 1.0])
    from edge_detector.calibration import far_threshold, frr_threshold

    assert far_threshold(spoof, 1.0) == -2.0  # every spoof may be accepted: the lowest spoof score
    assert far_threshold(spoof, 0.0) == np.nextafter(3.0, np.inf)
    assert frr_threshold(spoof, 0.0) == -2.0 and frr_threshold(spoof, 1.0) == 3.0
