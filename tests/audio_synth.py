"""Test audio made at test time (never from ../shared): speech-like and tone signals."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def speechlike(seconds: float, sr: int = 16000, seed: int = 0, f0: float = 120.0) -> np.ndarray:
    """Harmonic source with a wandering pitch, syllable-rate envelope, formant-ish tilt and noise."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    pitch = f0 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    x = sum((1.0 / k) * np.sin(k * phase + rng.uniform(0, 6)) for k in range(1, 25) if k * f0 < sr / 2.2)
    env = 0.5 * (1 + np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6))) ** 2
    x = x * env + 0.02 * rng.standard_normal(n)
    return (0.3 * x / (np.max(np.abs(x)) + 1e-9)).astype(np.float32)


def buzzy(seconds: float, sr: int = 16000, seed: int = 1) -> np.ndarray:
    """A flat-envelope pulse train: a stand-in for the 'other' class in toy training."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    x = np.zeros(n, np.float32)
    period = int(sr / 200)
    x[:: period] = 1.0
    x = np.convolve(x, np.hanning(31), mode="same") + 0.05 * rng.standard_normal(n)
    return (0.3 * x / (np.max(np.abs(x)) + 1e-9)).astype(np.float32)


def write(path: Path, x: np.ndarray, sr: int = 16000, subtype: str | None = None) -> Path:
    sf.write(str(path), x, sr, subtype=subtype)
    return path
