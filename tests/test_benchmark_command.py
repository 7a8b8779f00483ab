"""The command line a benchmark records in its result file (edge_detector.benchmarking.environment)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from edge_detector.benchmarking.environment import _project_relative, benchmark_command, capture_environment

ROOT = Path(__file__).resolve().parents[1]


def test_interpreter_inside_the_project_is_recorded_relative_and_outside_as_is(tmp_path):
    assert _project_relative(str(ROOT / ".venv" / "bin" / "python"), ROOT) == os.path.join(".venv", "bin", "python")
    outside = str(tmp_path / "python")
    assert _project_relative(outside, ROOT) == outside
    recorded = capture_environment()["python"]["executable"]
    assert recorded == (os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT) + os.sep)
                        else sys.executable)


def test_nice_prefix_only_at_the_real_nice_level():
    code = ("from edge_detector.benchmarking.environment import benchmark_command;"
            "print(benchmark_command('benchmarks/x.py', ['--a', '1']))")
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    niced = subprocess.run(["nice", "-n", "7", sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.strip()
    base = os.nice(0)
    assert plain.endswith("benchmarks/x.py --a 1")
    assert plain.startswith(f"nice -n {base} ") if base else not plain.startswith("nice")
    assert niced.startswith(f"nice -n {min(19, base + 7)} ") and niced.endswith("benchmarks/x.py --a 1")
    assert benchmark_command("benchmarks/y.py", []).endswith("benchmarks/y.py")
