"""The test fixtures themselves: a model that tells inputs apart, and code imported from this checkout.

A nearly constant test model makes every score comparison pass trivially, and a suite
that imports an installed copy instead of the checkout can pass while the checkout is
broken; both would hide bugs from every other test.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from audio_synth import buzzy, speechlike
from conftest import REPO

W = 64600


def test_tiny_model_is_discriminative(tiny_model):
    """Speech-like and buzzy signals about 1 apart in log P(bona fide): far beyond any tolerance used."""
    from export.scoring import score_windows

    speech = [speechlike(2.0 + 0.5 * i, seed=700 + i, f0=100 + 30 * i) for i in range(3)]
    buzz = [buzzy(2.0 + 0.5 * i, seed=710 + i) for i in range(3)]
    windows = np.stack([np.tile(x, W // len(x) + 1)[:W] for x in speech + buzz])
    s = score_windows(tiny_model, windows)
    assert s[:3].min() - s[3:].max() > 0.5, s
    assert np.ptp(s) > 25 * 2e-2  # 25 times the fp16 tolerance, 10 times the int8 one


def test_this_process_imports_the_checkout():
    import edge_detector
    import export

    for mod in (edge_detector, export):
        assert REPO in Path(mod.__file__).resolve().parents, mod.__file__


def test_subprocesses_import_the_checkout_too(tmp_path):
    """What `edge-detect` and `python -c` children import from a neutral folder: this checkout (editable install)."""
    p = subprocess.run([sys.executable, "-c", "import edge_detector; print(edge_detector.__file__)"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    where = Path(p.stdout.strip()).resolve()
    assert REPO in where.parents, f"children import {where}, not {REPO}: reinstall with `pip install -e .`"
