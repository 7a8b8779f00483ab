"""RawBoost-style augmentation of raw waveforms (numpy only; training side).

RawBoost (Tak et al., "RawBoost: a raw data boosting and augmentation method applied
to automatic speaker verification anti-spoofing", ICASSP 2022) perturbs the waveform
itself instead of a spectrogram, which suits RawNet2 / AASIST whose first layer is a
sinc filterbank on raw samples. It mimics three nuisances a deployed detector meets
and that ASVspoof training data lacks:

1. **Convolutive noise** (microphone, codec, room colouring): the signal goes through
   a random cascade of band-stop FIR filters and its peak is restored.
2. **Impulsive, signal-dependent noise** (clipping, quantisation bursts): a random
   few percent of samples are multiplied by a random factor.
3. **Stationary, signal-independent noise** (background, electronics hum): coloured
   Gaussian noise is added at a random SNR.

The point is to stop the model from keying on channel details of the training corpus
(e.g. one corpus's recording chain), which is what makes detectors fail on a new
microphone. The transforms are written from the paper's description; the random
ranges are the dataclass `RawBoostParams`, and every step is also a public function
taking explicit parameters so tests can force them.

Every function works in float64 internally, returns a new array and never changes its
input. `RawBoost` returns float32 of the input's length and never NaN or Inf.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np

__all__ = [
    "DEFAULT_PARAMS",
    "MODES",
    "RawBoost",
    "RawBoostParams",
    "convolutive_noise",
    "design_bandstop",
    "impulsive_noise",
    "random_bandstop_cascade",
    "stationary_noise",
]

Band = tuple[float, float, int]  # (centre Hz, bandwidth Hz, filter order)
SeedLike = Union[int, np.random.Generator, None]

CONVOLUTIVE, IMPULSIVE, STATIONARY = 1, 2, 3
_ALGO_NAMES = {CONVOLUTIVE: "convolutive", IMPULSIVE: "impulsive", STATIONARY: "stationary"}


@dataclass(frozen=True)
class RawBoostParams:
    """Ranges the random augmentation parameters are drawn from (uniformly).

    Integer ranges are inclusive at both ends. The defaults follow the paper's spirit
    for 16 kHz speech: 1-5 notches of 100-1000 Hz anywhere in the band, filters of
    order 10-100, up to 10 % of samples hit by impulses, noise 10-40 dB below the
    signal.
    """

    sample_rate: int = 16000
    n_bands: tuple[int, int] = (1, 5)
    centre_hz: tuple[float, float] = (20.0, 8000.0)
    bandwidth_hz: tuple[float, float] = (100.0, 1000.0)
    filter_order: tuple[int, int] = (10, 100)
    impulsive_fraction: tuple[float, float] = (0.0, 0.10)
    impulsive_snr_db: tuple[float, float] = (10.0, 40.0)
    # Largest factor an impulse may add (|x[i]| grows at most (1 + gain) times): with
    # very few impulses, reaching a low SNR would otherwise need huge spikes.
    impulsive_max_gain: float = 4.0
    stationary_snr_db: tuple[float, float] = (10.0, 40.0)

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0, got {self.sample_rate}")
        for name in ("n_bands", "centre_hz", "bandwidth_hz", "filter_order",
                     "impulsive_fraction", "impulsive_snr_db", "stationary_snr_db"):
            low, high = getattr(self, name)
            if not (np.isfinite(low) and np.isfinite(high)) or low > high:
                raise ValueError(f"{name} must be a finite (low, high) range, got {(low, high)}")
        if self.n_bands[0] < 1:
            raise ValueError(f"n_bands must start at 1 or more, got {self.n_bands}")
        if self.filter_order[0] < 2:
            raise ValueError(f"filter_order must start at 2 or more, got {self.filter_order}")
        if self.centre_hz[0] < 0 or self.centre_hz[1] > self.sample_rate / 2:
            raise ValueError(
                f"centre_hz must lie within 0..{self.sample_rate / 2} Hz, got {self.centre_hz}"
            )
        if self.bandwidth_hz[0] <= 0:
            raise ValueError(f"bandwidth_hz must be > 0, got {self.bandwidth_hz}")
        low, high = self.impulsive_fraction
        if low < 0 or high > 1:
            raise ValueError(f"impulsive_fraction must lie within 0..1, got {(low, high)}")
        if not self.impulsive_max_gain > 0:
            raise ValueError(f"impulsive_max_gain must be > 0, got {self.impulsive_max_gain}")


DEFAULT_PARAMS = RawBoostParams()


# --------------------------------------------------------------------------- filters


def design_bandstop(
    centre_hz: float, bandwidth_hz: float, order: int, sample_rate: int = 16000
) -> np.ndarray:
    """Return a linear-phase band-stop FIR (windowed sinc, Hamming) of order `order`.

    The band-stop is the spectral inversion of a band-pass: delta minus (ideal
    band-pass impulse response times a Hamming window). An odd order is rounded up,
    so the filter has an odd length and a whole-sample delay: with
    ``np.convolve(..., mode='same')`` it then does not shift the signal. Band edges
    are clipped to 0..Nyquist; a band that vanishes gives the identity filter.
    A low order gives a shallow, wide notch, a high one a deep, sharp notch.
    """
    order = int(order)
    if order < 2:
        raise ValueError(f"filter order must be >= 2, got {order}")
    order += order % 2
    nyquist = sample_rate / 2.0
    f_low = max(centre_hz - bandwidth_hz / 2.0, 0.0) / sample_rate
    f_high = min(centre_hz + bandwidth_hz / 2.0, nyquist) / sample_rate
    kernel = np.zeros(order + 1)
    kernel[order // 2] = 1.0
    if f_high <= f_low:
        return kernel
    m = np.arange(order + 1) - order / 2.0
    bandpass = 2.0 * f_high * np.sinc(2.0 * f_high * m) - 2.0 * f_low * np.sinc(2.0 * f_low * m)
    bandpass *= np.hamming(order + 1)
    return kernel - bandpass


def random_bandstop_cascade(
    rng: np.random.Generator,
    params: RawBoostParams = DEFAULT_PARAMS,
    bands: Sequence[Band] | None = None,
) -> np.ndarray:
    """Return the single FIR kernel of a cascade of band-stop filters.

    `bands` forces the (centre Hz, bandwidth Hz, order) of each filter; otherwise
    their number and parameters are drawn from `params`. Cascading is done by
    convolving the kernels, so the signal is filtered once.
    """
    if bands is None:
        n = int(rng.integers(params.n_bands[0], params.n_bands[1] + 1))
        bands = [
            (
                float(rng.uniform(*params.centre_hz)),
                float(rng.uniform(*params.bandwidth_hz)),
                int(rng.integers(params.filter_order[0], params.filter_order[1] + 1)),
            )
            for _ in range(n)
        ]
    kernel = np.ones(1)
    for centre, width, order in bands:
        kernel = np.convolve(kernel, design_bandstop(centre, width, order, params.sample_rate))
    return kernel


def _convolve_same(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``np.convolve(x, kernel, 'same')`` but always of len(x), FFT-based when long.

    A 64600-sample window through a 500-tap cascade is 32 M multiply-adds directly;
    through the FFT it is a few milliseconds, which matters inside a data loader.
    """
    n, m = x.size, kernel.size
    start = (m - 1) // 2
    if m <= 64 or n <= 64:
        full = np.convolve(x, kernel, mode="full")
    else:
        size = n + m - 1
        nfft = 1 << (size - 1).bit_length()
        full = np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(kernel, nfft), nfft)[:size]
    return full[start:start + n]


