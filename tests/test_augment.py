"""Tests of export.augment (RawBoost-style waveform augmentation)."""
from __future__ import annotations

import numpy as np
import pytest

from export.augment import (
    RawBoost,
    RawBoostParams,
    convolutive_noise,
    design_bandstop,
    impulsive_noise,
    random_bandstop_cascade,
    stationary_noise,
)
from export.augment import _convolve_same

SR = 16000


def _speechlike(seed: int = 0, n: int = 16000) -> np.ndarray:
    """A few harmonics with a slow envelope, peak about 0.5 (speech-ish, deterministic)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    f0 = rng.uniform(100, 200)
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 12))
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


def _snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    clean = clean.astype(np.float64)
    noise = noisy.astype(np.float64) - clean
    return 10 * np.log10(np.sum(clean**2) / np.sum(noise**2))


def _tone_amplitude(x: np.ndarray, freq: int) -> float:
    # 1 s at 16 kHz: 1 Hz bins, integer frequencies fall on a bin exactly.
    return float(np.abs(np.fft.rfft(x))[freq])


@pytest.mark.parametrize("mode", ["series", "parallel", "convolutive", "impulsive",
                                  "stationary", (1, 2, 3), (3, 1), 5, 8])
def test_shape_dtype_finite(mode) -> None:
    x = _speechlike()
    y = RawBoost(mode, seed=1)(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.all(np.isfinite(y))
    assert not np.array_equal(y, x)
    # Bounded: nothing blows up far beyond the input level.
    assert np.max(np.abs(y)) < 6 * np.max(np.abs(x))


def test_does_not_modify_input_and_accepts_other_dtypes() -> None:
    x = _speechlike()
    before = x.copy()
    RawBoost("series", seed=0)(x)
    np.testing.assert_array_equal(x, before)
    y = RawBoost("series", seed=0)((x * 30000).astype(np.int16))
    assert y.dtype == np.float32 and np.all(np.isfinite(y))


def test_reproducible_with_seed() -> None:
    x = _speechlike()
    a, b = RawBoost("series", seed=7), RawBoost("series", seed=7)
    first = a(x)
    np.testing.assert_array_equal(first, b(x))
    np.testing.assert_array_equal(a(x), b(x))  # the whole sequence matches
    assert not np.array_equal(first, a(x))  # successive calls differ
    assert not np.array_equal(first, RawBoost("series", seed=8)(x))
    c = RawBoost("series", seed=123)
    c.reseed(7)
    np.testing.assert_array_equal(c(x), first)


def test_zero_input_unchanged() -> None:
    zeros = np.zeros(4000, dtype=np.float32)
    y = RawBoost("series", seed=0)(zeros)
    assert y.dtype == np.float32 and y.shape == zeros.shape and not np.any(y)


@pytest.mark.parametrize("n", [1, 2, 7, 65])
def test_short_inputs(n: int) -> None:
    x = np.linspace(-0.5, 0.5, n).astype(np.float32) + 0.1
    for mode in ("series", "parallel"):
        y = RawBoost(mode, seed=0)(x)
        assert y.shape == (n,) and np.all(np.isfinite(y))


def test_stationary_snr_within_range() -> None:
    x = _speechlike(2)
    booster = RawBoost("stationary", seed=3)
    snrs = [_snr_db(x, booster(x)) for _ in range(20)]
    assert min(snrs) >= 10 - 0.05 and max(snrs) <= 40 + 0.05
    assert max(snrs) - min(snrs) > 5  # actually random


def test_stationary_noise_forced_snr() -> None:
    x = _speechlike(4).astype(np.float64)
    y = stationary_noise(x, np.random.default_rng(0), snr_db=17.0)
    assert _snr_db(x, y) == pytest.approx(17.0, abs=1e-6)


def test_impulsive_noise_forced_parameters() -> None:
    x = _speechlike(5).astype(np.float64)
    y = impulsive_noise(x, np.random.default_rng(0), fraction=0.05, snr_db=20.0)
    changed = np.count_nonzero(y != x)
    assert changed <= 800 and changed > 700  # 5 % of 16000, minus exact zeros of u
    assert _snr_db(x, y) == pytest.approx(20.0, abs=1e-6)
    # Signal-dependent: an impulse on a zero sample adds nothing.
    x[:8000] = 0.0
    y = impulsive_noise(x, np.random.default_rng(0), fraction=0.1, snr_db=15.0)
    assert not np.any(y[:8000])


def test_impulsive_gain_is_capped() -> None:
    x = _speechlike(6).astype(np.float64)
    params = RawBoostParams(impulsive_max_gain=2.0)
    y = impulsive_noise(x, np.random.default_rng(0), params, fraction=0.0005, snr_db=10.0)
    assert np.all(np.abs(y) <= 3.0 * np.abs(x) + 1e-12)
    assert _snr_db(x, y) > 10.0


def test_impulsive_snr_at_least_range_minimum() -> None:
    x = _speechlike(7)
    booster = RawBoost("impulsive", seed=1)
    for _ in range(10):
        y = booster(x)
        if not np.array_equal(x, y):
            assert _snr_db(x, y) >= 10 - 0.05


def test_bandstop_frequency_response() -> None:
    h = design_bandstop(3000, 1000, 100, SR)
    assert h.size == 101
    np.testing.assert_allclose(h, h[::-1], atol=1e-15)  # linear phase
    response = np.abs(np.fft.rfft(h, SR))  # 1 Hz resolution
    assert 20 * np.log10(response[3000]) < -40
    assert abs(20 * np.log10(response[0])) < 0.1
    assert abs(20 * np.log10(response[500])) < 0.5
    assert abs(20 * np.log10(response[6000])) < 0.5
    assert design_bandstop(3000, 1000, 11, SR).size == 13  # odd order rounded up


def test_convolutive_attenuates_tone_at_notch() -> None:
    t = np.arange(SR) / SR
    x = 0.4 * np.sin(2 * np.pi * 500 * t) + 0.4 * np.sin(2 * np.pi * 3000 * t)
    y = convolutive_noise(x, np.random.default_rng(0), bands=[(3000.0, 1000.0, 100)])
    before = _tone_amplitude(x, 3000) / _tone_amplitude(x, 500)
    after = _tone_amplitude(y, 3000) / _tone_amplitude(y, 500)
    assert 20 * np.log10(after / before) < -30
    # The peak is put back to the input peak.
    assert np.max(np.abs(y)) == pytest.approx(np.max(np.abs(x)))


def test_random_cascade_ranges() -> None:
    params = RawBoostParams(n_bands=(2, 2), filter_order=(20, 20))
    kernel = random_bandstop_cascade(np.random.default_rng(0), params)
    assert kernel.size == 2 * 20 + 1  # two length-21 filters convolved


@pytest.mark.parametrize("n, m", [(1000, 301), (100, 9), (50, 101), (5000, 1)])
def test_convolve_same_matches_numpy(n: int, m: int) -> None:
    rng = np.random.default_rng(0)
    x, h = rng.standard_normal(n), rng.standard_normal(m)
    y = _convolve_same(x, h)
    assert y.size == n
    if n >= m:
        np.testing.assert_allclose(y, np.convolve(x, h, mode="same"), atol=1e-9)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown RawBoost mode"):
        RawBoost("loud")
    with pytest.raises(ValueError, match="0..8"):
        RawBoost(9)
    with pytest.raises(ValueError, match="steps must be"):
        RawBoost((1, 4))
    with pytest.raises(ValueError, match="1-D"):
        RawBoost(seed=0)(np.zeros((2, 100)))
    with pytest.raises(ValueError, match="NaN or Inf"):
        RawBoost(seed=0)(np.array([0.1, np.nan, 0.2]))
    with pytest.raises(ValueError, match="centre_hz"):
        RawBoostParams(centre_hz=(20.0, 9000.0))
    with pytest.raises(ValueError, match="range"):
        RawBoostParams(stationary_snr_db=(40.0, 10.0))


def test_none_mode_is_identity() -> None:
    x = _speechlike()
    np.testing.assert_array_equal(RawBoost("none", seed=0)(x), x)
    np.testing.assert_array_equal(RawBoost(0, seed=0)(x), x)
    assert repr(RawBoost("series")) == "RawBoost(convolutive+impulsive+stationary, series)"
