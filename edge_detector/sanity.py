"""A sanity set made on the spot: signals a voice gate must never accept.

Issue 12 (item 6) asks that no accepting path (``gate``, ``listen --once``, ``score``
records) ever accepts a tone, a chirp, a buzz, noise, clicks or a constant offset, and
that synthetic speech goes to the model rather than being waved through. This module
makes that set with numpy alone (no files, no downloads), so the runtime checks, the
tests and the training side (``adapt``, hard negatives) all use the same signals.

Every generator returns float32 mono samples in [-1, 1] at ``sr`` Hz and is seeded
(the same call gives the same samples). :func:`sanity_set` returns them all as
:class:`SanitySignal` records that say whether the signal is voice-like (``speech``): ``False`` for everything
the speech-presence check must refuse, ``True`` for the formant-synthesised vowels, a
buzz with vibrato and a syllabic envelope, and espeak-ng speech: crude or synthetic
*voices*, which the check lets through and the model must then reject (spoofs).

Sources for the shapes: pink (1/f) and brown (1/f^2) noise by spectral shaping of
white Gaussian noise (the standard definition of coloured noise by its power spectral
density); the sawtooth and square waves are the textbook naive (aliasing) waveforms a
cheap signal generator produces; the formant vowels come from
:mod:`edge_detector.demo_audio` (``edge-detect make-demo``).
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

__all__ = ["SanitySignal", "sanity_set", "non_speech_set", "espeak_available", "espeak_speech", "dc_constant",
           "GENERATORS"]

SR = 16000


@dataclass(frozen=True)
class SanitySignal:
    """One sanity signal: ``samples`` float32 mono at ``sample_rate`` Hz; ``speech`` = holds speech."""

    name: str
    samples: np.ndarray
    sample_rate: int
    speech: bool
    note: str = ""


def _t(seconds: float, sr: int) -> np.ndarray:
    return np.arange(int(round(seconds * sr))) / float(sr)


def _norm(x: np.ndarray, peak: float = 0.5) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = float(np.max(np.abs(x))) if x.size else 0.0
    return (peak * x / m if m > 0 else x).astype(np.float32)


def _syllabic(t: np.ndarray, rate: float = 4.0, phase: float = 0.0) -> np.ndarray:
    """A fully modulated envelope at a syllabic rate (Hz): 0 .. 1."""
    return 0.5 * (1.0 - np.cos(2 * np.pi * rate * t + phase))


def tone(seconds: float = 5.0, sr: int = SR, freq: float = 440.0) -> np.ndarray:
    """A pure sinusoid at ``freq`` Hz."""
    return _norm(np.sin(2 * np.pi * freq * _t(seconds, sr)))


def am_tone(seconds: float = 5.0, sr: int = SR, freq: float = 1000.0, rate: float = 4.0) -> np.ndarray:
    """A sinusoid amplitude-modulated at a syllabic rate (full depth)."""
    t = _t(seconds, sr)
    return _norm(np.sin(2 * np.pi * freq * t) * _syllabic(t, rate))


def fm_tone(seconds: float = 5.0, sr: int = SR, freq: float = 500.0, dev: float = 60.0, rate: float = 5.0) -> np.ndarray:
    """A sinusoid frequency-modulated (vibrato) by ``dev`` Hz at ``rate`` Hz."""
    t = _t(seconds, sr)
    phase = 2 * np.pi * np.cumsum(freq + dev * np.sin(2 * np.pi * rate * t)) / sr
    return _norm(np.sin(phase))


def chirp(seconds: float = 5.0, sr: int = SR, f0: float = 100.0, f1: float = 7000.0, log: bool = False) -> np.ndarray:
    """A linear (or exponential) sweep from ``f0`` to ``f1`` Hz."""
    t = _t(seconds, sr)
    if log:
        k = (f1 / f0) ** (1.0 / seconds)
        phase = 2 * np.pi * f0 * (k ** t - 1) / np.log(k)
    else:
        phase = 2 * np.pi * (f0 * t + 0.5 * (f1 - f0) / seconds * t * t)
    return _norm(np.sin(phase))


def am_chirp(seconds: float = 5.0, sr: int = SR) -> np.ndarray:
    """A slow exponential sweep 150-600 Hz with a syllabic envelope (a whistled 'melody')."""
    t = _t(seconds, sr)
    return _norm(chirp(seconds, sr, 150.0, 600.0, log=True) * _syllabic(t, 3.0))


def square(seconds: float = 5.0, sr: int = SR, freq: float = 200.0) -> np.ndarray:
    """A naive square wave (sign of a sine)."""
    return _norm(np.sign(np.sin(2 * np.pi * freq * _t(seconds, sr) + 0.1)))


def sawtooth(seconds: float = 5.0, sr: int = SR, freq: float = 110.0) -> np.ndarray:
    """A naive sawtooth (-1 .. 1 ramps)."""
    return _norm(2.0 * ((freq * _t(seconds, sr)) % 1.0) - 1.0)


def _harmonics(phase: np.ndarray, f0: float, sr: int, tilt: float = 1.0) -> np.ndarray:
    kmax = int((sr / 2.2) // f0)
    return sum(np.sin(k * phase) / k ** tilt for k in range(1, kmax + 1))


def buzz(seconds: float = 5.0, sr: int = SR, f0: float = 120.0) -> np.ndarray:
    """A harmonic buzz: every harmonic of a steady ``f0`` below 0.45 sr, amplitudes 1/k."""
    return _norm(_harmonics(2 * np.pi * f0 * _t(seconds, sr), f0, sr))


def am_buzz(seconds: float = 5.0, sr: int = SR, f0: float = 120.0) -> np.ndarray:
    """The harmonic buzz with a syllabic (4 Hz) envelope: speech's rhythm, a fixed pitch and timbre."""
    t = _t(seconds, sr)
    return _norm(buzz(seconds, sr, f0) * _syllabic(t, 4.0))


