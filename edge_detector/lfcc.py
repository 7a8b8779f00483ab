"""LFCC front end in numpy, configured as the ASVspoof 2021 LA LFCC-GMM baseline.

The baseline (asvspoof-challenge/2021, ``LA/Baseline-LFCC-GMM``: ``matlab/LFCC/lfcc_bp.m``
called from ``LFCC_GMM_ASVspoof_2021_baseline.m``, and the Python port
``python/LFCC_pipeline.py`` + ``python/gmm.py``) computes, per utterance:

1. frames of 30 ms (480 samples at 16 kHz) every 15 ms (240 samples), MATLAB
   ``buffer(x, 480, 240, 'nodelay')``: the first frame starts at sample 0 and the last,
   incomplete frame is zero-padded;
2. a symmetric Hamming window (MATLAB ``hamming(480)`` = ``numpy.hamming(480)``);
3. the power spectrum ``|FFT_1024|^2``;
4. 70 triangular filters (``trimf``) with edges ``linspace(0, 4000, 72)`` Hz on the FFT bins
   from 0 to 4 kHz (LA configuration: ``low_freq = 0``, ``high_freq = 4000``);
5. ``log10(filter energies + eps)`` with eps = 2.2204e-16 (MATLAB ``eps``);
6. the orthonormal DCT-II over the 70 log energies (MATLAB ``dct``), first 20 coefficients
   kept, c0 included and not replaced by the frame energy (the Python port's
   ``num_ceps=20``; the MATLAB script's comment says 19 "including 0'th", its README
   "19 coefficients + 0th": this module follows the 20 = 19 + c0 reading and DESIGN §3);
7. deltas and delta-deltas with the HTK regression formula over +-1 frame, edges
   replicated: ``d[t] = (c[t+1] - c[t-1]) / 2`` (``Deltas(x, 1)`` in ``lfcc_bp.m``; the
   Python port omits the division by 2, a scale the GMMs would absorb);

giving ``[frames, 60]`` (static, delta, delta-delta). No pre-emphasis, no liftering, no
mean/variance normalisation (the baseline has none). numpy only: part of the runtime.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

import numpy as np

from .errors import BundleError

LFCC_NUMPY = "lfcc-numpy"
#: MATLAB ``eps`` (float64 machine epsilon), the floor inside log10 in the baseline.
LOG_FLOOR = 2.220446049250313e-16


@dataclass(frozen=True)
class LFCCSpec:
    """The parameters a bundle states in ``manifest["frontend"]`` (type ``lfcc-numpy``)."""

    sample_rate: int = 16000
    frame_length: int = 480  # samples (30 ms at 16 kHz)
    hop: int = 240  # samples (15 ms)
    n_fft: int = 1024
    filters: int = 70
    low_hz: float = 0.0
    high_hz: float = 4000.0
    cepstra: int = 20  # c0 .. c19
    delta_width: int = 1  # +-frames of the delta regression
    type: str = LFCC_NUMPY

    def __post_init__(self) -> None:
        for name in ("sample_rate", "frame_length", "hop", "n_fft", "filters", "cepstra", "delta_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise BundleError(f"frontend.{name} must be a positive integer, got {value!r}")
        if self.type != LFCC_NUMPY:
            raise BundleError(f"LFCCSpec is the {LFCC_NUMPY!r} front end, not {self.type!r}")
        if self.n_fft < self.frame_length:
            raise BundleError(f"frontend.n_fft {self.n_fft} is shorter than the {self.frame_length}-sample frame")
        if self.hop > self.frame_length:
            raise BundleError(f"frontend.hop {self.hop} exceeds frontend.frame_length {self.frame_length}")
        if not 0.0 <= float(self.low_hz) < float(self.high_hz) <= self.sample_rate / 2:
            raise BundleError(f"frontend band {self.low_hz}-{self.high_hz} Hz must lie in 0-{self.sample_rate / 2} Hz")
        if self.cepstra > self.filters:
            raise BundleError(f"frontend.cepstra {self.cepstra} exceeds frontend.filters {self.filters}")

    @property
    def dims(self) -> int:
        """Feature dimension: static + delta + delta-delta."""
        return 3 * int(self.cepstra)

    def n_frames(self, samples: int) -> int:
        """Frames of a ``samples``-long signal (MATLAB ``buffer`` with 'nodelay': last frame zero-padded)."""
        overlap = self.frame_length - self.hop
        return max(1, -(-(int(samples) - overlap) // self.hop))

    def to_manifest(self) -> dict[str, Any]:
        return {"type": self.type, "sample_rate": int(self.sample_rate), "frame_length": int(self.frame_length),
                "hop": int(self.hop), "n_fft": int(self.n_fft), "window": "hamming (symmetric)",
                "filters": int(self.filters), "low_hz": float(self.low_hz), "high_hz": float(self.high_hz),
                "cepstra": int(self.cepstra), "c0": "kept (no energy replacement)", "log": "log10(x + 2.2204e-16)",
                "dct": "orthonormal DCT-II", "delta_width": int(self.delta_width),
                "features": "static, delta, delta-delta", "dims": self.dims}

    @classmethod
    def from_manifest(cls, entry: Mapping[str, Any]) -> "LFCCSpec":
        """Parse ``manifest["frontend"]``; BundleError naming what is missing or malformed."""
        if not isinstance(entry, Mapping):
            raise BundleError(f"field 'frontend' must be an object, got {type(entry).__name__}")
        keys = ("sample_rate", "frame_length", "hop", "n_fft", "filters", "low_hz", "high_hz", "cepstra", "delta_width")
        missing = [k for k in keys if k not in entry]
        if missing:
            raise BundleError(f"field 'frontend' lacks {missing}")
        for k in ("low_hz", "high_hz"):
            if isinstance(entry[k], bool) or not isinstance(entry[k], (int, float)):
                raise BundleError(f"frontend.{k} must be a number, got {entry[k]!r}")
        return cls(**{k: entry[k] for k in keys}, type=entry.get("type", LFCC_NUMPY))


def check_lfcc(spec: LFCCSpec, manifest: Mapping[str, Any], where: str) -> None:
    """The LFCC front end fits the manifest: same sample rate, a window of at least one frame."""
    if int(spec.sample_rate) != int(manifest["audio"]["sample_rate"]):
        raise BundleError(f"{where}: frontend.sample_rate {spec.sample_rate} differs from audio.sample_rate "
                          f"{manifest['audio']['sample_rate']}")
    if int(manifest["windows"]["window"]) < spec.frame_length:
        raise BundleError(f"{where}: window of {manifest['windows']['window']} samples is shorter than one "
                          f"{spec.frame_length}-sample LFCC frame")


@lru_cache(maxsize=8)
def linear_filterbank(filters: int, n_fft: int, sample_rate: int, low_hz: float, high_hz: float) -> np.ndarray:
    """Triangular filters on equally spaced edges, float64 ``[bins, filters]`` (read-only).

    ``bins`` are the FFT bins from the one nearest ``low_hz`` to the one nearest ``high_hz``
    (as ``lfcc_bp.m``); filter ``i`` rises from edge ``i`` to 1 at edge ``i + 1`` and falls
    to 0 at edge ``i + 2`` (MATLAB ``trimf``), edges = ``linspace(low_hz, high_hz, filters + 2)``.
    """
    freqs = (sample_rate / 2) * np.linspace(0.0, 1.0, n_fft // 2 + 1)
    lo, hi = int(np.argmin(np.abs(freqs - low_hz))), int(np.argmin(np.abs(freqs - high_hz)))
    f = freqs[lo : hi + 1][:, None]
    edges = np.linspace(low_hz, high_hz, filters + 2)
    a, b, c = edges[:-2][None, :], edges[1:-1][None, :], edges[2:][None, :]
    bank = np.maximum(np.minimum((f - a) / (b - a), (c - f) / (c - b)), 0.0)
    bank.setflags(write=False)
    return bank


@lru_cache(maxsize=8)
def dct_matrix(n: int, keep: int) -> np.ndarray:
    """Orthonormal DCT-II basis, float64 ``[n, keep]``: ``cepstra = log_energies @ dct_matrix``.

    ``C[k, j] = s_j cos(pi (2k + 1) j / (2n))`` with ``s_0 = sqrt(1/n)``, ``s_j = sqrt(2/n)``
    (the definition of MATLAB ``dct`` and ``scipy.fft.dct(type=2, norm='ortho')``).
    """
    k = np.arange(n)[:, None]
    j = np.arange(keep)[None, :]
    basis = np.cos(np.pi * (2 * k + 1) * j / (2 * n)) * np.sqrt(2.0 / n)
    basis[:, 0] = np.sqrt(1.0 / n)
    basis.setflags(write=False)
    return basis


def deltas(x: np.ndarray, width: int = 1) -> np.ndarray:
    """HTK regression deltas along axis 0 of ``[frames, dims]``, edge frames replicated.

    ``d[t] = sum_{k=1..w} k (x[t+k] - x[t-k]) / (2 sum_{k=1..w} k^2)`` (HTK Book 3.4, §5.9).
    """
    n = len(x)
    padded = np.concatenate([np.repeat(x[:1], width, axis=0), x, np.repeat(x[-1:], width, axis=0)])
    out = np.zeros_like(x)
    for k in range(1, width + 1):
        out += k * (padded[width + k : width + k + n] - padded[width - k : width - k + n])
    return out / (2.0 * sum(k * k for k in range(1, width + 1)))


class LFCCFrontEnd:
    """Callable: one 1-D float waveform → float64 ``[frames, 60]`` LFCC features (see module docstring).

    Computed in float64 (the GMM log-likelihoods are sums over 60 dims and hundreds of
    frames; float64 keeps the device's scores equal to the training side's to ~1e-12).

    Scratch arrays (zero-padded frames, spectrum, power, filter energies: ~4 MB for a
    64 600-sample window) are kept per thread and reused: allocating them afresh for every
    window made it three times slower (glibc hands such blocks back to the kernel, and
    the next call pays a page fault per 4 KiB: measured 4.6 ms instead of 1.5 ms of CPU
    per window, as for :class:`edge_detector.frontend.SincFFTFrontEnd`).
    """

    def __init__(self, spec: LFCCSpec) -> None:
        self.spec = spec
        self.window = np.hamming(spec.frame_length)
        self.bank = linear_filterbank(int(spec.filters), int(spec.n_fft), int(spec.sample_rate),
                                      float(spec.low_hz), float(spec.high_hz))
        self.dct = dct_matrix(int(spec.filters), int(spec.cepstra))
        self._local = threading.local()

    def _workspace(self, n_frames: int) -> dict[str, np.ndarray]:
        ws = getattr(self._local, "ws", None)
        if ws is not None and ws["frames"].shape[0] == n_frames:
            return ws
        s, bins = self.spec, self.bank.shape[0]
        ws = {"frames": np.zeros((n_frames, int(s.n_fft))),  # columns past frame_length stay zero
              "spectrum": np.empty((n_frames, int(s.n_fft) // 2 + 1), dtype=np.complex128),
              "power": np.empty((n_frames, bins)), "square": np.empty((n_frames, bins)),
              "energies": np.empty((n_frames, int(s.filters)))}
        self._local.ws = ws
        return ws

    def _fill_frames(self, x: np.ndarray, out: np.ndarray) -> None:
        """Windowed frames into ``out[:, :frame_length]`` (the last ones zero-padded as MATLAB ``buffer``)."""
        s = self.spec
        L, hop, n = int(s.frame_length), int(s.hop), out.shape[0]
        full = 0 if len(x) < L else min(n, (len(x) - L) // hop + 1)
        if full:
            view = np.lib.stride_tricks.sliding_window_view(x, L)[::hop][:full]
            np.multiply(view, self.window, out=out[:full, :L])
        for i in range(full, n):  # incomplete frames at the end
            seg = x[i * hop : i * hop + L]
            out[i, :L] = 0.0
            out[i, : len(seg)] = seg * self.window[: len(seg)]

    def frames(self, x: np.ndarray) -> np.ndarray:
        """``[frames, frame_length]`` float64, the last one zero-padded (MATLAB ``buffer`` 'nodelay')."""
        s = self.spec
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        n = s.n_frames(len(x))
        padded = np.zeros((n - 1) * s.hop + s.frame_length)
        padded[: min(len(x), len(padded))] = x[: len(padded)]
        return np.lib.stride_tricks.sliding_window_view(padded, s.frame_length)[:: s.hop][:n]

    def static(self, x: np.ndarray) -> np.ndarray:
        """Static cepstra ``[frames, cepstra]`` float64 (steps 1-6)."""
        x = np.asarray(x).reshape(-1)
        ws = self._workspace(self.spec.n_frames(len(x)))
        self._fill_frames(x, ws["frames"])
        try:  # numpy >= 2: out= avoids a 2 MB allocation per window
            spectrum = np.fft.rfft(ws["frames"], axis=-1, out=ws["spectrum"])
        except TypeError:  # numpy 1.x
            spectrum = np.fft.rfft(ws["frames"], axis=-1)
        bins = self.bank.shape[0]
        power, square = ws["power"], ws["square"]
        np.multiply(spectrum.real[:, :bins], spectrum.real[:, :bins], out=power)
        np.multiply(spectrum.imag[:, :bins], spectrum.imag[:, :bins], out=square)
        power += square
        energies = np.matmul(power, self.bank, out=ws["energies"])
        energies += LOG_FLOOR
        np.log10(energies, out=energies)
        return energies @ self.dct

    def __call__(self, x: np.ndarray) -> np.ndarray:
        c = self.static(x)
        d = deltas(c, int(self.spec.delta_width))
        dd = deltas(d, int(self.spec.delta_width))
        return np.concatenate([c, d, dd], axis=1)
