"""What the runtime promises, checked against references it does not compute itself.

Scores are compared with the PyTorch model the bundle was exported from (the windows
built here with ``np.tile``, not the runtime's window code), so a Detector that returns
a constant, a wrong window or a wrong graph fails. The other tests each pin one
promise: the bundle's duration limits, ``--windows first`` on an ``all`` bundle, where
`score --format asvspoof` writes errors, the length `make-demo` writes, the doctor's
two-builds warning and the thread count reaching the onnxruntime session.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from audio_synth import buzzy, speechlike, write
from edge_detector.bundle import write_manifest
from edge_detector.cli import main
from edge_detector.detector import Detector
from edge_detector.errors import TooLongAudioError, TooShortAudioError
from edge_detector.session import SessionSettings

W = 64600
SETTINGS = SessionSettings(intra_op_threads=1)


def torch_scores(model, windows: list[np.ndarray]) -> np.ndarray:
    from export.scoring import score_windows

    return score_windows(model, np.stack(windows).astype(np.float32))


def tiled(x: np.ndarray) -> np.ndarray:
    """The official pad rule, written out here: repeat end to end, keep the first W samples."""
    return np.tile(x, W // len(x) + 1)[:W]


def model_detector(bundle: Path) -> Detector:
    """A Detector that reports the model's score for any audio (the speech-presence check, if any, off)."""
    det = Detector(bundle, SETTINGS)
    det.require_speech = False  # buzzy test signals are not speech; here the model's scores are compared
    return det


def edit(bundle: Path, **changes) -> None:
    """Set dotted manifest fields (``audio__min_seconds=3.0``) and re-sign."""
    m = json.loads((bundle / "manifest.json").read_text())
    for key, value in changes.items():
        section, field = key.split("__")
        m[section][field] = value
    write_manifest(bundle, m)


@pytest.fixture(scope="module")
def signals() -> dict[str, np.ndarray]:
    return {"speech2": speechlike(2.0, seed=81, f0=110), "speech5": speechlike(5.0, seed=82, f0=180),
            "buzz3": buzzy(3.0, seed=83), "buzz1": buzzy(1.2, seed=84)}


def test_detector_scores_equal_pytorch_on_each_file(tiny_model, tiny_bundle_master, signals, tmp_path):
    det = model_detector(tiny_bundle_master)
    got = np.array([det.score_file(write(tmp_path / f"{k}.wav", x, subtype="FLOAT")).score
                    for k, x in signals.items()])
    want = torch_scores(tiny_model, [tiled(x) for x in signals.values()])
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.ptp(want) > 0.5  # the reference itself is far from constant: equality means something
    speech, buzz = want[:2], want[2:]
    assert speech.min() > buzz.max()  # and it tells the two kinds of signal apart


def test_windows_all_equal_pytorch_window_by_window(tiny_model, tiny_bundle_master):
    x = np.concatenate([speechlike(4.0, seed=85), buzzy(4.0, seed=86), speechlike(4.0, seed=87, f0=200)])
    r = model_detector(tiny_bundle_master).score_array(x, 16000, windows="all")
    starts = [0, 32300, 64600, 96900, len(x) - W]
    want = torch_scores(tiny_model, [x[s: s + W] for s in starts])
    np.testing.assert_allclose([w["score"] for w in r.windows], want, atol=1e-4)
    assert r.score == pytest.approx(float(np.mean(want)), abs=1e-4)
    assert np.ptp(want) > 0.3


def test_cli_score_equals_pytorch(tiny_model, tiny_bundle_master, tmp_path):
    voices = [speechlike(1.5 + 0.7 * i, seed=95 + i, f0=90 + 45 * i) * (0.2 + 0.3 * i) for i in range(4)]
    files = [write(tmp_path / f"v{i}.wav", x, subtype="FLOAT") for i, x in enumerate(voices)]
    r = CliRunner().invoke(main, ["score", *map(str, files), "--bundle", str(tiny_bundle_master)])
    assert r.exit_code == 0, r.output
    got = [json.loads(line)["score"] for line in r.stdout.splitlines()]
    want = torch_scores(tiny_model, [tiled(x) for x in voices])
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.ptp(want) > 1e-2  # 100 times the tolerance: a constant score cannot pass


# --------------------------------------------------------------------------- duration limits


def test_the_bundles_min_seconds_is_honoured(tiny_bundle, tmp_path):
    x = speechlike(2.0, seed=88)
    Detector(tiny_bundle, SETTINGS).score_array(x, 16000)  # control: 2 s is fine at the default 0.5 s
    edit(tiny_bundle, audio__min_seconds=3.0)
    det = Detector(tiny_bundle, SETTINGS)
    with pytest.raises(TooShortAudioError):
        det.score_array(x, 16000)
    with pytest.raises(TooShortAudioError):
        det.score_file(write(tmp_path / "two.wav", x))
    det.score_array(speechlike(3.5, seed=89), 16000)  # longer than the limit: scored


def test_the_bundles_max_seconds_is_honoured(tiny_bundle, tmp_path):
    path = write(tmp_path / "three.wav", speechlike(3.0, seed=90))
    Detector(tiny_bundle, SETTINGS).score_file(path)  # control
    edit(tiny_bundle, audio__max_seconds=2.0)
    with pytest.raises(TooLongAudioError):
        Detector(tiny_bundle, SETTINGS).score_file(path)
    r = CliRunner().invoke(main, ["gate", str(path), "--bundle", str(tiny_bundle), "--json"])
    assert r.exit_code == 5 and json.loads(r.stdout)["error"] == "too_long"


# --------------------------------------------------------------------------- window mode


