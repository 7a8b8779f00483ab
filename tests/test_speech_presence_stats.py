"""The speech check's percentile and median: numpy's results bit for bit, without importing numpy.ma."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from edge_detector.speech_presence import _median, _percentile


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 64, 257, 400, 401])
def test_percentile_equals_numpy_bit_for_bit(n):
    rng = np.random.default_rng(n)
    for trial in range(20):
        a = rng.normal(size=n) * rng.uniform(0.1, 100) - rng.uniform(0, 100)  # like frame levels in dB
        if trial % 4 == 0:
            a = np.round(a)  # ties
        for q in (0, 10, 33.3, 50, 90, 95, 100):
            assert _percentile(a, q) == np.percentile(a, q), (n, trial, q)
    assert np.isnan(_percentile(np.array([1.0, np.nan, 2.0]), 50))
    with pytest.raises(ValueError):
        _percentile(np.zeros(0), 50)


@pytest.mark.parametrize("n", [1, 2, 3, 6, 13, 270])
def test_median_equals_numpy_bit_for_bit(n):
    rng = np.random.default_rng(100 + n)
    for dtype in (np.float64, np.float32):
        a = (rng.normal(size=n) * 30).astype(dtype)
        m = _median(a)
        assert m == np.median(a) and m.dtype == np.median(a).dtype
        b = (rng.normal(size=(n, 12)) * 3).astype(dtype)  # frames x cepstral coefficients
        assert np.array_equal(_median(b, axis=0), np.median(b, axis=0))
        b[n // 2, 4] = np.nan
        got, want = _median(b, axis=0), np.median(b, axis=0)
        assert np.array_equal(got, want, equal_nan=True) and np.isnan(got[4]) and np.isfinite(got[3])


def test_speech_check_does_not_import_numpy_ma():
    prog = ("import sys\n"
            "from edge_detector.demo_audio import synthesize_vowels\n"
            "from edge_detector.speech_presence import check_speech\n"
            "check_speech(synthesize_vowels(4.5, seed=3), 16000)\n"
            "print('numpy.ma' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
