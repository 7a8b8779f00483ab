"""Tests of edge_detector.resample against analytic tones and scipy.signal.resample_poly.

Numbers measured when these tests were written (16 kHz target, float32 output):

* 1 kHz tone, max |error| vs the analytic tone (edges ignored), amplitude 1:
  8000: 3.4e-6, 11025: 3.0e-6, 12345: 3.7e-6, 7999: 3.4e-6, 22050: 4.4e-6,
  24000: 3.9e-6, 44100: 2.7e-6, 48000: 2.6e-6.  7 kHz tone (0.875 x Nyquist): <= 2.0e-5.
* Stop band (RMS in / RMS out), 48000 and 44100 sources: 8.2 kHz 94.9 dB,
  11 kHz 106.9-107.1 dB, 15 kHz 116.4-117.3 dB. Filter alone: >= 89.8 dB from 8 kHz up.
* vs scipy.signal.resample_poly (default filter), white noise: Welch PSD within 0.018 dB
  below 0.8 x the lower Nyquist; noise band-limited to 0.75 x Nyquist: correlation
  0.9999997, relative RMS difference ~1e-3 (scipy's own Kaiser beta=5 ripple).
* vs resample_poly given this module's own filter: max |difference| 1.2e-7 (float32).
* Ratios that do not reduce (7999, 44101): taps by linear interpolation in a 2048-row table,
  within 6e-6 of the exact taps' output (white noise, 7999 Hz), 1.2e-7 when forced on 44.1 kHz.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from edge_detector import resample as rs
from edge_detector.resample import resample

TARGET = 16000
RATES = [8000, 11025, 12345, 7999, 22050, 24000, 44100, 48000]
EDGE = 320  # output samples ignored at each end (20 ms >> the 3.6 ms kernel half-width)


def _ratio(orig: int, target: int = TARGET) -> tuple[int, int]:
    g = math.gcd(orig, target)
    return target // g, orig // g


def _tone(sr: int, freq: float, n: int, phase: float = 0.3) -> np.ndarray:
    return np.cos(2 * np.pi * freq * np.arange(n) / sr + phase)


def _rms(v: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(v, dtype=np.float64))))


# --- analytic tones ---------------------------------------------------------------------


@pytest.mark.parametrize("sr", RATES)
def test_1khz_tone_matches_analytic_tone(sr):
    """Amplitude *and* phase: zero group delay. Measured max error 1.8e-6 .. 4.4e-6."""
    x = _tone(sr, 1000.0, sr // 4)
    y = resample(x, sr, TARGET)
    ref = _tone(TARGET, 1000.0, len(y))
    err = np.abs(y - ref)[EDGE:-EDGE].max()
    print(f"{sr} Hz: 1 kHz max abs error {err:.2e}")
    assert err < 1e-4


@pytest.mark.parametrize("sr", [22050, 44100, 48000])
def test_passband_edge_tone(sr):
    """7 kHz = 0.875 x Nyquist, inside the flat band. Measured error <= 2.0e-5 (0.0002 dB)."""
    x = _tone(sr, 7000.0, sr // 4)
    y = resample(x, sr, TARGET)
    err = np.abs(y - _tone(TARGET, 7000.0, len(y)))[EDGE:-EDGE].max()
    assert err < 1e-4  # 0.1 dB would be 1.2e-2


@pytest.mark.parametrize("sr", [44100, 48000])
@pytest.mark.parametrize("freq", [8200.0, 11000.0, 15000.0])
def test_stopband_rejection(sr, freq):
    """Tones above 8 kHz would alias into the band. Measured 94.9 / 107 / 117 dB."""
    x = _tone(sr, freq, sr // 4)
    y = resample(x, sr, TARGET)
    rejection = 20 * np.log10(_rms(x) / _rms(y[EDGE:-EDGE]))
    print(f"{sr} Hz: {freq:.0f} Hz rejected by {rejection:.1f} dB")
    assert rejection >= 80.0


def test_impulse_lands_at_the_same_time_and_is_symmetric():
    x = np.zeros(44100)
    x[4410] = 1.0  # 0.1 s
    y = resample(x, 44100, TARGET).astype(np.float64)
    assert int(np.argmax(y)) == 1600  # 0.1 s
    np.testing.assert_allclose(y[1600 - 50 : 1600], y[1601 : 1651][::-1], atol=1e-7)


@pytest.mark.parametrize("up,down", [(2, 1), (1, 3), (160, 441)])
def test_filter_meets_spec(up, down):
    """The prototype itself: ripple <= 0.1 dB up to 0.9 x, >= 80 dB from 1.0 x lower Nyquist."""
    h = rs._prototype(up, down)
    n_fft = 1 << 20
    mag = np.abs(np.fft.rfft(h / up, n_fft))
    f = np.arange(mag.size) * up / n_fft  # cycles per input sample
    nyquist = 0.5 * min(1.0, up / down)
    ripple_db = np.abs(20 * np.log10(mag[f <= 0.9 * nyquist])).max()
    stop_db = -20 * np.log10(mag[f >= nyquist].max())
    assert ripple_db <= 0.1 and ripple_db < 1e-3  # measured 0.0003 dB
    assert stop_db >= 80.0  # measured 89.8 dB


def test_window_table_matches_numpy_kaiser():
    d = rs._design(1, 3)
    n = 401
    ref = np.kaiser(n, d.beta)[1:-1]
    tau = d.half_width * (2 * np.arange(1, n - 1) / (n - 1) - 1)
    np.testing.assert_allclose(rs._kaiser(tau, d), ref, rtol=0, atol=1e-8)
    assert rs._kaiser(np.array([d.half_width * 1.001, -d.half_width * 1.5]), d).max() == 0.0


# --- scipy reference (dev-only dependency) ---------------------------------------------


@pytest.mark.parametrize("sr", RATES + [32000])
def test_same_as_resample_poly_with_our_filter(sr):
    """Same filter in scipy's polyphase code: only float32 rounding may differ (~1.2e-7)."""
    signal = pytest.importorskip("scipy.signal")
    up, down = _ratio(sr)
    x = np.random.default_rng(sr).standard_normal(1500)
    ref = signal.resample_poly(x, up, down, window=rs._prototype(up, down) / up)
    y = resample(x, sr, TARGET)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-6)  # edges included


