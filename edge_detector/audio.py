"""Decoding: any file soundfile can read → float32 mono in [-1, 1] at 16 kHz.

This is the *one* preprocessing used by training, export calibration, benchmarks and
the device runtime. A difference between training and deployment preprocessing is the
most common way an edge model silently loses accuracy, so nothing else in the project
decodes audio on its own. No normalisation, no pre-emphasis and no silence trimming:
RawNet2 trained on ASVspoof data uses the silences (DESIGN.md section 2).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Optional, Union

import numpy as np
import soundfile as sf

from .errors import (
    AudioDecodeError,
    EmptyAudioError,
    MissingFileError,
    NonFiniteAudioError,
    SilentAudioError,
    TooLongAudioError,
    TooShortAudioError,
)
from .audio_source import open_source
from .resample import StreamResampler, _design, resample

MODEL_SAMPLE_RATE = 16000
#: Longest input decoded by default. A bigger file is refused *before* it is read, so a
#: mistaken 3-hour recording cannot exhaust a Pi's memory.
DEFAULT_MAX_SECONDS = 600.0
#: Peak below which a signal is treated as digital silence (about -100 dBFS).
SILENCE_PEAK = 1e-5
#: A channel mix that peaks this far below its loudest channel (-60 dB) has cancelled out.
CANCEL_RATIO = 1e-3

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class DecodedAudio:
    """Mono samples at the model rate plus what the source file looked like."""

    samples: np.ndarray  # float32, mono, MODEL_SAMPLE_RATE
    sample_rate: int
    source_rate: int
    source_channels: int
    source_format: str
    complete: bool = True  # False: decoding stopped once ``first_samples`` were exact (more audio follows)
    declared_seconds: float = 0.0  # the header's length claim (0 when it states none); never trusted for limits

    @property
    def duration(self) -> float:
        return len(self.samples) / float(self.sample_rate)


def to_mono_float(data: np.ndarray) -> np.ndarray:
    """Mix channels by averaging and return float32; refuse NaN or infinite samples."""
    arr = np.asarray(data)
    if arr.ndim not in (1, 2):
        raise AudioDecodeError(f"expected 1-D or 2-D audio, got shape {arr.shape}")
    # Scale integers to [-1, 1] *before* mixing (the mean of integer channels is float).
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        if info.min == 0:  # unsigned (8-bit WAV convention): centred on the middle code
            mid = (int(info.max) + 1) // 2
            arr = (arr.astype(np.float64) - mid) / float(mid)
        else:
            arr = arr.astype(np.float64) / float(-int(info.min))
    if arr.ndim == 2:
        arr = arr.mean(axis=1, dtype=np.float64)
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise NonFiniteAudioError("audio contains NaN or infinite samples")
    # Float files may exceed full scale; the model was trained on [-1, 1].
    return np.clip(arr, -1.0, 1.0)


def prepare_array(
    samples: np.ndarray, sample_rate: int, target_rate: int = MODEL_SAMPLE_RATE
) -> np.ndarray:
    """Mono-mix, validate and resample an in-memory signal (a microphone buffer, a test tone)."""
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AudioDecodeError(f"invalid sample rate {sample_rate!r}")
    mono = to_mono_float(samples)
    if mono.size == 0:
        raise EmptyAudioError("audio has no samples")
    # Resampling can overshoot full scale (Gibbs); the model input stays in [-1, 1].
    return np.clip(resample(mono, int(sample_rate), target_rate), -1.0, 1.0)


def load_audio(
    path: Union[PathLike, BinaryIO],
    target_rate: int = MODEL_SAMPLE_RATE,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    name: Optional[str] = None,
    first_samples: Optional[int] = None,
) -> DecodedAudio:
    """Decode ``path`` to float32 mono at ``target_rate``.

    Decoding reads blocks of :data:`BLOCK_FRAMES` frames and mixes each to mono at once, so
    memory follows what is decoded (samples x channels of one block, plus the mono output),
    never what the header declares. ``first_samples``: decode only until the first
    ``first_samples`` output samples are final (the first-window rule: ~4.04 s of source
    plus the resampler's half-width), then stop (``complete`` False); they equal the same
    samples of a whole-file decode exactly. Without it the whole file is decoded and
    resampled block by block (:class:`~edge_detector.resample.StreamResampler`), and
    refused with TooLongAudioError once more than ``max_seconds`` were decoded, whatever
    the header said (compressed formats only estimate their length).

    ``path`` may also be a seekable binary file object (an upload held in memory, as
    `edge-detect serve` passes it): the same checks and decoding apply, nothing is
    written to disk, and messages name it ``name``.

    Raises a subclass of :class:`~edge_detector.errors.AudioError` (or
    :class:`MissingFileError`) with a one-line message naming the file.
    """
    src: Union[bytes, BinaryIO]
    if hasattr(path, "read"):
        src, p = path, name or "upload"  # type: ignore[assignment]
    else:
        # By the OS's bytes (any file name); a pipe or FIFO is read once into memory.
        src, p = open_source(path, name)  # type: ignore[arg-type]
    try:
        info = sf.info(_rewound(src))
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioDecodeError(f"{p}: cannot decode audio ({_short(exc)})") from None
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioDecodeError(f"{p}: invalid header (rate {info.samplerate}, channels {info.channels})")
    if info.frames > 0 and info.frames / info.samplerate > max_seconds:
        raise TooLongAudioError(
            f"{p}: {info.frames / info.samplerate:.1f} s is longer than the {max_seconds:.0f} s limit"
        )
    samples, complete = _decode_blocks(src, p, int(info.samplerate), target_rate, max_seconds, first_samples)
    return DecodedAudio(
        samples=samples,
        sample_rate=target_rate,
        source_rate=int(info.samplerate),
        source_channels=int(info.channels),
        source_format=f"{info.format}/{info.subtype}",
        complete=complete,
        declared_seconds=max(0.0, info.frames / info.samplerate) if info.frames > 0 else 0.0,
    )


#: Frames decoded per block (x channels x 4 bytes: 2 MiB for 8 channels).
BLOCK_FRAMES = 1 << 16


def _decode_blocks(src: Union[str, bytes, BinaryIO], p: str, rate: int, target_rate: int, max_seconds: float,
                   first_samples: Optional[int]) -> tuple[np.ndarray, bool]:
    """Decode blocks, mono-mix each, resample; return (float32 samples in [-1, 1], whether the file ended).

    With ``first_samples``: stop once the source frames that the first ``first_samples``
    outputs depend on have been read, resample those at once and keep the exact outputs.
    Without: stream every block through a StreamResampler (equal to whole-file resampling).
    """
    limit_frames = int(math.floor(max_seconds * rate)) + 1  # one frame more than the limit: "too long"
    need = None
    if first_samples is not None and rate != target_rate:
        g = math.gcd(rate, target_rate)
        up, down = target_rate // g, rate // g
        # output n depends on inputs up to floor(n*down/up) + K; read one block past that.
        need = (max(1, first_samples) - 1) * down // up + _design(up, down).half_taps + 1
    elif first_samples is not None:
        need = max(1, first_samples)
    streamer = None if need is not None else StreamResampler(rate, target_rate)
    block = max(BLOCK_FRAMES, 2 * (rate // math.gcd(rate, target_rate)))  # streaming slices align to `down`
    parts: list[np.ndarray] = []
    frames = 0
    peak_mono = 0.0
    peak_channels: Optional[np.ndarray] = None
    ended = False
    try:
        with sf.SoundFile(_rewound(src)) as f:
            while True:
                want = block if need is None else min(block, need - frames)
                if want <= 0:
                    break
                data = f.read(want, dtype="float32", always_2d=True)
                if data.shape[0] == 0:
                    ended = True
                    break
                frames += data.shape[0]
                if need is None and frames > limit_frames:  # never trust the header's length
                    raise TooLongAudioError(f"{p}: longer than the {max_seconds:.0f} s limit")
                try:
                    mono = to_mono_float(data)
                except NonFiniteAudioError:
                    raise NonFiniteAudioError(f"{p}: audio contains NaN or infinite samples") from None
                peaks = np.max(np.abs(data), axis=0)
                peak_channels = peaks if peak_channels is None else np.maximum(peak_channels, peaks)
                peak_mono = max(peak_mono, float(np.max(np.abs(mono))))
                parts.append(mono if streamer is None else streamer.push(mono))
                if data.shape[0] < want:
                    ended = True
                    break
    except (TooLongAudioError, NonFiniteAudioError):
        raise
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioDecodeError(f"{p}: cannot decode audio ({_short(exc)})") from None
    if frames == 0:
        raise EmptyAudioError(f"{p}: audio has no samples")
    if peak_channels is not None:
        check_channel_cancellation(peak_channels[None, :], np.asarray([peak_mono], np.float32), p)
    if streamer is not None:
        parts.append(streamer.flush())
        out = np.concatenate(parts) if len(parts) > 1 else parts[0]
        ended = True
    else:
        mono = np.concatenate(parts) if len(parts) > 1 else parts[0]
        out = resample(mono, rate, target_rate)
        if not ended and first_samples is not None:
            out = out[:first_samples]  # exact: each kept output's whole filter support was read
    # Resampling can overshoot full scale (Gibbs); the model input stays in [-1, 1].
    return np.clip(out, -1.0, 1.0), ended


def check_scorable(samples: np.ndarray, sample_rate: int, min_seconds: float, name: str = "audio") -> None:
    """Refuse audio that cannot give a meaningful decision: too short or digital silence."""
    seconds = len(samples) / float(sample_rate)
    if len(samples) == 0:
        raise EmptyAudioError(f"{name}: audio has no samples")
    if seconds < min_seconds:
        shown, limit = distinct_figures(seconds, min_seconds)
        raise TooShortAudioError(f"{name}: {shown} s ({len(samples)} samples at {sample_rate} Hz) is shorter than "
                                 f"the {limit} s minimum")
    if float(np.max(np.abs(samples))) < SILENCE_PEAK:
        raise SilentAudioError(f"{name}: audio is silent (peak below {SILENCE_PEAK:g})")


def distinct_figures(value: float, limit: float, max_decimals: int = 9) -> tuple[str, str]:
    """``value`` and ``limit`` printed with the fewest decimals (at least 2) that tell them apart.

    So a message never reads "0.50 s is shorter than the 0.50 s minimum" for 0.4999 s.
    """
    for d in range(2, max_decimals + 1):
        a, b = f"{value:.{d}f}", f"{limit:.{d}f}"
        if a != b:
            return a, b
    return repr(float(value)), repr(float(limit))


def check_channel_cancellation(data: np.ndarray, mono: np.ndarray, name: str) -> None:
    """Raise SilentAudioError saying why when channels with signal mix to (near) zero.

    A stereo pair in which one channel is the other with its polarity inverted (a wiring
    or editing mistake) averages to silence: the mono mix the model sees is empty even
    though each channel is not. Said explicitly, because "audio is silent" for a file
    that plays loudly would be a puzzle. ``data`` is ``[frames, channels]`` (or per-channel
    peaks as one row). Cancelled means: the mix peaks more than 60 dB below the loudest
    channel (:data:`CANCEL_RATIO`; 16-bit rounding of an inverted copy leaves about one
    LSB) and is itself close to silence.
    """
    if data.ndim != 2 or data.shape[1] < 2 or mono.size == 0:
        return
    mixed = float(np.max(np.abs(mono)))
    loudest = float(np.max(np.abs(data)))
    if loudest >= SILENCE_PEAK and mixed < max(SILENCE_PEAK, CANCEL_RATIO * loudest):
        raise SilentAudioError(
            f"{name}: the {data.shape[1]} channels cancel when mixed to mono (peak {loudest:.3g} per channel, "
            f"{mixed:.3g} after mixing): one channel is probably the other with its polarity inverted; "
            "fix the recording or keep one channel")


def _rewound(src: Union[str, bytes, BinaryIO]) -> Union[str, bytes, BinaryIO]:
    """A path as is; a file object seeked back to its start (soundfile reads from where it stands)."""
    if not isinstance(src, (str, bytes)):
        src.seek(0)
    return src


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    # libsndfile's "Error opening <file>: reason": the caller already names the file.
    if line.startswith("Error opening ") and ": " in line:
        line = line.rsplit(": ", 1)[1]
    return line
