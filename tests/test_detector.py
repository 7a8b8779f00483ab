"""The device-side Detector on a real tiny bundle: files vs arrays, windows, batching, decisions."""
from __future__ import annotations

import numpy as np
import pytest

from audio_synth import buzzy, speechlike, write
from conftest import set_thresholds
from edge_detector.bundle import write_manifest
from edge_detector.detector import ACCEPT, REJECT, UNCERTAIN, Detector, decide
from edge_detector.errors import SilentAudioError, TooShortAudioError
from edge_detector.session import SessionSettings
from edge_detector.windows import WINDOW_SAMPLES as W

SETTINGS = SessionSettings(intra_op_threads=1)
RECORD_FIELDS = {"file", "duration", "windows", "score", "llr", "decision", "thresholds", "model_sha256",
                 "provider", "latency_ms"}


@pytest.fixture(scope="module")
def detector(tiny_bundle_master) -> Detector:
    return Detector(tiny_bundle_master, SETTINGS)


@pytest.fixture(scope="module")
def twelve_seconds() -> np.ndarray:
    return speechlike(12.0, seed=31, f0=140.0)


def test_score_array_equals_score_file(detector, tmp_path):
    x = speechlike(3.0, sr=44100, seed=5)
    path = write(tmp_path / "x.wav", x, sr=44100, subtype="FLOAT")
    from_file = detector.score_file(path)
    from_array = detector.score_array(x, 44100, source=str(path))
    assert from_file.score == from_array.score
    assert from_file.calibrated == from_array.calibrated
    assert from_file.windows == from_array.windows
    assert from_file.decision == from_array.decision
    assert from_file.duration == pytest.approx(3.0)
    assert {k: v for k, v in from_file.extra.items() if k != "speech"} == {"source_rate": 44100, "source_channels": 1}
    assert from_file.extra["speech"] == from_array.extra["speech"] and from_file.extra["speech"]["speech"]


def test_score_samples_is_the_first_window_score(detector):
    x = buzzy(2.0, seed=3)
    detector = Detector(detector.bundle, detector.settings, require_speech=False)  # a buzz: the model alone
    r = detector.score_samples(x, source="buzz")
    assert len(r.windows) == 1 and r.combine == "single"
    tiled = np.tile(x, 3)[:W]
    assert r.score == pytest.approx(float(detector.score_windows(tiled[None])[0]), abs=1e-6)
    assert r.calibrated == pytest.approx(r.score + np.log(2.0))  # uncalibrated bundle: log P(bona fide) - log 0.5


def test_windows_all_on_12_seconds(detector, twelve_seconds):
    x = twelve_seconds
    r = detector.score_array(x, 16000, windows="all")
    assert len(r.windows) == 5
    starts = [0, 32300, 64600, 96900, 127400]
    assert [w["start"] for w in r.windows] == pytest.approx([s / 16000 for s in starts])
    assert r.windows[-1]["end"] == pytest.approx(12.0)
    singles = [float(detector.score_windows(x[s : s + W][None])[0]) for s in starts]
    np.testing.assert_allclose([w["score"] for w in r.windows], singles, atol=1e-5)
    scores = [w["score"] for w in r.windows]
    assert np.ptp(scores) > 0  # different windows, different scores: the rule matters
    assert detector.bundle.window_rule.combine == "mean"
    assert r.combine == "mean" and r.score == pytest.approx(float(np.mean(scores)))
    first = detector.score_array(x, 16000)  # the bundle's default: the first window only
    assert len(first.windows) == 1 and first.score == pytest.approx(singles[0], abs=1e-5)


@pytest.mark.parametrize("rule,fn", [("min", np.min), ("median", np.median)])
def test_windows_combine_by_the_manifest_rule(tiny_bundle, twelve_seconds, rule, fn):
    import json

    m = json.loads((tiny_bundle / "manifest.json").read_text())
    m["windows"]["combine"] = rule
    m["windows"]["mode"] = "all"  # and the bundle's default mode becomes 'all'
    write_manifest(tiny_bundle, m)
    det = Detector(tiny_bundle, SETTINGS)
    r = det.score_array(twelve_seconds, 16000)
    scores = [w["score"] for w in r.windows]
    assert len(scores) == 5 and r.combine == rule
    assert r.score == pytest.approx(float(fn(scores)))
    assert r.calibrated == pytest.approx(r.score + np.log(2.0))  # uncalibrated bundle: log P(bona fide) - log 0.5


