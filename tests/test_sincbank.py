"""The fixed mel sinc filter bank (edge_detector/sincbank.py) against the mel formula by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edge_detector.sincbank import mel_band_edges, odd_kernel_size, sinc_filters

SR = 16000


def mel(f_hz: float) -> float:
    return 2595.0 * math.log10(1.0 + f_hz / 700.0)


def inverse_mel(m: float) -> float:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def hand_edges(n_filters: int = 20, sr: int = SR) -> list[float]:
    """n+1 edges equally spaced in mel from mel(0) = 0 to mel(Nyquist)."""
    top = mel(sr / 2)
    return [inverse_mel(top * i / n_filters) for i in range(n_filters + 1)]


def test_mel_formula_values():
    assert mel(0.0) == 0.0
    assert mel(700.0) == pytest.approx(2595.0 * math.log10(2.0))
    assert mel(8000.0) == pytest.approx(2840.02, abs=0.01)


def test_band_edges_match_the_mel_formula():
    edges = mel_band_edges(20, SR)
    expected = hand_edges(20)
    assert edges.shape == (21,)
    np.testing.assert_allclose(edges, expected, rtol=1e-12, atol=1e-9)
    assert edges[0] == pytest.approx(0.0, abs=1e-9) and edges[-1] == pytest.approx(8000.0)
    # equally spaced in mel, not in Hz
    mels = [mel(f) for f in edges]
    np.testing.assert_allclose(np.diff(mels), mel(8000.0) / 20, rtol=1e-9)
    assert np.diff(edges)[0] < np.diff(edges)[-1] / 5


def test_other_filter_counts():
    np.testing.assert_allclose(mel_band_edges(8, SR), hand_edges(8), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(mel_band_edges(70, SR), hand_edges(70), rtol=1e-12, atol=1e-9)


def test_kernel_1024_becomes_1025_taps():
    assert odd_kernel_size(1024) == 1025
    assert odd_kernel_size(129) == 129
    assert sinc_filters(20, 1024, SR).shape == (20, 1025)
    assert sinc_filters(20, 1024, SR).dtype == np.float32


def test_filters_are_hand_built_hamming_windowed_band_passes():
    bank = sinc_filters(20, 1024, SR).astype(np.float64)
    edges = hand_edges(20)
    k = 1025
    t = np.arange(k) - (k - 1) / 2
    hamming = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(k) / (k - 1))
    for i in range(20):
        lo, hi = edges[i], edges[i + 1]
        ideal = (2 * hi / SR) * np.sinc(2 * hi * t / SR) - (2 * lo / SR) * np.sinc(2 * lo * t / SR)
        np.testing.assert_allclose(bank[i], hamming * ideal, atol=1e-7)


def test_filters_are_symmetric():
    bank = sinc_filters(20, 1024, SR)
    np.testing.assert_array_equal(bank, bank[:, ::-1])


def test_each_filter_peaks_inside_its_band():
    bank = sinc_filters(20, 1024, SR).astype(np.float64)
    edges = mel_band_edges(20, SR)
    nfft = 1 << 16
    freqs = np.fft.rfftfreq(nfft, 1.0 / SR)
    for i, h in enumerate(bank):
        mag = np.abs(np.fft.rfft(h, nfft))
        peak = freqs[int(np.argmax(mag))]
        assert edges[i] <= peak <= edges[i + 1], (i, peak, edges[i], edges[i + 1])
        # pass band near unit gain, far stop band strongly attenuated
        centre = 0.5 * (edges[i] + edges[i + 1])
        assert 0.5 < mag[int(round(centre * nfft / SR))] < 1.1
        far = (freqs < edges[i] - 300) | (freqs > edges[i + 1] + 300)
        assert mag[far].max() < 0.01 * mag.max()


def test_bank_is_read_only_and_is_what_the_model_uses():
    bank = sinc_filters(20, 1024, SR)
    with pytest.raises(ValueError):
        bank[0, 0] = 1.0
    torch = pytest.importorskip("torch")
    from export.rawnet2 import RawNet2

    model_bank = RawNet2().sinc.filters.squeeze(1).numpy()
    np.testing.assert_array_equal(model_bank, bank)
    assert "sinc.filters" not in RawNet2().state_dict()
    del torch
