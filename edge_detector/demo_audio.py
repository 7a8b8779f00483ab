"""A demo recording the project can make itself: formant-synthesised vowels.

The README's first command needs audio without a download. A source-filter synthesiser
(glottal pulse train with jitter and shimmer through vowel formant resonators) gives a
speech-like, *synthetic* signal: a working detector should not call it a live human, so
it doubles as a smoke test of the reject path. Numpy only.
"""
from __future__ import annotations

import numpy as np

# (F1, F2, F3) in Hz for a few vowels (adult male averages).
VOWELS = {"a": (730, 1090, 2440), "i": (270, 2290, 3010), "u": (300, 870, 2240), "e": (530, 1840, 2480),
          "o": (570, 840, 2410)}


def _resonator(x: np.ndarray, freq: float, bw: float, sr: int) -> np.ndarray:
    """Two-pole resonator (direct form), unit gain at DC normalised away."""
    r = np.exp(-np.pi * bw / sr)
    a1, a2 = -2 * r * np.cos(2 * np.pi * freq / sr), r * r
    y = np.zeros_like(x)
    y1 = y2 = 0.0
    g = 1 + a1 + a2
    for n in range(len(x)):
        yn = g * x[n] - a1 * y1 - a2 * y2
        y[n] = yn
        y2, y1 = y1, yn
    return y


def synthesize_vowels(seconds: float = 5.0, sr: int = 16000, seed: int = 0, f0: float = 115.0) -> np.ndarray:
    """A sequence of vowels with pauses, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    out = np.zeros(n, dtype=np.float64)
    pos = int(0.3 * sr)
    keys = list(VOWELS)
    while pos < n - int(0.4 * sr):
        dur = int(rng.uniform(0.25, 0.5) * sr)
        period_pos = 0.0
        src = np.zeros(dur)
        t = 0
        while t < dur:
            f = f0 * (1 + 0.08 * np.sin(2 * np.pi * 3 * (pos + t) / sr)) * (1 + rng.normal(0, 0.01))
            src[t] = rng.normal(1.0, 0.05)
            t += int(sr / f)
        src = np.convolve(src, np.hanning(40), mode="same") + 0.003 * rng.standard_normal(dur)
        f1, f2, f3 = VOWELS[keys[int(rng.integers(len(keys)))]]
        y = sum(_resonator(src, f, bw, sr) * w for f, bw, w in ((f1, 80, 1.0), (f2, 100, 0.6), (f3, 150, 0.3)))
        y *= np.hanning(dur) ** 0.5
        end = min(n, pos + dur)
        out[pos:end] += y[: end - pos]
        pos = end + int(rng.uniform(0.05, 0.25) * sr)
    out += 1e-4 * rng.standard_normal(n)
    return (0.5 * out / (np.max(np.abs(out)) + 1e-9)).astype(np.float32)
