"""Inputs users actually give (issue 16, items 9-10 and the small notes).

- non-seekable audio: `-` (standard input), /dev/stdin, a FIFO — read once;
- file names that are not valid UTF-8: opened by their bytes, reported losslessly,
  and "no such file" / "cannot read" / "bad audio" kept apart;
- a polarity-inverted stereo pair says why it is silent; "too short" prints enough digits.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from audio_synth import speechlike, write
from edge_detector.audio import load_audio
from edge_detector.audio_source import display_name, name_fields
from edge_detector.cli import main
from edge_detector.detector import Detector
from edge_detector.errors import ExitCode, SilentAudioError, TooShortAudioError
from edge_detector.session import SessionSettings

TIMEOUT_S = 120


# ---- non-seekable input -----------------------------------------------------------------------


def _cli(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_detector.cli", *args], capture_output=True,
                          timeout=TIMEOUT_S, **kw)


@pytest.fixture()
def wav_and_score(tiny_bundle, tmp_path):
    wav = write(tmp_path / "utt.wav", speechlike(3.0, seed=11))
    ref = Detector(tiny_bundle, SessionSettings(intra_op_threads=1)).score_file(wav)
    return wav, ref.score


@pytest.mark.parametrize("target", ["-", "/dev/stdin"])
def test_gate_reads_a_pipe_once(tiny_bundle, wav_and_score, target):
    wav, ref = wav_and_score
    r = _cli(["gate", target, "--json", "--bundle", str(tiny_bundle)], input=wav.read_bytes())
    rec = json.loads(r.stdout)
    assert rec.get("score") == pytest.approx(ref, abs=1e-6), r.stderr
    assert rec["file"] == target and r.returncode in (0, 3, 4)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_score_reads_a_fifo_once(tiny_bundle, wav_and_score, tmp_path):
    wav, ref = wav_and_score
    fifo = tmp_path / "in.wav"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as f:  # blocks until the command opens it for reading
            f.write(wav.read_bytes())

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    r = _cli(["score", str(fifo), "--bundle", str(tiny_bundle)])
    t.join(timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["score"] == pytest.approx(ref, abs=1e-6)


def test_score_stdin_in_process_and_only_once(tiny_bundle, wav_and_score):
    wav, ref = wav_and_score
    runner = CliRunner()
    r = runner.invoke(main, ["score", "-", "--bundle", str(tiny_bundle)], input=wav.read_bytes())
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["score"] == pytest.approx(ref, abs=1e-6)
    twice = runner.invoke(main, ["score", "-", "-", "--bundle", str(tiny_bundle)], input=wav.read_bytes())
    assert twice.exit_code == ExitCode.USAGE


def test_stream_larger_than_the_bound_is_refused():
    import io

    from edge_detector.audio_source import read_stream
    from edge_detector.errors import TooLongAudioError

    with pytest.raises(TooLongAudioError, match="more than"):
        read_stream(io.BytesIO(b"x" * 5000), "-", limit=4096)
    assert read_stream(io.BytesIO(b"x" * 4096), "-", limit=4096).getvalue() == b"x" * 4096


# ---- file names that are not UTF-8 -----------------------------------------------------------


def test_name_fields_are_lossless():
    name = os.fsdecode(b"/rec/caf\xe9 \xff.wav")
    fields = name_fields(name)
    assert fields["file"] == "/rec/caf\\xe9 \\xff.wav"
    assert bytes.fromhex(fields["file_bytes_hex"]) == b"/rec/caf\xe9 \xff.wav"
    assert name_fields("/rec/café.wav") == {"file": "/rec/café.wav"}
    assert display_name(name) == fields["file"]


def test_latin1_file_name_is_scored_and_reported_losslessly(tiny_bundle, wav_and_score, tmp_path):
    wav, ref = wav_and_score
    raw = os.fsencode(tmp_path) + b"/caf\xe9.wav"
    try:
        with open(raw, "wb") as f:
            f.write(wav.read_bytes())
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses non-UTF-8 names")
    name = os.fsdecode(raw)
    missing = os.fsdecode(os.fsencode(tmp_path) + b"/gon\xe9.wav")
    r = CliRunner().invoke(main, ["score", name, missing, "--bundle", str(tiny_bundle)])
    good, bad = [json.loads(line) for line in r.stdout.splitlines()]
    assert good["score"] == pytest.approx(ref, abs=1e-6)
    assert bytes.fromhex(good["file_bytes_hex"]) == raw and good["file"].endswith("caf\\xe9.wav")
    assert bad["error"] == "missing_file" and bad["exit_code"] == ExitCode.MISSING_FILE
    assert bytes.fromhex(bad["file_bytes_hex"]).endswith(b"gon\xe9.wav")
    assert "\\udc" not in r.stdout  # no surrogate escapes in the JSON
    assert r.exit_code == ExitCode.MISSING_FILE


def test_missing_unreadable_and_bad_audio_stay_distinct(tiny_bundle, tmp_path):
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio at all" * 100)
    loop = tmp_path / "loop.wav"
    loop.symlink_to(loop)  # exists as a name, cannot be opened: "cannot read"
    folder = tmp_path / "folder.wav"
    folder.mkdir()
    r = CliRunner().invoke(main, ["score", str(tmp_path / "nope.wav"), str(loop), str(garbage),
                                  "--bundle", str(tiny_bundle)])
    kinds = [json.loads(line)["error"] for line in r.stdout.splitlines()]
    assert kinds == ["missing_file", "unreadable_file", "unreadable_audio"]
    with pytest.raises(Exception) as exc:
        load_audio(folder)
    assert exc.value.kind == "unreadable_audio" and "directory" in str(exc.value)


# ---- small notes ------------------------------------------------------------------------------


def test_polarity_inverted_stereo_says_why_it_is_silent(tmp_path):
    x = speechlike(2.0, seed=4)
    path = write(tmp_path / "inverted.wav", np.stack([x, -x], axis=1))
    with pytest.raises(SilentAudioError, match="polarity inverted"):
        load_audio(path)


def test_too_short_message_prints_enough_digits(tiny_bundle, tmp_path):
    det = Detector(tiny_bundle, SessionSettings(intra_op_threads=1))
    with pytest.raises(TooShortAudioError) as exc:
        det.score_samples(speechlike(1.0, seed=1)[:7999], source="short")
    assert "0.4999 s (7999 samples at 16000 Hz)" in str(exc.value) and "the 0.5000 s minimum" in str(exc.value)