def test_windows_first_is_honoured_on_a_bundle_whose_mode_is_all(tiny_bundle, tmp_path):
    edit(tiny_bundle, windows__mode="all")
    path = write(tmp_path / "long.wav", speechlike(12.0, seed=91), subtype="FLOAT")
    by_default = CliRunner().invoke(main, ["score", str(path), "--bundle", str(tiny_bundle)])
    assert len(json.loads(by_default.stdout)["windows"]) == 5  # the bundle's own mode
    for command in ("score", "gate"):
        json_flag = ["--json"] if command == "gate" else []
        r = CliRunner().invoke(main, [command, str(path), "--bundle", str(tiny_bundle), "--windows", "first",
                                      *json_flag])
        rec = json.loads(r.stdout)
        assert len(rec["windows"]) == 1 and rec["windows"][0]["start"] == 0.0, command


# --------------------------------------------------------------------------- output streams


def test_asvspoof_format_keeps_errors_off_stdout(tiny_bundle_master, tmp_path):
    good = write(tmp_path / "good.wav", speechlike(2.0, seed=92))
    short = write(tmp_path / "short.wav", speechlike(0.2, seed=93))
    r = CliRunner().invoke(main, ["score", str(good), str(short), str(tmp_path / "missing.wav"),
                                  "--bundle", str(tiny_bundle_master), "--format", "asvspoof"])
    assert r.exit_code == 5
    (line,) = r.stdout.splitlines()  # only the scored file: "utt_id score"
    utt, score = line.split(" ")
    assert utt == "good" and np.isfinite(float(score))
    assert "short.wav" in r.stderr and "missing.wav" in r.stderr
    assert "{" not in r.stdout


@pytest.mark.parametrize("seconds,rate", [(3.0, 16000), (2.5, 8000), (1.0, 44100)])
def test_make_demo_writes_all_of_the_audio(tmp_path, seconds, rate):
    out = tmp_path / "demo.wav"
    r = CliRunner().invoke(main, ["make-demo", str(out), "--seconds", str(seconds), "--rate", str(rate)])
    assert r.exit_code == 0, r.output
    info = sf.info(str(out))
    assert info.samplerate == rate
    assert abs(info.frames - seconds * rate) <= 1
    x, _ = sf.read(str(out))
    half = len(x) // 2
    assert np.max(np.abs(x[:half])) > 0.1 and np.max(np.abs(x[half:])) > 0.1  # speech in both halves


# --------------------------------------------------------------------------- doctor and threads


def test_doctor_warns_when_two_onnxruntime_builds_are_installed(tiny_bundle_master, monkeypatch):
    import edge_detector.commands.doctor as doctor

    monkeypatch.setattr(doctor, "installed_onnxruntime_builds", lambda: ["onnxruntime", "onnxruntime-gpu"])
    r = CliRunner().invoke(main, ["doctor", "--bundle", str(tiny_bundle_master), "--runs", "1", "--json"])
    assert r.exit_code == 0, r.output
    check = next(c for c in json.loads(r.stdout)["checks"] if c["check"] == "onnxruntime builds")
    assert check["status"] == "warn"
    assert "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in check["detail"]
    monkeypatch.setattr(doctor, "installed_onnxruntime_builds", lambda: ["onnxruntime"])
    r = CliRunner().invoke(main, ["doctor", "--bundle", str(tiny_bundle_master), "--runs", "1", "--json"])
    check = next(c for c in json.loads(r.stdout)["checks"] if c["check"] == "onnxruntime builds")
    assert check == {"check": "onnxruntime builds", "status": "ok", "detail": "onnxruntime"}


def session_threads(det: Detector) -> int:
    return det.session.get_session_options().intra_op_num_threads


@pytest.mark.parametrize("threads", [1, 3])
def test_thread_count_reaches_the_session(tiny_bundle_master, threads):
    from edge_detector.commands._common import build_detector

    assert session_threads(Detector(tiny_bundle_master, SessionSettings(intra_op_threads=threads))) == threads
    assert session_threads(build_detector(str(tiny_bundle_master), None, threads)) == threads  # --threads


def test_profile_threads_and_the_override(tiny_bundle_master):
    from edge_detector.commands._common import build_detector
    from firmware_config import load_profile

    assert load_profile("x86").intra_op_threads == 4  # what the shipped profile says (firmware_config/profiles)
    assert session_threads(build_detector(str(tiny_bundle_master), "x86", None)) == 4
    assert session_threads(build_detector(str(tiny_bundle_master), "x86", 2)) == 2
    assert session_threads(build_detector(str(tiny_bundle_master), None, None)) == 1  # the CLI's default


def test_make_demo_never_replaces_a_file_without_overwrite_and_refuses_bad_options(tmp_path):
    mine = tmp_path / "keep.wav"
    mine.write_bytes(b"my own recording")
    r = CliRunner().invoke(main, ["make-demo", str(mine)])
    assert r.exit_code == 2 and "already exists" in r.output and mine.read_bytes() == b"my own recording"
    r = CliRunner().invoke(main, ["make-demo", str(mine), "--overwrite", "--seconds", "1"])
    assert r.exit_code == 0, r.output
    assert sf.info(str(mine)).frames == 16000
    for bad in (["--seconds", "0"], ["--seconds", "-1"], ["--rate", "0"]):
        r = CliRunner().invoke(main, ["make-demo", str(tmp_path / "x.wav"), *bad])
        assert r.exit_code == 2 and "Traceback" not in r.output, bad
    r = CliRunner().invoke(main, ["make-demo", str(tmp_path / "out.txt")])
    assert r.exit_code == 2 and "extension" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.wav"]  # nothing else written, no temporary left
