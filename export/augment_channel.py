"""Channel augmentation: take away cues that identify a *recording setup* rather than a spoof.

In small corpora the bona fide and spoofed files often come from different sources with
different bandwidths and levels (in the dev corpus most spoofs are 22.05 kHz LJSpeech
renderings, most bona fide files 16 kHz LibriSpeech). A model can separate those by the
shape of the spectrum near Nyquist or by loudness alone and then fail on any new source.
Random band-limiting and random gain, applied to both classes alike, make those cues
useless so that training has to find the artefacts themselves.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class ChannelParams:
    p_lowpass: float = 0.5
    cutoff_hz: tuple[float, float] = (3800.0, 7600.0)
    p_highpass: float = 0.3
    highpass_hz: tuple[float, float] = (50.0, 300.0)
    gain_db: tuple[float, float] = (-18.0, 6.0)
    sample_rate: int = 16000


class ChannelAugment:
    """Random low-pass / high-pass (zero-phase, in the FFT domain) and random gain."""

    def __init__(self, seed: Optional[int] = None, params: ChannelParams = ChannelParams(),
                 rng: Optional[np.random.Generator] = None) -> None:
        self.rng = rng if rng is not None else np.random.default_rng(seed)
        self.params = params

    def __call__(self, x: np.ndarray) -> np.ndarray:
        p, rng = self.params, self.rng
        x = np.asarray(x, dtype=np.float32)
        if not np.any(x):
            return x
        lp = rng.random() < p.p_lowpass
        hp = rng.random() < p.p_highpass
        if lp or hp:
            spec = np.fft.rfft(x)
            f = np.fft.rfftfreq(len(x), 1.0 / p.sample_rate)
            gain = np.ones_like(f)
            if lp:
                fc = rng.uniform(*p.cutoff_hz)
                width = 0.1 * fc
                gain *= np.clip((fc + width - f) / (2 * width), 0.0, 1.0)  # linear roll-off
            if hp:
                fh = rng.uniform(*p.highpass_hz)
                gain *= np.clip((f - 0.5 * fh) / fh, 0.0, 1.0)
            x = np.fft.irfft(spec * gain, n=len(x)).astype(np.float32)
        g = 10.0 ** (rng.uniform(*p.gain_db) / 20.0)
        peak = float(np.max(np.abs(x))) or 1.0
        g = min(g, 0.99 / peak)  # never clip
        return (x * g).astype(np.float32)


class Compose:
    """Apply augmentations in order (each keeps length and dtype).

    ``rng`` is the generator the steps share (pass the same one to each), so a
    trainer can save and restore augmentation state for an exact resume.
    """

    def __init__(self, steps: Sequence[Callable[[np.ndarray], np.ndarray]],
                 rng: Optional[np.random.Generator] = None) -> None:
        self.steps = list(steps)
        self.rng = rng

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for step in self.steps:
            x = step(x)
        return x


def build_training_augment(rawboost: bool, channel: bool, seed: int, condition: bool = False):
    """The training augmentation chain on one shared generator.

    Order: recording condition (room, codec, telephone, noise; :mod:`export.augment_codec`,
    with ``condition``), then band-limit and gain (``channel``), then RawBoost. ``None``
    when all are off. Used by `train` and by `prune`'s fine-tuning alike, so the two see
    the same data distribution.
    """
    from .augment import RawBoost

    if not (rawboost or channel or condition):
        return None
    rng = np.random.default_rng(seed)
    steps: list = []
    if condition:
        from .augment_codec import ConditionAugment

        steps.append(ConditionAugment(rng))
    if channel:
        steps.append(ChannelAugment(rng=rng))
    if rawboost:
        boost = RawBoost(seed=seed)
        boost.rng = rng  # one shared generator: saved and restored on --resume
        steps.append(boost)
    return Compose(steps, rng=rng)
