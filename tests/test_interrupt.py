"""Ctrl-C: a real SIGINT to a real `edge-detect` process exits 130 and leaves no output behind.

Each command is made to wait on a FIFO that the test holds open without writing, so the
signal arrives while the command is in the middle of its work (reading audio) and never
before Python has installed its handler or after the command has finished. The child
starts with SIGINT at its default disposition (a shell may have set it to "ignore" for
background jobs, and Python then never raises KeyboardInterrupt), and every wait has a
timeout, so the test cannot hang.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_detector.errors import ExitCode

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")

TIMEOUT_S = 120.0


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_while_reading(args: list[str], fifo: Path, cwd: Path) -> subprocess.CompletedProcess:
    """Run `edge-detect ARGS`, wait until it opens ``fifo`` for reading, send SIGINT, collect it."""
    proc = subprocess.Popen([sys.executable, "-m", "edge_detector.cli", *args], cwd=str(cwd),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_default_sigint)
    writer = None
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while writer is None:
            if proc.poll() is not None:
                out, err = proc.communicate(timeout=TIMEOUT_S)
                pytest.fail(f"exited {proc.returncode} before reading the FIFO: {err.decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the command never opened the FIFO")
            try:  # succeeds only once a reader has the FIFO open
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=TIMEOUT_S)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode())
    finally:
        if writer is not None:
            os.close(writer)
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT_S)


@pytest.fixture()
def fifo(tmp_path) -> Path:
    path = tmp_path / "audio" / "F0.wav"
    path.parent.mkdir()
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("command", ["score", "gate"])
def test_sigint_while_scoring_exits_130(command, tiny_bundle, fifo, tmp_path):
    r = interrupt_while_reading([command, str(fifo), "--bundle", str(tiny_bundle)], fifo, tmp_path)
    assert r.returncode == ExitCode.INTERRUPTED, r.stderr
    assert "interrupted" in r.stderr and "Traceback" not in r.stderr


def test_sigint_during_calibrate_leaves_no_output(tiny_bundle, fifo, tmp_path):
    protocol = tmp_path / "protocol.txt"
    protocol.write_text("S1 F0 - - bonafide\n")
    out = tmp_path / "calibrated"
    manifest_before = (tiny_bundle / "manifest.json").read_bytes()
    before = sorted(os.listdir(tmp_path))
    r = interrupt_while_reading(["calibrate", str(tiny_bundle), "--protocol", str(protocol), "--audio-dir",
                                 str(fifo.parent), "-o", str(out), "--threads", "1"], fifo, tmp_path)
    assert r.returncode == ExitCode.INTERRUPTED, r.stderr
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == before  # no staging folder left either
    assert (tiny_bundle / "manifest.json").read_bytes() == manifest_before
