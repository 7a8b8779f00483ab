"""Decoded, in-memory audio for training and evaluation.

Every file goes through :func:`edge_detector.audio.load_audio` (the device's own
preprocessing) exactly once; the decoded 16 kHz signals can be cached to one ``.npz``
so that repeated runs skip decoding and resampling. Random crops for training and the
official first-window input for scoring are both cut here.
"""
from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from edge_detector.audio import load_audio
from edge_detector.protocol import ProtocolEntry, resolve_audio
from edge_detector.windows import WINDOW_SAMPLES, first_window, tile_to_length


@dataclass
class Corpus:
    """Protocol entries and their decoded 16 kHz float32 signals, in protocol order."""

    entries: list[ProtocolEntry]
    signals: list[np.ndarray]

    @property
    def labels(self) -> np.ndarray:
        return np.array([e.target for e in self.entries], dtype=np.int64)

    def subset(self, entries: Sequence[ProtocolEntry]) -> "Corpus":
        index = {e.file_id: i for i, e in enumerate(self.entries)}
        return Corpus(list(entries), [self.signals[index[e.file_id]] for e in entries])


def _cache_key(entries: Sequence[ProtocolEntry], paths: dict[str, Path]) -> str:
    h = hashlib.sha256()
    for e in entries:
        p = paths[e.file_id]
        st = p.stat()
        h.update(f"{e.file_id}|{p.name}|{st.st_size}|{int(st.st_mtime)}\n".encode())
    return h.hexdigest()[:16]


def load_corpus(
    entries: Sequence[ProtocolEntry],
    audio_dir: str | Path,
    cache_dir: Optional[str | Path] = None,
    progress: bool = True,
) -> Corpus:
    """Decode every entry's audio (or read the cache made by an earlier identical call)."""
    entries = list(entries)
    paths = resolve_audio(entries, Path(audio_dir))
    cache: Optional[Path] = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"decoded-{_cache_key(entries, paths)}.npz"
        if cache.exists():
            with np.load(cache) as z:
                return Corpus(entries, [z[e.file_id] for e in entries])
    signals = []
    for i, e in enumerate(entries):
        signals.append(load_audio(paths[e.file_id]).samples)
        if progress and (i % 25 == 0 or i == len(entries) - 1):
            print(f"\rdecoding {i + 1}/{len(entries)}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npz")  # two runs may fill the same cache at once
        np.savez(tmp, **{e.file_id: s for e, s in zip(entries, signals)})
        tmp.replace(cache)
    return Corpus(entries, signals)


def random_crop(x: np.ndarray, rng: np.random.Generator, window: int = WINDOW_SAMPLES) -> np.ndarray:
    """A random ``window``-sample crop; shorter signals are tiled first (the official pad rule)."""
    if len(x) <= window:
        return tile_to_length(x, window)
    start = int(rng.integers(0, len(x) - window + 1))
    return x[start : start + window]


def scoring_batch(signals: Sequence[np.ndarray], window: int = WINDOW_SAMPLES) -> np.ndarray:
    """The official evaluation input for each signal: its first window, tiled when short."""
    return np.stack([first_window(s, window) for s in signals]).astype(np.float32)
