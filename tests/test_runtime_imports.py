"""The device runtime never loads torch, onnx or scipy (checked in fresh interpreters)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from audio_synth import speechlike, write

FORBIDDEN = ("torch", "onnx", "scipy")

PROBE = textwrap.dedent(
    """
    import json, sys
    {body}
    heavy = sorted(m for m in sys.modules
                   if m in {forbidden!r} or any(m.startswith(f + ".") for f in {forbidden!r}))
    print("PROBE " + json.dumps({{"code": code, "heavy": heavy, "has_ort": "onnxruntime" in sys.modules}}),
          file=sys.stderr)
    """
)

RUN_CLI = """
import edge_detector, edge_detector.cli
from edge_detector.cli import main
try:
    main({args!r}, prog_name="edge-detect")
    code = 0
except SystemExit as exc:
    code = exc.code
"""


def probe(body: str, tmp_path) -> tuple[dict, subprocess.CompletedProcess]:
    code = PROBE.format(body=textwrap.dedent(body), forbidden=FORBIDDEN)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("PROBE ")]
    assert p.returncode == 0 and lines, p.stderr
    return json.loads(lines[-1][len("PROBE "):]), p


def test_import_alone_loads_nothing_heavy(tmp_path):
    result, _ = probe("import edge_detector, edge_detector.cli\ncode = 0", tmp_path)
    assert result["heavy"] == []


@pytest.mark.parametrize("command", ["score", "gate", "info"])
def test_runtime_commands_load_no_torch_onnx_scipy(tiny_bundle_master, tmp_path, command):
    wav = write(tmp_path / "x.wav", speechlike(2.0, seed=3))
    args = {
        "score": ["score", str(wav), "--bundle", str(tiny_bundle_master), "--windows", "all"],
        "gate": ["gate", str(wav), "--bundle", str(tiny_bundle_master), "--json"],
        "info": ["info", str(tiny_bundle_master)],
    }[command]
    result, p = probe(RUN_CLI.format(args=args), tmp_path)
    assert result["heavy"] == [], result
    if command == "score":
        assert result["code"] == 0, p.stderr
        rec = json.loads(p.stdout.splitlines()[0])
        # it really ran the model: speech-like audio, P(bona fide) > 0.5 with the tiny model, thresholds 0/0
        assert rec["decision"] == "accept" and rec["llr"] > 0.1
        assert result["has_ort"]
    elif command == "gate":
        assert result["code"] == 0, p.stderr  # accept, as `score` decides on the same file
        assert json.loads(p.stdout.splitlines()[0])["exit_code"] == result["code"]
    else:
        assert result["code"] == 0, p.stderr


def test_the_probe_sees_a_heavy_import(tmp_path):
    """Control: the same probe does report a forbidden module when one is loaded."""
    pytest.importorskip("scipy")
    result, _ = probe("import scipy\ncode = 0", tmp_path)
    assert "scipy" in result["heavy"]


def test_sha256_matches_hashlib_and_the_runtime_does_not_load_openssl(tiny_bundle_master, tmp_path):
    """Bundle hashes come from CPython's own SHA-256, not OpenSSL (3.6 MB of RSS saved)."""
    import hashlib
    import os

    from edge_detector.bundle import sha256_file
    from edge_detector.digest import sha256, sha256_source

    for n in (0, 1, 63, 64, 65, 1 << 20):
        data = os.urandom(n)
        assert sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(3 * (1 << 20) + 5))  # several read chunks
    assert sha256_file(blob) == hashlib.sha256(blob.read_bytes()).hexdigest()

    code = textwrap.dedent(f"""
        import sys
        from edge_detector.detector import Detector
        from edge_detector.digest import sha256_source
        Detector({str(tiny_bundle_master)!r})
        print(sha256_source(), "_hashlib" in sys.modules)
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    source, openssl = p.stdout.split()
    assert source == sha256_source()
    if source != "hashlib":  # CPython: the built-in module serves, OpenSSL stays unloaded
        assert openssl == "False"
