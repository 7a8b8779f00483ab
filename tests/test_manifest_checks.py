"""Manifest values, the model's inputs/outputs and calibration are checked, not only typed (issue 16, items 5-7).

A bundle that loads must give right answers: a manifest value out of range, a model whose
output is not one score per window, or a calibration that inverts the score is refused at
load with exit 7 and a message naming the field; `info` says what is wrong.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from audio_synth import buzzy, speechlike, write
from edge_detector.bundle import load_bundle, write_manifest
from edge_detector.calibration import Calibration, CalibrationError, check_calibration, choose_thresholds
from edge_detector.cli import main
from edge_detector.detector import Detector
from edge_detector.errors import BundleError, ExitCode
from edge_detector.session import SessionSettings


def edit_manifest(bundle: Path, dotted: str, value) -> None:
    """Set one manifest field and re-sign (so only the value, not the hashes, is wrong)."""
    m = json.loads((bundle / "manifest.json").read_text())
    cur = m
    *parents, last = dotted.split(".")
    for part in parents:
        cur = cur[part]
    cur[last] = value
    (bundle / "manifest.json").write_text(json.dumps(m))


BAD_VALUES = [
    ("windows.hop", 0, "windows.hop"),
    ("windows.hop", -5, "windows.hop"),
    ("windows.hop", 70000, "windows.hop"),  # more than the window: audio would be skipped
    ("windows.window", 0, "windows.window"),
    ("audio.max_seconds", 0, "audio.max_seconds"),
    ("audio.max_seconds", 0.2, "audio.max_seconds"),  # below min_seconds (0.5)
    ("audio.min_seconds", -1, "audio.min_seconds"),
    ("audio.sample_rate", 0, "audio.sample_rate"),
    ("calibration.scale", -2.5, "calibration.scale"),
    ("calibration.scale", 0, "calibration.scale"),
    ("thresholds.target_far", -0.5, "thresholds.target_far"),
    ("thresholds.target_frr", 1.5, "thresholds.target_frr"),
    ("onnx.opset", 0, "onnx.opset"),
    ("parity.tolerance", -1e-4, "parity.tolerance"),
]


@pytest.mark.parametrize("field,value,named", BAD_VALUES)
def test_out_of_range_value_is_refused_naming_the_field(tiny_bundle, field, value, named):
    edit_manifest(tiny_bundle, field, value)
    with pytest.raises(BundleError, match=f"'{named}'"):
        load_bundle(tiny_bundle, verify=False)


def test_commands_exit_7_and_info_says_why(tiny_bundle, tmp_path):
    edit_manifest(tiny_bundle, "windows.hop", 0)
    wav = write(tmp_path / "a.wav", speechlike(2.0, seed=3))
    runner = CliRunner()
    gate = runner.invoke(main, ["gate", str(wav), "--bundle", str(tiny_bundle)])
    assert gate.exit_code == ExitCode.BAD_BUNDLE and "'windows.hop'" in gate.stderr
    score = runner.invoke(main, ["score", str(wav), "--bundle", str(tiny_bundle)])
    assert score.exit_code == ExitCode.BAD_BUNDLE and "'windows.hop'" in score.stderr
    assert "Traceback" not in score.output
    info = runner.invoke(main, ["info", str(tiny_bundle)])
    assert info.exit_code == ExitCode.BAD_BUNDLE and "'windows.hop'" in info.stderr


def _reexport(bundle: Path, module, window: int = 64600) -> None:
    """Replace the bundle's graph by ``module`` exported with the project's exporter, and re-sign."""
    from export.onnx_export import export_onnx

    export_onnx(module, bundle / "model.onnx", window=window)
    write_manifest(bundle, json.loads((bundle / "manifest.json").read_text()))


def test_two_column_output_is_refused_at_load_and_by_info(tiny_bundle, tiny_model):
    torch = pytest.importorskip("torch")
    from export.fold import FoldedRawNet2

    class TwoColumns(torch.nn.Module):
        """log P(bona fide) and log P(spoof) side by side: [batch, 2]."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            s = self.inner(x)
            return torch.stack([s, torch.log1p(-torch.exp(s).clamp(max=1 - 1e-6))], dim=1)

    _reexport(tiny_bundle, TwoColumns(FoldedRawNet2(tiny_model)))
    load_bundle(tiny_bundle)  # the hashes verify: only the shape is wrong
    with pytest.raises(BundleError, match=r"output 'score' has shape \['batch', 2\]"):
        Detector(tiny_bundle, SessionSettings(intra_op_threads=1))
    info = CliRunner().invoke(main, ["info", str(tiny_bundle)])
    assert info.exit_code == ExitCode.BAD_BUNDLE and "FAILED" in info.stdout and "one score per window" in info.stdout


def test_window_that_does_not_fit_the_graph_is_refused(tiny_bundle):
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    m["windows"].update(window=32000, hop=16000)
    m["onnx"].pop("input_shape", None)
    write_manifest(tiny_bundle, m)
    with pytest.raises(BundleError, match="64600 != 32000"):
        Detector(tiny_bundle, SessionSettings(intra_op_threads=1))


