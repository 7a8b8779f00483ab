"""Is there a human voice in this audio at all? A numpy-only speech-presence check.

A voice gate must only ever accept a *voice*. The anti-spoofing model answers "live or
synthetic?" and has no notion of "not speech at all": asked about a tone, a buzz, a DC
offset or noise, it gives some score, and a score can cross the accept threshold (issue 12
found white and brown noise, a square wave, a buzz and an FM sine accepted, issue 16 a
constant offset). So every accepting path asks this module first and refuses audio
without speech with its own error (:class:`~edge_detector.errors.NotSpeechError`, exit
13, JSON kind ``not_speech``). Like the VAD, it decides *whether* to score, never *what*:
the model still sees the untrimmed audio (DESIGN.md section 2).

What counts as speech: four cues, all required
-----------------------------------------------
The signal is cut into 40 ms Hann frames every 10 ms (16 kHz). Each frame's mean is
removed and every level and cue ignores energy below 80 Hz, so a DC offset, mains hum and
rumble never count (the check judges the signal's *varying* part). Frames within 30 dB of
the loudest (95th percentile) frame and above an absolute floor are *active*.

1. **Loud enough** (``level_db``): the 95th-percentile frame level (RMS, dBFS, 80-7600 Hz)
   is at least -55 dBFS; the floor of :class:`~edge_detector.vad.VadConfig`.
2. **Syllabic rhythm** (``dynamic_db``): speech's energy rises and falls with its syllables,
   3-8 per second, with gaps between words; the envelope's modulation spectrum peaks near
   4 Hz (Houtgast & Steeneken 1985, the Speech Transmission Index; Drullman, Festen & Plomp
   1994, JASA 95(5)). Stationary sounds (noise, tones, buzz, chirps of fixed level) have a
   flat envelope. Measured as the spread of frame levels: 90th minus 10th percentile (dB).
3. **A voice with a moving pitch** (``voiced_fraction``, ``pitch_spread``): voiced speech
   is periodic at 60-500 Hz once its vocal-tract resonances are removed, and its pitch
   moves (intonation, declination, jitter). Found by the SIFT method (Markel 1972, IEEE
   Trans. Audio Electroacoust. 20(5)): an LPC inverse filter whitens each frame, and the
   normalised autocorrelation of the residual, corrected for the window's own
   autocorrelation (Boersma 1993, Proc. Inst. Phonetic Sciences Amsterdam 17), peaks at the
   pitch period. A pure tone, a chirp or an FM tone is predicted perfectly by LPC (no
   periodic residual); noise has no periodicity; a buzz, a square or sawtooth wave and a
   click train are periodic at a *fixed* pitch, so most of their voiced frames sit within
   a semitone of the median pitch. Required: enough voiced active frames, and pitch
   spread (share of voiced frames more than half a semitone from the median) high enough.
4. **A moving vocal tract** (``envelope_change_db``): articulation changes the spectral
   envelope from one phone to the next (tens of milliseconds). Measured as the mean
   LPC-cepstral distance (dB; Rabiner & Juang 1993, *Fundamentals of Speech Recognition*,
   sections 3.3.7 and 4.5) between active frames 50 ms apart. A buzz with vibrato and a
   syllabic envelope has rhythm and a moving pitch but one fixed timbre; this cue refuses it.

The thresholds (:class:`SpeechCheckConfig`) were set on the sanity set of
:mod:`edge_detector.sanity` (which must all be refused, with margin) and checked against
every bona fide file of the project's dev corpus (``benchmarks/speech_presence_dev.py``,
result in ``benchmarks/results/speech_presence_dev.json``).

Known blind spots: whispered speech has no voicing and is refused; singing, and a speech
synthesiser, pass (they are voices: the model's job).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from .errors import NotSpeechError

__all__ = ["SpeechCheckConfig", "SpeechEvidence", "speech_evidence", "check_speech", "FRAME", "HOP"]

SAMPLE_RATE = 16000
FRAME = 640  # 40 ms: two periods of a 50 Hz voice, the shortest frame SIFT/Boersma need at 60 Hz
HOP = 160  # 10 ms
NFFT = 1024
LPC_ORDER = 16  # fs/1000 + 2 at 16 kHz (Rabiner & Schafer's rule of thumb)
CEPSTRUM = 12  # LPC-cepstral coefficients compared
BLOCK_SECONDS = 4.04  # a long signal is judged in blocks of one model window; any speech block passes


@dataclass(frozen=True)
class SpeechCheckConfig:
    """Thresholds of :func:`check_speech` (module docstring says what each cue measures)."""

    min_level_db: float = -55.0
    active_range_db: float = 30.0
    min_dynamic_db: float = 6.0
    voicing_threshold: float = 0.45
    min_voiced_fraction: float = 0.06
    min_voiced_frames: int = 5
    steady_semitones: float = 0.15
    min_pitch_spread: float = 0.3
    min_envelope_change_db: float = 1.5
    max_tonality: float = 0.993
    f0_min: float = 60.0
    f0_max: float = 500.0


@dataclass
class SpeechEvidence:
    """What the check measured on one block and whether it found speech."""

    speech: bool
    level_db: float
    dynamic_db: float
    active_frames: int
    voiced_fraction: float
    voiced_frames: int
    pitch_spread: float
    median_f0: float
    envelope_change_db: float
    tonality: float
    failed: list[str] = field(default_factory=list)
    start: float = 0.0  # seconds: where the judged block starts

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()}

    def reason(self) -> str:
        """One line naming the cues that failed."""
        text = {
            "level": f"too quiet ({self.level_db:.1f} dBFS)",
            "rhythm": f"no syllabic rhythm (level spread {self.dynamic_db:.1f} dB)",
            "voicing": f"no voiced speech ({100 * self.voiced_fraction:.0f} % of active frames voiced)",
            "pitch": f"a fixed pitch ({100 * (1 - self.pitch_spread):.0f} % of voiced frames at "
                     f"{self.median_f0:.0f} Hz)",
            "tonal": f"a single tone ({100 * self.tonality:.0f} % of the voiced energy in one spectral peak)",
            "articulation": f"no articulation (spectral envelope change {self.envelope_change_db:.1f} dB)",
        }
        return "; ".join(text[f] for f in self.failed) or "speech"


# --------------------------------------------------------------------------------------- framing
_WINDOW = np.hanning(FRAME + 2)[1:-1]
_WIN_AC = np.fft.irfft(np.abs(np.fft.rfft(_WINDOW, NFFT)) ** 2, NFFT)[: FRAME]
_WIN_AC = _WIN_AC / _WIN_AC[0]
_FREQS = np.fft.rfftfreq(NFFT, 1.0 / SAMPLE_RATE)
_BAND = (_FREQS >= 80.0) & (_FREQS <= 7600.0)
_PITCH_BAND = (_FREQS >= 50.0) & (_FREQS <= 2000.0)
# mean square of the signal from one-sided band power: 2 sum|X|^2 / (NFFT * sum w^2)
_CEPS_DB = (10.0 / math.log(10.0)) * math.sqrt(2.0)  # cepstral distance in dB (Rabiner & Juang 1993, eq. 4.27)
_LEVEL_SCALE = 2.0 / (NFFT * float(np.sum(_WINDOW ** 2)))


def _frames(x: np.ndarray) -> np.ndarray:
    """A read-only ``[T, FRAME]`` view of the frames every HOP samples (zero-padded to one frame)."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < FRAME:
        x = np.pad(x, (0, FRAME - len(x)))
    return np.lib.stride_tricks.sliding_window_view(x, FRAME)[::HOP]