def _peak(x: np.ndarray) -> float:
    return float(np.max(np.abs(x))) if x.size else 0.0


def _match_peak(y: np.ndarray, reference_peak: float) -> np.ndarray:
    peak = _peak(y)
    if peak == 0.0 or not np.isfinite(peak):
        return y
    return y * (reference_peak / peak)


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x))) if x.size else 0.0


# --------------------------------------------------------------------------- the three noises


def convolutive_noise(
    x: np.ndarray,
    rng: np.random.Generator,
    params: RawBoostParams = DEFAULT_PARAMS,
    bands: Sequence[Band] | None = None,
) -> np.ndarray:
    """Algorithm 1: filter through a random band-stop cascade, then restore the peak.

    Restoring the peak keeps the level the model sees unchanged, so it cannot use
    loudness to tell augmented from clean audio.
    """
    x = np.asarray(x, dtype=np.float64)
    kernel = random_bandstop_cascade(rng, params, bands)
    return _match_peak(_convolve_same(x, kernel), _peak(x))


def impulsive_noise(
    x: np.ndarray,
    rng: np.random.Generator,
    params: RawBoostParams = DEFAULT_PARAMS,
    fraction: float | None = None,
    snr_db: float | None = None,
) -> np.ndarray:
    """Algorithm 2: ``x[i] += x[i] * u_i * gain`` on a random `fraction` of samples.

    u_i ~ U(-1, 1); the gain is chosen so the added noise is `snr_db` below the
    signal's power over the whole clip, but never above `params.impulsive_max_gain`
    (so with very few impulses the SNR ends up higher than drawn, not the spikes
    absurd). Being signal-dependent, impulses in silence stay silent.
    """
    x = np.asarray(x, dtype=np.float64)
    if fraction is None:
        fraction = float(rng.uniform(*params.impulsive_fraction))
    if snr_db is None:
        snr_db = float(rng.uniform(*params.impulsive_snr_db))
    count = int(round(fraction * x.size))
    if count <= 0:
        return x.copy()
    where = rng.choice(x.size, size=count, replace=False)
    noise = np.zeros_like(x)
    noise[where] = x[where] * rng.uniform(-1.0, 1.0, size=count)
    noise_power = _power(noise)
    if noise_power == 0.0:
        return x.copy()
    gain = np.sqrt(_power(x) / (noise_power * 10.0 ** (snr_db / 10.0)))
    gain = min(float(gain), params.impulsive_max_gain)
    return x + gain * noise


