"""The fixed mel-spaced sinc band-pass filter bank of the RawNet2 front end (numpy).

The ASVspoof 2021 RawNet2 baseline does not learn its first layer: it builds band-pass
filters from mel-spaced band edges between 0 Hz and Nyquist, windowed with a Hamming
window, and never stores them in the checkpoint. Both the PyTorch model and the numpy
runtime build them here, so the two can never drift apart.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray | float:
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray | float:
    return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


def odd_kernel_size(kernel_size: int) -> int:
    """The baseline config says 1024 taps; its code adds one to make the filter symmetric."""
    return kernel_size if kernel_size % 2 == 1 else kernel_size + 1


def mel_band_edges(n_filters: int, sample_rate: int = 16000) -> np.ndarray:
    """``n_filters + 1`` band edges in Hz, equally spaced on the mel scale over 0..Nyquist."""
    top = hz_to_mel(sample_rate // 2)
    return np.asarray(mel_to_hz(np.linspace(0.0, top, n_filters + 1)), dtype=np.float64)


@lru_cache(maxsize=8)
def _sinc_filters_cached(n_filters: int, kernel_size: int, sample_rate: int) -> np.ndarray:
    k = odd_kernel_size(kernel_size)
    edges = mel_band_edges(n_filters, sample_rate)
    t = np.arange(-(k - 1) / 2, (k - 1) / 2 + 1, dtype=np.float64)
    window = np.hamming(k)
    bank = np.empty((n_filters, k), dtype=np.float64)
    for i in range(n_filters):
        f_low, f_high = edges[i], edges[i + 1]
        high = (2 * f_high / sample_rate) * np.sinc(2 * f_high * t / sample_rate)
        low = (2 * f_low / sample_rate) * np.sinc(2 * f_low * t / sample_rate)
        bank[i] = window * (high - low)
    bank = bank.astype(np.float32)
    bank.setflags(write=False)
    return bank


def sinc_filters(n_filters: int = 20, kernel_size: int = 1024, sample_rate: int = 16000) -> np.ndarray:
    """``[n_filters, odd(kernel_size)]`` float32 band-pass impulse responses (read-only)."""
    return _sinc_filters_cached(int(n_filters), int(kernel_size), int(sample_rate))