CHUNK_FRAMES = 64
"""Frames analysed at once: the FFT work arrays stay ~2 MB instead of ~25 MB for a 4 s block."""


def _frame_features(view: np.ndarray, lag_min: int, lag_max: int) -> tuple[np.ndarray, ...]:
    """Per frame of ``view`` (mean removed, Hann window): level (dBFS), voicing strength, pitch lag,
    the share of band energy within +-3 bins of the spectral peak, and LPC cepstrum c1..c12."""
    fr = view - view.mean(axis=1, keepdims=True)
    fr *= _WINDOW
    spec = np.fft.rfft(fr, NFFT, axis=1)
    power = spec.real ** 2 + spec.imag ** 2
    del spec
    bp = np.where(_BAND, power, 0.0)
    del power
    total = bp.sum(axis=1)
    level = 10.0 * np.log10(_LEVEL_SCALE * total + 1e-20)
    # LPC of the band power (80 Hz high-pass, same as the level), then the whitened residual.
    r = np.fft.irfft(bp, NFFT, axis=1)[:, : LPC_ORDER + 1]
    r[:, 0] = r[:, 0] * (1.0 + 1e-4) + 1e-12  # white-noise correction (-40 dB): a stable inverse filter
    a = _levinson(r, LPC_ORDER)
    inv = np.fft.rfft(a, NFFT, axis=1)
    resid = np.where(_PITCH_BAND, bp * (inv.real ** 2 + inv.imag ** 2), 0.0)
    ac = np.fft.irfft(resid, NFFT, axis=1)[:, :FRAME]
    ac = ac / np.maximum(ac[:, :1], 1e-30) / np.maximum(_WIN_AC, 1e-3)
    strength, lag = _pick_pitch(ac, lag_min, lag_max)
    peak = np.argmax(bp, axis=1)
    cols = np.clip(peak[:, None] + np.arange(-3, 4)[None, :], 0, bp.shape[1] - 1)
    share = np.take_along_axis(bp, cols, axis=1).sum(axis=1) / np.maximum(total, 1e-30)
    return level, strength, lag, share, _lpc_cepstrum(a, CEPSTRUM)