@pytest.mark.parametrize("sr", RATES)
def test_white_noise_close_to_resample_poly(sr):
    """Measured: PSD within 0.018 dB; band-limited correlation 0.9999997, rel. RMS ~1e-3."""
    signal = pytest.importorskip("scipy.signal")
    up, down = _ratio(sr)
    nyquist = min(sr, TARGET) / 2
    x = np.random.default_rng(7).standard_normal(sr)
    y, ref = resample(x, sr, TARGET), signal.resample_poly(x, up, down)

    f, p_ours = signal.welch(y, TARGET, nperseg=256)
    _, p_ref = signal.welch(ref, TARGET, nperseg=256)
    band = f <= 0.8 * nyquist
    assert np.abs(10 * np.log10(p_ours[band] / p_ref[band])).max() < 0.05

    spec = np.fft.rfft(x)
    spec[np.fft.rfftfreq(x.size, 1 / sr) > 0.75 * nyquist] = 0
    xb = np.fft.irfft(spec, x.size)
    a, b = resample(xb, sr, TARGET)[EDGE:-EDGE], signal.resample_poly(xb, up, down)[EDGE:-EDGE]
    assert np.corrcoef(a, b)[0, 1] > 0.99999
    assert _rms(a - b) / _rms(b) < 3e-3  # scipy's default filter ripples ~2e-3


# --- contract ---------------------------------------------------------------------------


