"""Recording-condition augmentation: codecs, telephone band, rooms and noise, for both classes.

The dev corpus ties the recording condition to the label (all telephone-band audio is bona
fide, most spoofs are clean studio renderings; DESIGN §9), so a model learns "clean means
synthetic". This module re-records a crop under a random condition, and the trainer applies
the *same* condition to a bona fide crop and to its vocoded copy, so that within every
condition both classes occur and the condition cannot predict the label.

Conditions (each drawn with its own probability, in this order):

* room: convolution with a simulated room impulse response (image source method,
  J. Allen and D. Berkley, JASA 65(4), 1979) from ``pyroomacoustics`` (a bank of rooms
  simulated once at start-up, training side only), mixed wet/dry;
* lossy codec round trip through libsndfile (``soundfile``): MP3 (MPEG-1 Layer III),
  Ogg Vorbis or Opus at a random compression level;
* telephone channel: 300–3400 Hz band (ITU-T G.712), 8 kHz sampling, G.711 μ-law or
  A-law coding through libsndfile, back to 16 kHz with the project's resampler;
* additive noise: white, pink (1/f) or brown (1/f²) at a random SNR.

Everything is seeded by the generator passed in; outputs keep the input's length.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Optional

import numpy as np

from edge_detector.resample import resample

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class ConditionParams:
    p_room: float = 0.25
    p_codec: float = 0.35
    p_telephone: float = 0.2
    p_noise: float = 0.3
    snr_db: tuple[float, float] = (5.0, 35.0)
    rooms: int = 24  # impulse responses simulated at start-up


def _colored_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Noise with power ∝ 1/f^exponent (0 white, 1 pink, 2 brown), unit RMS, shape (n,)."""
    spec = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.fft.rfftfreq(n)
    f[0] = f[1] if n > 1 else 1.0
    spec *= f ** (-exponent / 2.0)
    y = np.fft.irfft(spec, n=n)
    return y / (np.sqrt(np.mean(y**2)) + 1e-12)


