"""`edge-detect gate` fails closed: nothing but an accept decision ever exits 0.

The bundle here accepts everything (thresholds at -1e6), so a 0 could only come from
an error path that fails open. Each test makes the scoring step fail in one way.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from audio_synth import speechlike, write
from conftest import REPO, set_thresholds
from edge_detector.cli import main
from edge_detector.detector import Detector
from edge_detector.errors import ExitCode


@pytest.fixture()
def accepting(tiny_bundle) -> Path:
    set_thresholds(tiny_bundle, accept=-1e6, reject=-1e6)
    return tiny_bundle


@pytest.fixture(scope="module")
def wav(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("gate") / "voice.wav", speechlike(2.0, seed=61))


def gate(bundle: Path, wav: Path):
    return CliRunner().invoke(main, ["gate", str(wav), "--bundle", str(bundle), "--json"])


def test_control_the_bundle_accepts(accepting, wav):
    r = gate(accepting, wav)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["decision"] == "accept"


@pytest.mark.parametrize("exc,code,kind", [
    (RuntimeError("boom"), ExitCode.INTERNAL_ERROR, "internal_error"),
    (MemoryError(), ExitCode.INTERNAL_ERROR, "internal_error"),
    (SystemExit(0), ExitCode.INTERNAL_ERROR, "internal_error"),  # a stray sys.exit(0) is not an accept
    (KeyboardInterrupt(), ExitCode.INTERRUPTED, "interrupted"),
])
def test_unforeseen_failure_while_scoring_is_not_an_accept(accepting, wav, monkeypatch, exc, code, kind):
    def broken(self, *args, **kwargs):
        raise exc

    monkeypatch.setattr(Detector, "score_file", broken)
    r = gate(accepting, wav)
    assert r.exit_code == int(code), r.output
    rec = json.loads(r.stdout)
    assert rec["decision"] == "error" and rec["error"] == kind and rec["exit_code"] == int(code)


def test_a_record_that_cannot_be_written_is_not_an_accept(accepting, wav, monkeypatch):
    """stdout gone (closed pipe): the decision cannot be reported, so the gate does not say yes."""
    import edge_detector.commands.gate as gate_module

    def no_stdout(record):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(gate_module, "emit", no_stdout)
    assert gate(accepting, wav).exit_code == int(ExitCode.INTERNAL_ERROR)


def test_real_sigint_during_scoring_exits_130(accepting, wav):
    """A real SIGINT delivered to the process while it scores (not a raised KeyboardInterrupt)."""
    driver = textwrap.dedent(f"""
        import os, signal, sys, time
        sys.path.insert(0, {str(REPO)!r})
        signal.signal(signal.SIGINT, signal.default_int_handler)  # even if the parent ignores SIGINT
        from edge_detector.detector import Detector
        from edge_detector.cli import main

        def slow(self, *a, **k):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)  # interrupted long before this ends
            raise AssertionError("SIGINT was not delivered")

        Detector.score_file = slow
        main(["gate", {str(wav)!r}, "--bundle", {str(accepting)!r}, "--json"])
    """)
    p = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, timeout=120,
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert p.returncode == int(ExitCode.INTERRUPTED) == 130, p.stderr
    rec = json.loads(p.stdout)
    assert rec["decision"] == "error" and rec["error"] == "interrupted"