def vibrato_am_buzz(seconds: float = 5.0, sr: int = SR, f0: float = 120.0) -> np.ndarray:
    """Harmonic buzz with vibrato (+-6 % at 5 Hz) and a syllabic envelope, but a fixed spectral envelope."""
    t = _t(seconds, sr)
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.06 * np.sin(2 * np.pi * 5.0 * t))) / sr
    return _norm(_harmonics(phase, f0 * 1.06, sr) * _syllabic(t, 4.0))


def _coloured(seconds: float, sr: int, exponent: float, seed: int) -> np.ndarray:
    """Gaussian noise with power spectral density proportional to 1/f**exponent (DC removed)."""
    n = int(round(seconds * sr))
    spec = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    gain = np.zeros_like(f)
    gain[1:] = f[1:] ** (-exponent / 2.0)
    return _norm(np.fft.irfft(spec * gain, n))


def white_noise(seconds: float = 5.0, sr: int = SR, seed: int = 0) -> np.ndarray:
    return _coloured(seconds, sr, 0.0, seed)


def pink_noise(seconds: float = 5.0, sr: int = SR, seed: int = 1) -> np.ndarray:
    return _coloured(seconds, sr, 1.0, seed)


def brown_noise(seconds: float = 5.0, sr: int = SR, seed: int = 2) -> np.ndarray:
    return _coloured(seconds, sr, 2.0, seed)


def am_noise(seconds: float = 5.0, sr: int = SR, seed: int = 3) -> np.ndarray:
    """Pink noise with a syllabic (4 Hz) envelope: speech's rhythm without a voice."""
    return _norm(pink_noise(seconds, sr, seed) * _syllabic(_t(seconds, sr), 4.0))


def clicks(seconds: float = 5.0, sr: int = SR, rate: float = 2.0) -> np.ndarray:
    """Single-sample clicks at ``rate`` per second."""
    x = np.zeros(int(round(seconds * sr)))
    x[:: max(1, int(sr / rate))] = 1.0
    return _norm(x)


def impulse_train(seconds: float = 5.0, sr: int = SR, freq: float = 100.0) -> np.ndarray:
    """Unit impulses at ``freq`` Hz (a steady glottal-like pulse train without a vocal tract)."""
    return clicks(seconds, sr, freq)