def simulate_rooms(count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` room impulse responses at 16 kHz (pyroomacoustics ShoeBox, random size and absorption)."""
    import pyroomacoustics as pra

    rirs = []
    for _ in range(count):
        dims = rng.uniform([3.0, 3.0, 2.4], [9.0, 7.0, 3.5])
        absorption = float(rng.uniform(0.15, 0.7))
        room = pra.ShoeBox(dims, fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=12)
        src = rng.uniform([0.5, 0.5, 1.0], dims - [0.5, 0.5, 0.8])
        mic = rng.uniform([0.5, 0.5, 0.8], dims - [0.5, 0.5, 0.8])
        room.add_source(list(src))
        room.add_microphone(list(mic))
        room.compute_rir()
        rir = np.asarray(room.rir[0][0], dtype=np.float64)[: SAMPLE_RATE]  # at most 1 s of tail
        rirs.append(rir / (np.max(np.abs(rir)) + 1e-12))
    return rirs


def codec_round_trip(x: np.ndarray, fmt: str, subtype: str, rate: int, compression: Optional[float]) -> np.ndarray:
    """Encode ``x`` (float, ``rate`` Hz) with libsndfile and decode it again; same length.

    ``compression``: libsndfile's compression level in [0, 1] (higher = lower bit rate), or None.
    Raises RuntimeError from libsndfile when the format cannot be written.
    """
    import soundfile as sf

    buf = io.BytesIO()
    kwargs = {} if compression is None else {"compression_level": float(compression)}
    sf.write(buf, np.clip(x, -1, 1), rate, format=fmt, subtype=subtype, **kwargs)
    buf.seek(0)
    y, _ = sf.read(buf, dtype="float32")
    y = np.asarray(y, dtype=np.float32)
    if len(y) >= len(x):
        return y[: len(x)]
    return np.pad(y, (0, len(x) - len(y)))


def telephone_channel(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """300–3400 Hz band, 8 kHz, G.711 μ-law or A-law, back to 16 kHz; shape kept."""
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1.0 / SAMPLE_RATE)
    lo, hi = rng.uniform(200, 400), rng.uniform(3200, 3600)
    spec *= np.clip((f - 0.5 * lo) / (0.5 * lo), 0, 1) * np.clip((hi + 200 - f) / 400, 0, 1)
    narrow = resample(np.fft.irfft(spec, n=len(x)).astype(np.float32), SAMPLE_RATE, 8000)
    law = "ULAW" if rng.random() < 0.5 else "ALAW"
    coded = codec_round_trip(narrow, "WAV", law, 8000, None)
    y = resample(coded, 8000, SAMPLE_RATE)
    return np.pad(y, (0, max(0, len(x) - len(y))))[: len(x)]


class ConditionAugment:
    """Apply a random recording condition to a 16 kHz crop (float32, shape kept).

    Call with the same generator state on two crops (see :func:`same_condition`) to give a
    bona fide crop and its vocoded copy the identical condition.
    """

    def __init__(self, rng: np.random.Generator, params: ConditionParams = ConditionParams()) -> None:
        self.rng = rng
        self.params = params
        self.rirs = simulate_rooms(params.rooms, np.random.default_rng(int(rng.integers(2**31))))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        p, rng = self.params, self.rng
        x = np.asarray(x, dtype=np.float32)
        if not np.any(x):
            return x
        peak_in = float(np.max(np.abs(x)))
        y = x.astype(np.float64)
        if rng.random() < p.p_room:
            rir = self.rirs[int(rng.integers(len(self.rirs)))]
            wet = np.fft.irfft(np.fft.rfft(y, len(y) + len(rir)) * np.fft.rfft(rir, len(y) + len(rir)))[: len(y)]
            d = int(np.argmax(np.abs(rir)))  # keep the direct path aligned with the dry signal
            wet = np.roll(wet, -d)
            mix = float(rng.uniform(0.4, 1.0))
            y = mix * wet * (np.sqrt(np.mean(y**2)) / (np.sqrt(np.mean(wet**2)) + 1e-12)) + (1 - mix) * y
        if rng.random() < p.p_telephone:
            y = telephone_channel(y.astype(np.float32), rng).astype(np.float64)
        elif rng.random() < p.p_codec:
            kind = int(rng.integers(3))
            level = float(rng.uniform(0.3, 1.0))
            peak = float(np.max(np.abs(y))) or 1.0
            z = (y / peak * 0.95).astype(np.float32)
            try:
                if kind == 0:
                    z = codec_round_trip(z, "MP3", "MPEG_LAYER_III", SAMPLE_RATE, level)
                elif kind == 1:
                    z = codec_round_trip(z, "OGG", "VORBIS", SAMPLE_RATE, level)
                else:
                    z = codec_round_trip(z, "OGG", "OPUS", SAMPLE_RATE, level)
                y = z.astype(np.float64) * peak / 0.95
            except RuntimeError:  # a libsndfile build without that encoder: leave the crop as it is
                pass
        if rng.random() < p.p_noise:
            noise = _colored_noise(len(y), float(rng.choice([0.0, 1.0, 2.0])), rng)
            snr = float(rng.uniform(*p.snr_db))
            y = y + noise * np.sqrt(np.mean(y**2)) * 10 ** (-snr / 20)
        peak = float(np.max(np.abs(y))) or 1.0
        y = y * min(1.0, max(peak_in, 0.05) / peak)
        return np.clip(y, -1, 1).astype(np.float32)


def same_condition(augment, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``augment`` to ``a`` and ``b`` with the identical random draw.

    ``augment`` must keep its randomness in ``augment.rng`` (a numpy Generator shared by
    every step); its state is rewound between the two calls, so both crops get the same
    condition, gain and RawBoost noise recipe. Returns the two augmented crops.
    """
    rng = getattr(augment, "rng", None)
    if not isinstance(rng, np.random.Generator):
        raise TypeError("same_condition needs an augmentation whose randomness lives in .rng")
    state = rng.bit_generator.state
    out_a = augment(a)
    end = rng.bit_generator.state
    rng.bit_generator.state = state
    out_b = augment(b)
    rng.bit_generator.state = end
    return out_a, out_b