def test_swapped_labels_are_refused_and_nothing_is_written(tiny_bundle, tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    lines, swapped_lines = [], []
    for i in range(3):
        write(audio / f"B{i}.wav", speechlike(4.5, seed=20 + i, f0=110 + 30 * i))
        write(audio / f"S{i}.wav", buzzy(4.5, seed=20 + i))
        lines += [f"SPK B{i} - - bonafide", f"SPK S{i} - A01 spoof"]
        swapped_lines += [f"SPK B{i} - A01 spoof", f"SPK S{i} - - bonafide"]
    right = tmp_path / "right.txt"
    right.write_text("\n".join(lines) + "\n")
    swapped = tmp_path / "swapped.txt"
    swapped.write_text("\n".join(swapped_lines) + "\n")
    runner = CliRunner()
    before = (tiny_bundle / "manifest.json").read_bytes()
    # the tiny model ranks the speech-like files above the buzzes (else this test proves nothing)
    det = Detector(tiny_bundle, SessionSettings(intra_op_threads=1), require_speech=False)  # the model alone
    b = [det.score_file(audio / f"B{i}.wav").score for i in range(3)]
    s = [det.score_file(audio / f"S{i}.wav").score for i in range(3)]
    assert min(b) > max(s)
    out = tmp_path / "out"
    r = runner.invoke(main, ["calibrate", str(tiny_bundle), "--protocol", str(swapped), "--audio-dir",
                             str(audio), "-o", str(out), "--threads", "1"])
    assert r.exit_code == ExitCode.BAD_AUDIO and "swapped" in r.stderr, r.output
    assert not out.exists() and (tiny_bundle / "manifest.json").read_bytes() == before
    ok = runner.invoke(main, ["calibrate", str(tiny_bundle), "--protocol", str(right), "--audio-dir", str(audio),
                              "-o", str(out), "--threads", "1"])
    assert ok.exit_code == 0, ok.output
    assert load_bundle(out).manifest["calibration"]["scale"] > 0


@pytest.mark.parametrize("option,value", [("--target-far", "-0.5"), ("--target-frr", "1.5")])
def test_calibrate_refuses_a_target_outside_0_1(tiny_bundle, tmp_path, option, value):
    protocol = tmp_path / "p.txt"
    protocol.write_text("S1 F1 - - bonafide\n")
    r = CliRunner().invoke(main, ["calibrate", str(tiny_bundle), "--protocol", str(protocol), "--audio-dir",
                                  str(tmp_path), option, value])
    assert r.exit_code == ExitCode.USAGE and option in r.output


def test_calibration_checks_in_the_library():
    with pytest.raises(CalibrationError, match="swapped"):
        check_calibration(Calibration(-318.0, 2.0))
    assert check_calibration(Calibration(3.0, 1.0)) == Calibration(3.0, 1.0)
    with pytest.raises(CalibrationError, match="target_far"):
        choose_thresholds(np.array([1.0, 2.0]), np.array([-1.0, -2.0]), target_far=-0.5)
    with pytest.raises(CalibrationError, match="target_frr"):
        choose_thresholds(np.array([1.0, 2.0]), np.array([-1.0, -2.0]), target_frr=2.0)


@pytest.mark.parametrize("dotted,value", [("thresholds.reject", -60.0), ("calibration.offset", 5.0),
                                          ("audio.min_seconds", 0.1)])
def test_a_valid_hand_edit_is_refused_by_the_manifest_checksum(tiny_bundle, tmp_path, dotted, value):
    """A hand edit that keeps every value valid (here: one that would open the gate) is still caught."""
    import shutil

    from edge_detector.bundle import MANIFEST_DIGEST_FIELD, manifest_digest

    b = tmp_path / "edited"
    shutil.copytree(tiny_bundle, b)
    m = json.loads((b / "manifest.json").read_text())
    assert m[MANIFEST_DIGEST_FIELD] == manifest_digest(m)  # written sealed
    edit_manifest(b, dotted, value)
    with pytest.raises(BundleError, match="edited by hand"):
        load_bundle(b)
    audio = tmp_path / "a.wav"
    write(audio, speechlike(3.0, seed=5))
    r = CliRunner().invoke(main, ["gate", "--bundle", str(b), str(audio)])
    assert r.exit_code == ExitCode.BAD_BUNDLE and "edited by hand" in r.stderr
    # a manifest written before the field existed carries none and still loads
    m = json.loads((b / "manifest.json").read_text())
    del m[MANIFEST_DIGEST_FIELD]
    (b / "manifest.json").write_text(json.dumps(m))
    assert load_bundle(b).manifest[dotted.split(".")[0]][dotted.split(".")[1]] == value
    # writing through the project's writer seals it again
    write_manifest(b, m)
    assert load_bundle(b).manifest[MANIFEST_DIGEST_FIELD] == manifest_digest(m | {"files": load_bundle(b).manifest["files"]})
