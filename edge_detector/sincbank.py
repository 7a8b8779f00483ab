"""The fixed mel-spaced sinc band-pass filter bank of the RawNet2 front end (numpy).

The ASVspoof 2021 RawNet2 baseline does not learn its first layer: it builds band-pass
filters from mel-spaced band edges between 0 Hz and Nyquist, windowed with a Hamming
window, and never stores them in the checkpoint. Both the PyTorch model and the numpy
runtime build them here, so the two can never drift apart.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping, Optional, Sequence

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


def check_sinc_keep(keep: Sequence[int], n_total: int) -> tuple[int, ...]:
    """Validate a kept-band list: strictly increasing indices into the ``n_total`` mel bands.

    Increasing order is required (not just uniqueness) so that one set of kept filters
    has exactly one representation: the stage-1 channel order of a pruned model is the
    order of its kept bands, and a checkpoint, a bundle manifest and the numpy front end
    must all agree on it.
    """
    out = tuple(int(i) for i in keep)
    if int(n_total) < 1:
        raise ValueError(f"sinc band count must be positive, got {n_total}")
    if not out:
        raise ValueError("sinc_keep must keep at least one band")
    if any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"sinc_keep must be strictly increasing, got {list(out)}")
    if out[0] < 0 or out[-1] >= int(n_total):
        raise ValueError(f"sinc_keep indices must lie in [0, {n_total}), got {list(out)}")
    return out


def sinc_filters_subset(
    n_total: int, keep: Sequence[int], kernel_size: int = 1024, sample_rate: int = 16000
) -> np.ndarray:
    """Rows ``keep`` of the ``n_total``-band bank: the filters a pruned model kept.

    The band edges depend on the *original* band count (mel spacing over 0..Nyquist),
    so a model whose sinc filter ``i`` was pruned away must keep using the other filters
    of the original ``n_total``-band grid, not a fresh ``len(keep)``-band grid (which
    would move every band edge and silently change what every stage-1 channel sees).
    Returns a new read-only ``[len(keep), odd(kernel_size)]`` float32 array.
    """
    idx = check_sinc_keep(keep, n_total)
    bank = np.ascontiguousarray(sinc_filters(n_total, kernel_size, sample_rate)[list(idx)])
    bank.setflags(write=False)
    return bank


def sinc_filters_for_config(config: Mapping[str, Any]) -> np.ndarray:
    """The filter bank a RawNet2 ``config`` (a checkpoint's or a bundle manifest's
    ``model.config`` dict) was built with, pruned or not.

    Reads ``sinc_filters``, ``sinc_kernel``, ``sample_rate`` and, for a model whose sinc
    filters were pruned, ``sinc_total`` (the original band count) and ``sinc_keep`` (the
    kept band indices). Every consumer of a model's front end (PyTorch, a numpy FFT
    front end, the bundle) should call this rather than :func:`sinc_filters` directly.
    """
    n = int(config.get("sinc_filters", 20))
    kernel = int(config.get("sinc_kernel", 1024))
    sr = int(config.get("sample_rate", 16000))
    keep: Optional[Sequence[int]] = config.get("sinc_keep")
    if keep is None:
        return sinc_filters(n, kernel, sr)
    total = config.get("sinc_total")
    if total is None:
        raise ValueError("a config with sinc_keep must also give sinc_total (the original band count)")
    if len(keep) != n:
        raise ValueError(f"sinc_keep has {len(keep)} bands but sinc_filters is {n}")
    return sinc_filters_subset(int(total), keep, kernel, sr)
