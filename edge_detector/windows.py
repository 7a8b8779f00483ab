"""How a signal becomes fixed-length model inputs, and how window scores combine.

The ASVspoof 2021 RawNet2 baseline trains and scores on the *first* 64 600 samples
(about 4.04 s at 16 kHz) and repeats shorter audio end to end instead of zero-padding
it. The device keeps that rule by default ("first") and adds one for long audio ("all"):
overlapping windows over the whole signal, combined by a rule the bundle states.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

WINDOW_SAMPLES = 64600
COMBINE_RULES = ("mean", "median", "min")
WINDOW_MODES = ("first", "all")


@dataclass(frozen=True)
class WindowRule:
    """Window length, hop, mode and combination rule (stored in the bundle manifest)."""

    window: int = WINDOW_SAMPLES
    hop: int = WINDOW_SAMPLES // 2
    mode: str = "first"
    combine: str = "mean"

    def __post_init__(self) -> None:
        if self.window <= 0 or self.hop <= 0:
            raise ValueError("window and hop must be positive")
        if self.mode not in WINDOW_MODES:
            raise ValueError(f"window mode must be one of {WINDOW_MODES}, got {self.mode!r}")
        if self.combine not in COMBINE_RULES:
            raise ValueError(f"combine rule must be one of {COMBINE_RULES}, got {self.combine!r}")


def tile_to_length(x: np.ndarray, length: int) -> np.ndarray:
    """Repeat ``x`` end to end and cut to ``length`` (the official pad rule)."""
    if len(x) == 0:
        raise ValueError("cannot tile an empty signal")
    if len(x) >= length:
        return x[:length]
    repeats = length // len(x) + 1
    return np.tile(x, repeats)[:length]


def first_window(x: np.ndarray, window: int = WINDOW_SAMPLES) -> np.ndarray:
    """The official scoring input: the first ``window`` samples, tiled when shorter."""
    return np.ascontiguousarray(tile_to_length(np.asarray(x, dtype=np.float32), window))


def window_starts(n_samples: int, window: int, hop: int) -> list[int]:
    """Start offsets covering the whole signal; the last window is aligned to the end."""
    if n_samples <= window:
        return [0]
    starts = list(range(0, n_samples - window + 1, hop))
    if starts[-1] + window < n_samples:
        starts.append(n_samples - window)
    return starts


def make_windows(x: np.ndarray, rule: WindowRule) -> tuple[np.ndarray, list[int]]:
    """Return a ``[n_windows, window]`` float32 batch and the window start offsets."""
    x = np.asarray(x, dtype=np.float32)
    if rule.mode == "first" or len(x) <= rule.window:
        return first_window(x, rule.window)[None, :], [0]
    starts = window_starts(len(x), rule.window, rule.hop)
    batch = np.stack([x[s : s + rule.window] for s in starts]).astype(np.float32, copy=False)
    return batch, starts


def scored_audio(x: np.ndarray, rule: WindowRule) -> np.ndarray:
    """The samples the rule's windows cover, untiled: the first ``window`` samples (or fewer) for
    "first", everything for "all". What the speech-presence check judges before the model runs."""
    x = np.asarray(x)
    return x[: rule.window] if rule.mode == "first" else x


def combine_scores(scores: Sequence[float], rule: str) -> float:
    """Combine per-window scores: mean, median, or min (the most spoof-like window wins)."""
    arr = np.asarray(scores, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("no window scores to combine")
    if rule == "mean":
        return float(arr.mean())
    if rule == "median":
        return float(np.median(arr))
    if rule == "min":
        return float(arr.min())
    raise ValueError(f"unknown combine rule {rule!r}")
