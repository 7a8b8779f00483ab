"""Text inputs with a UTF-8 byte-order mark, and Windows line ends (issue 16, item 8).

Notepad and other Windows editors start UTF-8 files with a BOM. Every text file the
project reads (protocols, profiles, manifests, score files) goes through
edge_detector.textio.read_text, so the BOM never becomes part of the first speaker id or
breaks a `#` comment on line 1. CRLF line ends stay tested alongside.
"""
from __future__ import annotations

import json
from pathlib import Path

BOM = "\ufeff".encode("utf-8")


def test_protocol_with_bom_comment_and_crlf(tmp_path):
    from edge_detector.protocol import read_protocol, split_by_source

    text = "# speaker file - system label\r\nALPHA_s0 A0 - - bonafide\r\nBETA_s1 B0 - A01 spoof\r\n"
    path = tmp_path / "p.txt"
    path.write_bytes(BOM + text.encode("utf-8"))
    entries = read_protocol(path)
    assert [e.speaker for e in entries] == ["ALPHA_s0", "BETA_s1"]
    train, held = split_by_source(entries, "ALPHA")
    assert [e.file_id for e in held] == ["A0"] and [e.file_id for e in train] == ["B0"]


def test_profile_with_bom(tmp_path):
    from firmware_config import load_profile

    shipped = Path(__import__("firmware_config").__file__).parent / "profiles" / "x86.toml"
    path = tmp_path / "mine.toml"
    path.write_bytes(BOM + shipped.read_bytes().replace(b"\n", b"\r\n"))
    assert load_profile(path).session_settings() == load_profile("x86").session_settings()


def test_manifest_with_bom(tiny_bundle):
    from edge_detector.bundle import load_bundle

    raw = (tiny_bundle / "manifest.json").read_bytes()
    (tiny_bundle / "manifest.json").write_bytes(BOM + raw.replace(b"\n", b"\r\n"))
    assert load_bundle(tiny_bundle).manifest == json.loads(raw)


def test_score_files_with_bom(tmp_path):
    from edge_detector.benchmarking.accuracy import read_score_file
    from edge_detector.metrics import load_asv_scores

    scores = tmp_path / "scores.txt"
    scores.write_bytes(BOM + b"# utt score\r\nA0 0.5\r\nB0 -1.25\r\n")
    assert read_score_file(scores) == {"A0": 0.5, "B0": -1.25}
    asv = tmp_path / "asv.txt"
    asv.write_bytes(BOM + b"LA_0079 target -1.0\r\nLA_0079 nontarget -3.0\r\nLA_0079 spoof -2.0\r\n")
    target, nontarget, spoof = load_asv_scores(asv)
    assert list(target) == [-1.0] and list(nontarget) == [-3.0] and list(spoof) == [-2.0]