def _levinson(r: np.ndarray, order: int) -> np.ndarray:
    """LPC polynomials ``[T, order+1]`` (a0 = 1) from autocorrelations ``[T, >= order+1]`` (Levinson-Durbin)."""
    t = r.shape[0]
    a = np.zeros((t, order + 1))
    a[:, 0] = 1.0
    err = r[:, 0].copy()
    for i in range(1, order + 1):
        acc = r[:, i] + np.sum(a[:, 1:i] * r[:, i - 1 : 0 : -1], axis=1)
        k = -acc / err
        prev = a[:, 1:i].copy()
        a[:, 1:i] = prev + k[:, None] * prev[:, ::-1]
        a[:, i] = k
        err = err * (1.0 - k * k)
        err = np.maximum(err, 1e-12 * r[:, 0])
    return a


def _lpc_cepstrum(a: np.ndarray, n: int) -> np.ndarray:
    """Cepstrum c1..cn of the all-pole envelope 1/A(z) (Rabiner & Juang 1993, eq. 3.83; gain left out)."""
    p = a.shape[1] - 1
    c = np.zeros((a.shape[0], n + 1))
    for m in range(1, n + 1):
        acc = -a[:, m] if m <= p else np.zeros(a.shape[0])
        for k in range(max(1, m - p), m):
            acc = acc - (k / m) * c[:, k] * a[:, m - k]
        c[:, m] = acc
    return c[:, 1:]