def stationary_noise(
    x: np.ndarray,
    rng: np.random.Generator,
    params: RawBoostParams = DEFAULT_PARAMS,
    snr_db: float | None = None,
    bands: Sequence[Band] | None = None,
) -> np.ndarray:
    """Algorithm 3: add Gaussian noise coloured by a random band-stop cascade.

    The noise is scaled so that signal power / noise power over the clip is exactly
    `snr_db` (drawn from `params.stationary_snr_db` when not given).
    """
    x = np.asarray(x, dtype=np.float64)
    if snr_db is None:
        snr_db = float(rng.uniform(*params.stationary_snr_db))
    white = rng.standard_normal(x.size)
    noise = _convolve_same(white, random_bandstop_cascade(rng, params, bands))
    noise_power = _power(noise)
    if noise_power == 0.0:  # a cascade can only cancel everything on tiny inputs
        noise, noise_power = white, _power(white)
    signal_power = _power(x)
    if noise_power == 0.0 or signal_power == 0.0:
        return x.copy()
    scale = np.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return x + scale * noise


_STEPS = {
    CONVOLUTIVE: convolutive_noise,
    IMPULSIVE: impulsive_noise,
    STATIONARY: stationary_noise,
}

# Named modes. "parallel" applies convolutive and impulsive noise each to the clean
# input and sums them (the paper's parallel combination); the others run in series.
MODES: dict[str, tuple[tuple[int, ...], bool]] = {
    "none": ((), False),
    "convolutive": ((CONVOLUTIVE,), False),
    "impulsive": ((IMPULSIVE,), False),
    "stationary": ((STATIONARY,), False),
    "series": ((CONVOLUTIVE, IMPULSIVE, STATIONARY), False),
    "parallel": ((CONVOLUTIVE, IMPULSIVE), True),
}