def random_clicks(seconds: float = 5.0, sr: int = SR, per_second: float = 8.0, seed: int = 4) -> np.ndarray:
    """Clicks at random (Poisson) times, random signs."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    x = np.zeros(n)
    k = rng.poisson(per_second * seconds)
    x[rng.integers(0, n, k)] = rng.choice([-1.0, 1.0], k)
    return _norm(x)


def beeps(seconds: float = 5.0, sr: int = SR) -> np.ndarray:
    """A tune of short pure-tone beeps with gaps (a phone's key tones)."""
    t = _t(0.18, sr)
    notes = [523.3, 659.3, 784.0, 698.5, 587.3, 880.0]
    out, i = [], 0
    while sum(len(o) for o in out) < seconds * sr:
        out.append(np.sin(2 * np.pi * notes[i % len(notes)] * t) * np.hanning(len(t)))
        out.append(np.zeros(int(0.07 * sr)))
        i += 1
    return _norm(np.concatenate(out)[: int(round(seconds * sr))])


def hum(seconds: float = 5.0, sr: int = SR, mains: float = 50.0, seed: int = 5) -> np.ndarray:
    """Silence with mains hum (50 Hz and its harmonics, about -40 dBFS) and faint hiss (-70 dBFS)."""
    t = _t(seconds, sr)
    x = sum(0.01 / k * np.sin(2 * np.pi * mains * k * t + k) for k in range(1, 6))
    return (x + 3e-4 * np.random.default_rng(seed).standard_normal(len(t))).astype(np.float32)


def dc_constant(value: int, seconds: float = 5.0, sr: int = SR) -> np.ndarray:
    """int16 samples all equal to ``value`` (a DC offset with nothing on it), as int16."""
    return np.full(int(round(seconds * sr)), value, dtype=np.int16)


def formant_vowels(seconds: float = 5.0, sr: int = SR, seed: int = 0) -> np.ndarray:
    """The `make-demo` signal: formant-synthesised vowels (speech-like, synthetic)."""
    from .demo_audio import synthesize_vowels

    return synthesize_vowels(seconds, sr=sr, seed=seed)


#: name -> (generator of float32 samples at 16 kHz, holds speech?)
GENERATORS: dict[str, tuple[Callable[[], np.ndarray], bool]] = {
    "tone_440": (lambda: tone(freq=440.0), False),
    "tone_150": (lambda: tone(freq=150.0), False),
    "am_tone": (am_tone, False),
    "fm_tone": (fm_tone, False),
    "fm_tone_low": (lambda: fm_tone(freq=180.0, dev=25.0, rate=4.0), False),
    "chirp_linear": (chirp, False),
    "chirp_log": (lambda: chirp(f0=60.0, f1=7500.0, log=True), False),
    "am_chirp": (am_chirp, False),
    "square_200": (square, False),
    "sawtooth_110": (sawtooth, False),
    "buzz_120": (buzz, False),
    "am_buzz": (am_buzz, False),
    "vibrato_am_buzz": (vibrato_am_buzz, True),
    "white_noise": (white_noise, False),
    "pink_noise": (pink_noise, False),
    "brown_noise": (brown_noise, False),
    "am_noise": (am_noise, False),
    "clicks_2hz": (clicks, False),
    "impulse_train_100": (impulse_train, False),
    "random_clicks": (random_clicks, False),
    "beeps": (beeps, False),
    "hum_50": (hum, False),
    "hum_60": (lambda: hum(mains=60.0), False),
    "formant_vowels": (formant_vowels, True),
}


def non_speech_set(sr: int = SR) -> list[SanitySignal]:
    """Every non-speech signal of :data:`GENERATORS` plus the int16 DC constants 1, 3, 33, 328 (as float)."""
    out = [SanitySignal(name, _at_rate(gen(), sr), sr, False) for name, (gen, speech) in GENERATORS.items()
           if not speech]
    for v in (1, 3, 33, 328):
        out.append(SanitySignal(f"dc_{v}", (dc_constant(v, sr=sr) / 32768.0).astype(np.float32), sr, False,
                                "int16 constant"))
    return out


def sanity_set(sr: int = SR, with_espeak: bool = True) -> list[SanitySignal]:
    """The whole set: :func:`non_speech_set`, the formant vowels, and espeak-ng speech when installed."""
    out = non_speech_set(sr)
    out.append(SanitySignal("formant_vowels", _at_rate(formant_vowels(), sr), sr, True, "make-demo; a spoof"))
    out.append(SanitySignal("vibrato_am_buzz", _at_rate(vibrato_am_buzz(), sr), sr, True,
                            "a crude voice (moving pitch, syllabic rhythm): the model must reject it"))
    if with_espeak and espeak_available():
        sp = espeak_speech()
        if sp is not None:
            x, rate = sp
            out.append(SanitySignal("espeak_ng", _at_rate(x, sr, rate), sr, True, "espeak-ng; a spoof"))
    return out


def _at_rate(x: np.ndarray, sr: int, rate: int = SR) -> np.ndarray:
    if sr == rate:
        return np.asarray(x, dtype=np.float32)
    from .resample import resample

    return np.clip(resample(np.asarray(x, dtype=np.float32), rate, sr), -1.0, 1.0)


ESPEAK_TEXT = "Please let me in. My voice is my password, and today is a very good day."


def espeak_available() -> bool:
    """Whether the ``espeak-ng`` program is on PATH."""
    return shutil.which("espeak-ng") is not None


def espeak_speech(text: str = ESPEAK_TEXT, voice: str = "en", timeout: float = 30.0) -> Optional[tuple[np.ndarray, int]]:
    """Speech synthesised by espeak-ng (float32 mono, its own rate), or None when it is not installed.

    Raises RuntimeError when espeak-ng is installed but fails.
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "espeak.wav"
        proc = subprocess.run([exe, "-v", voice, "-w", str(out), text], capture_output=True, timeout=timeout)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"espeak-ng failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[:200]}")
        x, rate = sf.read(str(out), dtype="float32", always_2d=True)
    return x.mean(axis=1).astype(np.float32), int(rate)
