"""`edge-detect score`, `gate` and `info` on a real tiny bundle and real files.

Exit codes come from click's CliRunner (in process) and, for the console script itself,
from subprocesses of the installed `edge-detect`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from audio_synth import buzzy, speechlike, write
from conftest import set_thresholds
from edge_detector.cli import main

RECORD_FIELDS = {"file", "duration", "windows", "score", "llr", "decision", "thresholds", "model_sha256",
                 "provider", "latency_ms"}

GOOD = ["good16.wav", "six.wav", "u8.wav", "s24.wav", "float.wav", "r8k.wav", "r48k.flac"]
BAD = {  # file -> error kind
    "garbage.wav": "unreadable_audio",
    "zero.wav": "unreadable_audio",
    "noframes.wav": "empty_audio",
    "nan.wav": "non_finite_samples",
    "short.wav": "too_short",
    "silent.wav": "silent_audio",
}


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("mixed")
    x = speechlike(2.0, seed=21)
    write(d / "good16.wav", x, subtype="PCM_16")
    six = np.stack([speechlike(2.0, seed=30) * (0.5 + 0.1 * k) for k in range(6)], axis=1)  # one voice, 6 gains
    write(d / "six.wav", six, subtype="FLOAT")
    write(d / "u8.wav", x, subtype="PCM_U8")
    write(d / "s24.wav", speechlike(2.5, seed=4), subtype="PCM_24")
    write(d / "float.wav", speechlike(1.2, seed=22), subtype="FLOAT")
    write(d / "r8k.wav", speechlike(2.0, sr=8000, seed=23), sr=8000, subtype="PCM_16")
    write(d / "r48k.flac", speechlike(2.0, sr=48000, seed=24), sr=48000, subtype="PCM_16")
    (d / "garbage.wav").write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    (d / "zero.wav").write_bytes(b"")
    write(d / "noframes.wav", np.zeros(0, np.float32), subtype="PCM_16")
    nan = speechlike(1.0, seed=25)
    nan[500] = np.nan
    write(d / "nan.wav", nan, subtype="FLOAT")
    write(d / "short.wav", speechlike(0.3, seed=26))
    write(d / "silent.wav", np.zeros(16000, np.float32), subtype="PCM_16")
    (d / "notes.txt").write_text("not audio, no audio extension: skipped\n")
    return d


@pytest.fixture()
def accepting(tiny_bundle) -> Path:
    set_thresholds(tiny_bundle, accept=-1e6, reject=-1e6)
    return tiny_bundle


# --------------------------------------------------------------------------- score


def test_score_one_json_line_per_file(tiny_bundle_master, mixed):
    r = invoke("score", str(mixed / "good16.wav"), str(mixed / "float.wav"), "--bundle", str(tiny_bundle_master))
    assert r.exit_code == 0, r.output
    recs = jsonl(r.stdout)
    assert [Path(x["file"]).name for x in recs] == ["good16.wav", "float.wav"]
    for rec in recs:
        assert RECORD_FIELDS <= set(rec)
        assert rec["decision"] == "accept" and rec["llr"] > 0.1  # speech-like: P(bona fide) > 0.5, thresholds 0/0
        assert rec["provider"] == "CPUExecutionProvider"
        assert len(rec["model_sha256"]) == 64
        assert set(rec["thresholds"]) == {"accept", "reject"}
        assert isinstance(rec["windows"], list) and len(rec["windows"]) == 1
    assert recs[0]["duration"] == pytest.approx(2.0) and recs[1]["duration"] == pytest.approx(1.2)
    assert "scored 2 file(s), 0 failed" in r.stderr


def test_score_asvspoof_format(tiny_bundle_master, mixed):
    files = [str(mixed / "good16.wav"), str(mixed / "s24.wav")]
    r = invoke("score", *files, "--bundle", str(tiny_bundle_master), "--format", "asvspoof")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert len(lines) == 2
    ref = jsonl(invoke("score", *files, "--bundle", str(tiny_bundle_master)).stdout)
    for line, rec in zip(lines, ref):
        utt, score = line.split(" ")
        assert utt == Path(rec["file"]).stem
        assert float(score) == pytest.approx(rec["score"], abs=1e-6)


def test_score_windows_all(tiny_bundle_master, tmp_path):
    path = write(tmp_path / "long.wav", speechlike(12.0, seed=40), subtype="FLOAT")
    r = invoke("score", str(path), "--bundle", str(tiny_bundle_master), "--windows", "all")
    assert r.exit_code == 0, r.output
    (rec,) = jsonl(r.stdout)
    assert len(rec["windows"]) == 5
    assert rec["score"] == pytest.approx(np.mean([w["score"] for w in rec["windows"]]))


def test_score_folder_of_mixed_files(tiny_bundle_master, mixed):
    r = invoke("score", str(mixed), "--bundle", str(tiny_bundle_master))
    assert r.exit_code == 5  # the first failure's code: bad audio
    recs = {Path(x["file"]).name: x for x in jsonl(r.stdout)}
    assert set(recs) == set(GOOD) | set(BAD)  # notes.txt is not audio: skipped
    for name in GOOD:
        assert "error" not in recs[name], recs[name]
        assert RECORD_FIELDS <= set(recs[name])
        assert np.isfinite(recs[name]["score"])
    assert recs["six.wav"]["source_channels"] == 6
    assert recs["r8k.wav"]["source_rate"] == 8000 and recs["r48k.flac"]["source_rate"] == 48000
    assert recs["r8k.wav"]["duration"] == pytest.approx(2.0)
    for name, kind in BAD.items():
        assert recs[name]["error"] == kind, (name, recs[name])
        assert recs[name]["exit_code"] == 5
        assert "\n" not in recs[name]["message"]
        lines = [ln for ln in r.stderr.splitlines() if name in ln]
        assert len(lines) == 1, (name, lines)
        assert lines[0].startswith("edge-detect: ")
    assert f"scored {len(GOOD)} file(s), {len(BAD)} failed" in r.stderr


def test_score_missing_file_still_scores_the_others(tiny_bundle_master, mixed, tmp_path):
    missing = tmp_path / "missing.wav"
    r = invoke("score", str(missing), str(mixed / "good16.wav"), str(mixed / "nan.wav"),
               "--bundle", str(tiny_bundle_master))
    assert r.exit_code == 6  # first failure: missing file
    recs = jsonl(r.stdout)
    assert recs[0]["error"] == "missing_file" and recs[0]["exit_code"] == 6
    assert "error" not in recs[1] and recs[1]["decision"]
    assert recs[2]["error"] == "non_finite_samples"


def test_score_with_tampered_bundle(tiny_bundle, mixed):
    data = bytearray((tiny_bundle / "model.onnx").read_bytes())
    data[len(data) // 3] ^= 0xFF
    (tiny_bundle / "model.onnx").write_bytes(bytes(data))
    r = invoke("score", str(mixed / "good16.wav"), "--bundle", str(tiny_bundle))
    assert r.exit_code == 7
    assert r.stdout == ""
    assert "sha256" in r.stderr


# --------------------------------------------------------------------------- gate


def test_gate_accept_reject_uncertain(tiny_bundle, mixed):
    f = str(mixed / "good16.wav")
    for (accept, reject), code, decision in [((-1e6, -1e6), 0, "accept"), ((1e6, 1e6), 3, "reject"),
                                             ((1e6, -1e6), 4, "uncertain")]:
        set_thresholds(tiny_bundle, accept=accept, reject=reject)
        r = invoke("gate", f, "--bundle", str(tiny_bundle), "--json")
        assert r.exit_code == code, (decision, r.output)
        (rec,) = jsonl(r.stdout)
        assert rec["decision"] == decision and rec["exit_code"] == code
        assert RECORD_FIELDS <= set(rec)
        assert decision in r.stderr


def test_gate_without_json_prints_nothing_on_stdout(accepting, mixed):
    r = invoke("gate", str(mixed / "good16.wav"), "--bundle", str(accepting))
    assert r.exit_code == 0 and r.stdout == ""


@pytest.mark.parametrize("name", list(BAD))
def test_gate_bad_audio_fails_closed(accepting, mixed, name):
    """Even with thresholds that accept everything, unusable audio is never a 0."""
    r = invoke("gate", str(mixed / name), "--bundle", str(accepting), "--json")
    assert r.exit_code == 5
    (rec,) = jsonl(r.stdout)
    assert rec["decision"] == "error" and rec["error"] == BAD[name] and rec["exit_code"] == 5
    assert len(r.stderr.strip().splitlines()) == 1 and name in r.stderr


def test_gate_directory_is_bad_audio(accepting, mixed):
    assert invoke("gate", str(mixed), "--bundle", str(accepting)).exit_code == 5


def test_gate_missing_file(accepting, tmp_path):
    r = invoke("gate", str(tmp_path / "nope.wav"), "--bundle", str(accepting), "--json")
    assert r.exit_code == 6
    assert jsonl(r.stdout)[0]["error"] == "missing_file"
    assert len(r.stderr.strip().splitlines()) == 1


def test_gate_bad_bundle(accepting, mixed, tmp_path):
    f = str(mixed / "good16.wav")
    assert invoke("gate", f, "--bundle", str(accepting)).exit_code == 0  # control: this bundle accepts
    data = bytearray((accepting / "model.onnx").read_bytes())
    data[1000] ^= 0x01  # one changed byte
    (accepting / "model.onnx").write_bytes(bytes(data))
    r = invoke("gate", f, "--bundle", str(accepting), "--json")
    assert r.exit_code == 7
    rec = jsonl(r.stdout)[0]
    assert rec["error"] == "bad_bundle" and rec["decision"] == "error"
    assert "sha256" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert invoke("gate", f, "--bundle", str(tmp_path / "no_bundle")).exit_code == 7


def test_gate_help_documents_the_codes():
    r = invoke("gate", "--help")
    assert r.exit_code == 0
    for line in ("0  accept", "3  reject", "4  uncertain", "5  bad audio", "6  missing file", "7  bad bundle"):
        assert line in r.stdout


# --------------------------------------------------------------------------- info


def test_info_good_and_tampered(tiny_bundle):
    good = invoke("info", str(tiny_bundle))
    assert good.exit_code == 0, good.output
    assert "sha256      verified" in good.stdout and "RawNet2" in good.stdout
    model = tiny_bundle / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-10] ^= 0x01
    model.write_bytes(bytes(data))
    bad = invoke("info", str(tiny_bundle))
    assert bad.exit_code == 7
    assert "FAILED" in bad.stdout
    missing = invoke("info", str(tiny_bundle / "nope"))
    assert missing.exit_code == 7 and "not found" in missing.stderr


# --------------------------------------------------------------------------- the console script


def console_script() -> str:
    candidate = Path(sys.executable).parent / "edge-detect"
    found = str(candidate) if candidate.exists() else shutil.which("edge-detect")
    if not found:
        pytest.skip("the edge-detect console script is not installed in this environment")
    return found


def test_console_script_score_and_gate(tiny_bundle, mixed):
    exe = console_script()
    env = {**os.environ, "EDGE_DETECTOR_BUNDLE": str(tiny_bundle)}  # the bundle from the environment
    p = subprocess.run([exe, "score", str(mixed)], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 5, p.stderr
    recs = jsonl(p.stdout)
    assert len(recs) == len(GOOD) + len(BAD)
    assert sum("error" in r for r in recs) == len(BAD)
    for name in BAD:
        assert sum(name in ln for ln in p.stderr.splitlines()) == 1

    set_thresholds(tiny_bundle, accept=1e6, reject=1e6)
    p = subprocess.run([exe, "gate", str(mixed / "good16.wav"), "--json"], capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 3, p.stderr
    assert jsonl(p.stdout)[0]["decision"] == "reject"
    p = subprocess.run([exe, "gate", str(mixed / "nope.wav")], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 6


def test_score_reports_a_folder_it_cannot_list_and_scores_the_rest(tiny_bundle_master, tmp_path, monkeypatch):
    """A walked folder that cannot be listed (permission denied) is an error record, never silently skipped."""
    root = tmp_path / "walk"
    (root / "ok").mkdir(parents=True)
    (root / "locked").mkdir()
    write(root / "ok" / "a.wav", speechlike(2.0, seed=3))
    write(root / "locked" / "x.wav", speechlike(2.0, seed=4))
    locked = str(root / "locked")
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    res = CliRunner().invoke(main, ["score", "--bundle", str(tiny_bundle_master), "--no-speech-check", str(root)])
    recs = [json.loads(line) for line in res.stdout.splitlines()]
    assert res.exit_code == 5, res.output
    assert [r.get("error") for r in recs] == ["unreadable_file", None]
    assert "cannot list this folder (Permission denied)" in recs[0]["message"] and recs[1]["file"].endswith("a.wav")