def _pick_pitch(ac: np.ndarray, lag_min: int, lag_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: the strength and (parabolically refined) lag of the shortest strong autocorrelation peak.

    Among local maxima in [lag_min, lag_max], the shortest lag within 90 % of the highest wins,
    so a steady period is not read as its double or triple (octave errors would fake a moving pitch).
    """
    seg = ac[:, lag_min - 1 : lag_max + 2]
    mid = seg[:, 1:-1]
    is_peak = (mid >= seg[:, :-2]) & (mid > seg[:, 2:])
    vals = np.where(is_peak, mid, -np.inf)
    best = vals.max(axis=1)
    ok = np.isfinite(best)
    good = vals >= (0.9 * np.where(ok, best, 0.0))[:, None]
    first = np.argmax(good & is_peak, axis=1)
    rows = np.arange(ac.shape[0])
    y0, y1, y2 = seg[rows, first], seg[rows, first + 1], seg[rows, first + 2]
    den = y0 - 2 * y1 + y2
    shift = np.where(np.abs(den) > 1e-12, 0.5 * (y0 - y2) / np.where(den == 0, 1, den), 0.0)
    lag = lag_min + first + np.clip(shift, -0.5, 0.5)
    strength = np.where(ok, y1, 0.0)
    return strength, lag


# np.percentile and np.median import numpy.ma on first use (np.unique / the NaN check call
# np.ma.*): ~10 ms CPU and 1.2 MiB in a fresh `gate` process, for a few statistics of a
# few hundred frames. The two helpers below give numpy's results bit for bit without it
# (tests/test_speech_presence_stats.py compares them with numpy).


def _median(a: np.ndarray, axis: Optional[int] = None) -> np.ndarray:
    """``np.median(a, axis)`` for float arrays, bit for bit: the middle order statistic, or the
    two middle ones summed and halved (numpy's ``mean`` of them); NaN where a slice holds NaN.
    ``axis=None`` flattens. Raises ValueError for an empty array (numpy warns and gives NaN)."""
    arr = np.asarray(a)
    s = np.sort(arr.reshape(-1) if axis is None else arr, axis=0 if axis is None else axis)
    ax = 0 if axis is None else axis
    n = s.shape[ax]
    if n == 0:
        raise ValueError("median of an empty array")
    lo = np.take(s, (n - 1) // 2, axis=ax)
    out = lo if n % 2 else (lo + np.take(s, n // 2, axis=ax)) / 2
    return np.where(np.isnan(np.take(s, -1, axis=ax)), np.nan, out)


def _percentile(a: np.ndarray, q: float) -> float:
    """``np.percentile(a, q)`` (default "linear" method) of a 1-D float64 array, bit for bit, from a sort.

    Same arithmetic as numpy 2's ``_quantile``: virtual index
    ``(n - 1) * (q / 100)``, the neighbouring order statistics, and its ``_lerp``
    (``a + (b - a) t``, or ``b - (b - a)(1 - t)`` for ``t >= 0.5``); NaN if ``a`` holds one.
    Raises ValueError for an empty array.
    """
    s = np.sort(np.asarray(a, dtype=np.float64).reshape(-1))
    n = len(s)
    if n == 0:
        raise ValueError("percentile of an empty array")
    if np.isnan(s[-1]):
        return float("nan")
    v = (n - 1) * np.float64(q / 100.0)
    lo = int(np.floor(v))
    if v >= n - 1:
        return float(s[-1])
    t = v - np.float64(lo)
    below, above = s[lo], s[lo + 1]
    diff = above - below
    return float(above - diff * (1.0 - t) if t >= 0.5 else below + diff * t)


def speech_evidence(x: np.ndarray, config: Optional[SpeechCheckConfig] = None, start: float = 0.0) -> SpeechEvidence:
    """Measure the four cues on ``x`` (float mono at 16 kHz, any length) and decide.

    Returns a :class:`SpeechEvidence`; ``speech`` is True only when every cue passes.
    """
    cfg = config or SpeechCheckConfig()
    lag_min = int(math.floor(SAMPLE_RATE / cfg.f0_max))
    lag_max = int(math.ceil(SAMPLE_RATE / cfg.f0_min))
    view = _frames(np.asarray(x).reshape(-1))
    parts = [_frame_features(view[i : i + CHUNK_FRAMES], lag_min, lag_max) for i in range(0, len(view), CHUNK_FRAMES)]
    level, strength, lag, share, ceps_all = (np.concatenate(c) for c in zip(*parts))
    top = _percentile(level, 95)
    failed: list[str] = []
    if top < cfg.min_level_db:
        failed.append("level")
    floor = max(cfg.min_level_db - 10.0, top - cfg.active_range_db)
    active = level > floor
    clipped = np.maximum(level, top - cfg.active_range_db - 10.0)
    dynamic = float(_percentile(clipped, 90) - _percentile(clipped, 10))
    if dynamic < cfg.min_dynamic_db:
        failed.append("rhythm")

    voiced = active & (strength >= cfg.voicing_threshold)
    n_active = int(active.sum())
    n_voiced = int(voiced.sum())
    vfrac = n_voiced / max(1, n_active)
    if n_voiced < cfg.min_voiced_frames or vfrac < cfg.min_voiced_fraction:
        failed.append("voicing")
    if n_voiced:
        semis = 12.0 * np.log2(SAMPLE_RATE / lag[voiced])
        med = float(_median(semis))
        spread = float(np.mean(np.abs(semis - med) > cfg.steady_semitones))
        median_f0 = float(2.0 ** (med / 12.0))
    else:
        spread, median_f0 = 0.0, 0.0
    if spread < cfg.min_pitch_spread:
        failed.append("pitch")
    tonality = float(_median(share[voiced])) if n_voiced else 1.0
    if tonality > cfg.max_tonality:
        failed.append("tonal")

    ceps = ceps_all[active]
    if len(ceps):
        d = ceps - _median(ceps, axis=0)
        change = float(np.mean(_CEPS_DB * np.sqrt(np.sum(d * d, axis=1))))
    else:
        change = 0.0
    if change < cfg.min_envelope_change_db:
        failed.append("articulation")
    return SpeechEvidence(speech=not failed, level_db=top, dynamic_db=dynamic, active_frames=n_active,
                          voiced_fraction=vfrac, voiced_frames=n_voiced, pitch_spread=spread, median_f0=median_f0,
                          envelope_change_db=change, tonality=tonality, failed=failed, start=start)


def judge(x: np.ndarray, sample_rate: int = SAMPLE_RATE, config: Optional[SpeechCheckConfig] = None) -> SpeechEvidence:
    """Speech evidence for a signal of any length: blocks of :data:`BLOCK_SECONDS`, the first block with
    speech wins (else the block with the fewest failed cues is returned)."""
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"the speech check runs at {SAMPLE_RATE} Hz, got {sample_rate}")
    x = np.asarray(x).reshape(-1)
    block = int(BLOCK_SECONDS * SAMPLE_RATE)
    best: Optional[SpeechEvidence] = None
    starts = list(range(0, max(1, len(x) - block // 2), block)) or [0]
    for s in starts:
        ev = speech_evidence(x[s : s + block], config, start=s / SAMPLE_RATE)
        if ev.speech:
            return ev
        if best is None or len(ev.failed) < len(best.failed):
            best = ev
    assert best is not None
    return best


def check_speech(x: np.ndarray, sample_rate: int = SAMPLE_RATE, name: str = "audio",
                 config: Optional[SpeechCheckConfig] = None) -> SpeechEvidence:
    """Raise :class:`NotSpeechError` unless ``x`` (float mono at 16 kHz) holds speech; return the evidence."""
    ev = judge(x, sample_rate, config)
    if not ev.speech:
        err = NotSpeechError(f"{name}: no speech: {ev.reason()}")
        err.evidence = ev.to_dict()
        raise err
    return ev