@pytest.mark.parametrize("sr", RATES + [32000, 16001])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 100, 441, 1001])
def test_length_rule(sr, n):
    up, down = _ratio(sr)
    y = resample(np.ones(n), sr, TARGET)
    assert y.shape == (-(-n * up // down),)
    assert y.dtype == np.float32


def test_dtypes_and_identity():
    x64 = np.random.default_rng(3).standard_normal(500)
    for x in (x64, x64.astype(np.float32), (x64 * 1000).astype(np.int16)):
        assert resample(x, 44100, TARGET).dtype == np.float32
        same = resample(x, TARGET, TARGET)
        assert same.dtype == np.float32
        np.testing.assert_array_equal(same, x.astype(np.float32))


def test_int16_input_is_resampled_by_value():
    x = (np.random.default_rng(4).standard_normal(2000) * 3000).astype(np.int16)
    as_float = resample(x.astype(np.float64), 48000, TARGET)
    np.testing.assert_array_equal(resample(x, 48000, TARGET), as_float)


def test_empty_input():
    for sr in (TARGET, 44100, 8000):
        y = resample(np.zeros(0, dtype=np.float32), sr, TARGET)
        assert y.shape == (0,) and y.dtype == np.float32


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        resample(np.zeros((2, 100)), 44100, TARGET)
    for bad in (0, -16000, 44100.0):
        with pytest.raises(ValueError):
            resample(np.zeros(100), bad, TARGET)


# --- chunking and the on-the-fly path ------------------------------------------------------


def test_long_input_equals_short_reference():
    """20 s at 44.1 kHz runs through ~1500 chunks; any window of it must equal the
    resampling of a short excerpt (cut at a multiple of `down`, away from its edges)."""
    sr = 44100
    up, down = _ratio(sr)  # 160 / 441
    x = np.random.default_rng(5).standard_normal(20 * sr).astype(np.float32)
    y = resample(x, sr, TARGET)
    start = 3001 * down  # input sample; output sample start*up/down exactly
    excerpt = x[start : start + 2 * sr]
    short = resample(excerpt, sr, TARGET)
    o = start * up // down
    np.testing.assert_array_equal(y[o + EDGE : o + short.size - EDGE], short[EDGE:-EDGE])
    # and the very last outputs, where the input runs out
    tail_start = (x.size // down - 20) * down
    tail = resample(x[tail_start:], sr, TARGET)
    np.testing.assert_array_equal(y[-(tail.size - EDGE) :], tail[EDGE:])


def test_chunk_size_does_not_change_the_result(monkeypatch):
    x = np.random.default_rng(6).standard_normal(22050)
    ref = resample(x, 22050, TARGET)
    monkeypatch.setattr(rs, "_CHUNK_ELEMENTS", 7 * rs._design(320, 441).taps)  # 7 outputs
    np.testing.assert_array_equal(resample(x, 22050, TARGET), ref)


def test_interpolated_taps_match_the_exact_table(monkeypatch):
    """Ratios whose `up` is too large to tabulate (7999 -> 16000 has up=16000) read the kernel from a
    fixed table of INTERP_PHASES rows by linear interpolation. Forced on 44.1 kHz, it must give the
    exact-table samples within 1e-6 (measured 1.2e-7: float32 rounding)."""
    x = np.random.default_rng(8).standard_normal(10000)
    assert rs._filter_table(160, 441) is not None
    assert rs._filter_table(16000, 7999) is None
    ref = resample(x, 44100, TARGET)
    rs._filter_table.cache_clear()
    monkeypatch.setattr(rs, "_TABLE_MAX_ENTRIES", 0)
    try:
        assert rs._filter_table(160, 441) is None
        np.testing.assert_allclose(resample(x, 44100, TARGET), ref, rtol=0, atol=1e-6)
    finally:
        rs._filter_table.cache_clear()


@pytest.mark.parametrize("sr", [44101, 47999, 7999])
def test_non_reducing_ratio_is_as_accurate_and_computes_no_taps_per_output(sr, monkeypatch):
    """44101 -> 16000 (up = 16000, down = 44101): same tone accuracy and stop band as 44100, and after the
    fixed-size table is built no kernel is evaluated per output (the cost per sample does not depend on
    how the ratio reduces)."""
    up, down = _ratio(sr)
    assert up * rs._design(up, down).taps > rs._TABLE_MAX_ENTRIES  # the interpolated path
    rows, slopes = rs._interp_table(up, down)
    assert rows.shape == slopes.shape == (rs.INTERP_PHASES, rs._design(up, down).taps)

    def no_taps(*a, **k):
        raise AssertionError("kernel evaluated per output")

    monkeypatch.setattr(rs, "_kernel_at", no_taps)
    monkeypatch.setattr(rs, "_kernel_rows", no_taps)
    y = resample(_tone(sr, 1000.0, sr // 4), sr, TARGET)
    assert np.abs(y - _tone(TARGET, 1000.0, len(y)))[EDGE:-EDGE].max() < 1e-4  # measured <= 6e-6
    if sr > TARGET:
        for freq in (8200.0, 11000.0):
            z = resample(_tone(sr, freq, sr // 4), sr, TARGET)
            assert 20 * np.log10(_rms(_tone(sr, freq, sr // 4)) / _rms(z[EDGE:-EDGE])) >= 80.0