def test_batched_windows_equal_one_by_one(detector):
    rng = np.random.default_rng(8)
    batch = np.stack([speechlike(4.0375, seed=50 + i)[:W] * float(rng.uniform(0.3, 1.0)) for i in range(5)])
    together = detector.score_windows(batch)
    one_by_one = np.array([detector.score_windows(row[None])[0] for row in batch])
    assert together.shape == (5,)
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_max_batch_does_not_change_scores(tiny_bundle_master, twelve_seconds):
    big = Detector(tiny_bundle_master, SETTINGS, max_batch=16).score_array(twelve_seconds, 16000, windows="all")
    small = Detector(tiny_bundle_master, SETTINGS, max_batch=2).score_array(twelve_seconds, 16000, windows="all")
    np.testing.assert_allclose([w["score"] for w in big.windows], [w["score"] for w in small.windows], atol=1e-5)


def test_decide_rule():
    assert decide(1.0, accept=1.0, reject=-1.0) == ACCEPT  # at the accept threshold: accept
    assert decide(0.999, accept=1.0, reject=-1.0) == UNCERTAIN
    assert decide(-1.0, accept=1.0, reject=-1.0) == UNCERTAIN  # at the reject threshold: not below it
    assert decide(-1.001, accept=1.0, reject=-1.0) == REJECT
    assert decide(0.0, accept=0.0, reject=0.0) == ACCEPT
    assert decide(float("nan"), accept=0.0, reject=0.0) == REJECT  # fails closed
    assert decide(float("inf"), accept=0.0, reject=0.0) == REJECT


def test_decisions_follow_the_bundle_thresholds(tiny_bundle):
    x = speechlike(2.0, seed=12)
    llr = Detector(tiny_bundle, SETTINGS).score_array(x, 16000).calibrated
    cases = [
        ((llr - 1.0, llr - 2.0), ACCEPT),
        ((llr, llr - 2.0), ACCEPT),
        ((llr + 1.0, llr - 1.0), UNCERTAIN),
        ((llr + 1.0, llr), UNCERTAIN),
        ((llr + 2.0, llr + 1.0), REJECT),
    ]
    for (accept, reject), expected in cases:
        set_thresholds(tiny_bundle, accept=accept, reject=reject)
        r = Detector(tiny_bundle, SETTINGS).score_array(x, 16000)
        assert r.calibrated == llr
        assert r.decision == expected, (accept, reject, llr)
        assert r.thresholds == {"accept": accept, "reject": reject}


def test_record_fields(detector, tmp_path):
    path = write(tmp_path / "r.wav", speechlike(1.5, seed=2))
    rec = detector.score_file(path).to_record()
    assert RECORD_FIELDS <= set(rec)
    assert rec["file"] == str(path) and rec["duration"] == pytest.approx(1.5)
    assert rec["model_sha256"] == detector.bundle.model_sha256
    assert rec["provider"] == "CPUExecutionProvider" == detector.provider
    assert rec["llr"] == pytest.approx(rec["score"] + np.log(2.0))  # uncalibrated: log P(bona fide) - log 0.5
    assert rec["latency_ms"] > 0 and rec["total_ms"] >= rec["latency_ms"]
    # speech-like audio: the tiny model leans bona fide (P > 0.5), above the uncalibrated thresholds (0, 0)
    assert rec["llr"] > 0.1 and rec["decision"] == ACCEPT


def test_unscorable_arrays(detector):
    with pytest.raises(SilentAudioError):
        detector.score_array(np.zeros(16000, np.float32), 16000)
    with pytest.raises(TooShortAudioError):
        detector.score_array(speechlike(0.3, seed=1), 16000)
    # 0.3 s at 48 kHz is still 0.3 s
    with pytest.raises(TooShortAudioError):
        detector.score_array(speechlike(0.3, sr=48000, seed=1), 48000)