# The paper's algorithm numbers, as used by published training recipes (--algo N).
_PAPER_ALGOS: dict[int, tuple[tuple[int, ...], bool]] = {
    0: ((), False),
    1: ((CONVOLUTIVE,), False),
    2: ((IMPULSIVE,), False),
    3: ((STATIONARY,), False),
    4: ((CONVOLUTIVE, IMPULSIVE, STATIONARY), False),
    5: ((CONVOLUTIVE, IMPULSIVE), False),
    6: ((CONVOLUTIVE, STATIONARY), False),
    7: ((IMPULSIVE, STATIONARY), False),
    8: ((CONVOLUTIVE, IMPULSIVE), True),
}


def _parse_algos(algos: str | int | Sequence[int]) -> tuple[tuple[int, ...], bool]:
    if isinstance(algos, str):
        if algos not in MODES:
            raise ValueError(f"unknown RawBoost mode {algos!r}; known: {', '.join(MODES)}")
        return MODES[algos]
    if isinstance(algos, (int, np.integer)) and not isinstance(algos, bool):
        if int(algos) not in _PAPER_ALGOS:
            raise ValueError(f"RawBoost algorithm number must be 0..8, got {algos}")
        return _PAPER_ALGOS[int(algos)]
    steps = tuple(int(a) for a in algos)
    bad = [a for a in steps if a not in _STEPS]
    if bad:
        raise ValueError(
            f"RawBoost steps must be 1 (convolutive), 2 (impulsive) or 3 (stationary), got {bad}"
        )
    return steps, False


class RawBoost:
    """Random waveform augmentation: ``RawBoost("series", seed=0)(x)``.

    `algos` is a named mode (see MODES: "series" = 1 then 2 then 3, "parallel",
    "convolutive", "impulsive", "stationary", "none"), the paper's algorithm number
    0-8, or a sequence of steps 1/2/3 applied in that order. The instance owns its
    np.random.Generator: the same seed gives the same sequence of augmentations.
    Give each data-loader worker its own seed (`reseed`), or all workers will apply
    identical noise.
    """

    def __init__(
        self,
        algos: str | int | Sequence[int] = (1, 2, 3),
        seed: SeedLike = None,
        params: RawBoostParams = DEFAULT_PARAMS,
    ) -> None:
        self.steps, self.parallel = _parse_algos(algos)
        self.params = params
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed: SeedLike) -> None:
        """Replace the generator, e.g. with a per-worker seed in `worker_init_fn`."""
        self.rng = np.random.default_rng(seed)

    def __repr__(self) -> str:
        names = "+".join(_ALGO_NAMES[s] for s in self.steps) or "none"
        kind = "parallel" if self.parallel else "series"
        return f"RawBoost({names}, {kind})"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Return an augmented float32 copy of the 1-D waveform `x`, same length.

        All-zero input comes back unchanged (there is no signal to scale noise to).
        Non-finite input raises ValueError: it would poison every step. Should a step
        ever produce a non-finite value, the clean input is returned instead, so a
        training batch can never be corrupted by the augmentation.
        """
        wave = np.asarray(x)
        if wave.ndim != 1:
            raise ValueError(f"RawBoost expects a 1-D waveform, got shape {wave.shape}")
        clean = wave.astype(np.float64)
        if not np.all(np.isfinite(clean)):
            raise ValueError("RawBoost input contains NaN or Inf")
        if not self.steps or not np.any(clean):
            return clean.astype(np.float32)
        if self.parallel:
            branches = [_STEPS[step](clean, self.rng, self.params) for step in self.steps]
            out = _match_peak(np.sum(branches, axis=0), _peak(clean))
        else:
            out = clean
            for step in self.steps:
                out = _STEPS[step](out, self.rng, self.params)
        out32 = out.astype(np.float32)
        if not np.all(np.isfinite(out32)):
            return clean.astype(np.float32)
        return out32
