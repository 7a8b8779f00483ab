"""`edge-detect gate` as a process ends with os._exit after flushing (no interpreter teardown).

Only when edge-detect *is* the process: a program or test calling ``main([...])`` gets
click's ordinary behaviour, and other subcommands exit normally (atexit handlers run).
"""
from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from conftest import REPO
from edge_detector.cli import _exit_code, main

#: Runs the CLI as the process with an atexit handler that announces itself on stderr.
_WITH_ATEXIT = ("import atexit, sys\n"
                "atexit.register(lambda: sys.stderr.write('ATEXIT-RAN\\n'))\n"
                "sys.argv = ['edge-detect'] + sys.argv[1:]\n"
                "from edge_detector.cli import main\n"
                "main()\n")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _WITH_ATEXIT, *args], capture_output=True, text=True, timeout=120,
                          cwd=str(REPO))


def test_gate_process_skips_teardown_but_writes_its_record(tmp_path):
    missing = tmp_path / "nope.wav"
    r = _run("gate", "--json", str(missing))
    assert r.returncode == 6  # missing file, as without the fast exit
    record = json.loads(r.stdout)  # the whole record reached the pipe before os._exit
    assert record["exit_code"] == 6 and record["error"] == "missing_file"
    assert "ATEXIT-RAN" not in r.stderr  # the fast path was taken
    assert "no such file" in r.stderr  # and stderr was flushed too


def test_other_commands_and_help_exit_normally():
    r = _run("info", "--help")
    assert r.returncode == 0 and "ATEXIT-RAN" in r.stderr
    r = _run("gate", "--help")  # click's own exit inside the fast path: status 0, help printed
    assert r.returncode == 0 and "Exit codes" in r.stdout


def test_in_process_callers_get_clicks_behaviour(tmp_path):
    """CliRunner (main called with args) must return, not end the test process."""
    res = CliRunner().invoke(main, ["gate", str(tmp_path / "nope.wav")])
    assert res.exit_code == 6


def test_unwritable_decision_is_not_an_accept():
    """Exit status 0 whose stdout cannot be flushed (reader gone) becomes 1."""
    prog = ("import sys\n"
            "sys.stdin.read()\n"  # wait until the parent has closed the pipe's read end
            "sys.stdout.write('accept')\n"
            "from edge_detector.cli import _exit_now\n"
            "_exit_now(0)\n")
    p = subprocess.Popen([sys.executable, "-c", prog], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, cwd=str(REPO))
    p.stdout.close()
    p.stdin.close()
    assert p.wait(timeout=60) == 1


def test_exit_code_mapping():
    assert _exit_code(None) == 0 and _exit_code(4) == 4 and _exit_code("boom") == 1
