"""Energy-based voice activity detection that decides *when* to score, never *what*.

Why energy and not a model
--------------------------
The gate needs to know one thing from the VAD: "has the person spoken long enough,
and have they stopped?". Frame energy against the room's own noise floor answers that
with numpy alone, in microseconds per frame, on any device. It is not a speech/noise
classifier (music or babble count as "speech") and it does not have to be: the
anti-spoofing model makes the decision, the VAD only times it.

Why it never trims
------------------
RawNet2 trained on ASVspoof data uses the silences around speech: trimming them moved
EER from 3.6 % to 15.5 % (DESIGN.md section 2). So the labels produced here are used
to count speech and to find its end; the audio that is scored stays contiguous,
silences included (see :mod:`edge_detector.stream`).

The rule
--------
A 20 ms frame is *loud* when its RMS level (dBFS) is above both

* an absolute floor (default -55 dBFS: below that nothing is speech, whatever the
  room), and
* the adaptive noise floor plus a margin (default 10 dB). The noise floor is a low
  percentile (10th) of the frame levels of the last 3 s. Speech has gaps between
  syllables, so a tenth of its frames sit near the room's noise level; stationary
  noise (a fan, hum, hiss) has no such gaps, so its own level becomes the floor within
  a fraction of a second and it is never "loud".

Loud frames start a speech run. A gap of at most ``hangover`` (default 0.3 s) between
loud frames is bridged (counted as speech: pauses between words); a longer gap ends the
run, which is reported on the frame at which the hangover expires. The hangover is
therefore the VAD's share of the end-of-speech-to-decision latency.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["VadConfig", "VadFrame", "EnergyVAD", "frame_db"]

#: Level reported for digital silence (log of zero).
SILENCE_DB = -200.0


@dataclass(frozen=True)
class VadConfig:
    """Tunables of :class:`EnergyVAD` (the defaults suit 16 kHz speech from a close mic)."""

    frame_ms: float = 20.0
    margin_db: float = 10.0
    abs_floor_db: float = -55.0
    floor_percentile: float = 10.0
    floor_history_s: float = 3.0
    hangover_s: float = 0.3

    def __post_init__(self) -> None:
        if self.frame_ms <= 0 or self.floor_history_s <= 0 or self.hangover_s < 0:
            raise ValueError("frame_ms and floor_history_s must be positive, hangover_s non-negative")
        if not 0.0 <= self.floor_percentile <= 100.0:
            raise ValueError("floor_percentile must be within [0, 100]")


@dataclass(frozen=True)
class VadFrame:
    """What one frame did to the VAD state (frame indices count from the stream start)."""

    index: int
    db: float
    floor_db: float
    loud: bool
    onset: bool  # first loud frame of a new speech run
    bridged: int  # frames before this one (a short pause) that now count as speech
    ended: bool  # the run ended here: the hangover after its last loud frame expired
    last_loud: Optional[int]  # index of the most recent loud frame (None before any)


def frame_db(frame: np.ndarray) -> float:
    """RMS level of a frame in dBFS (full scale = 1.0); digital silence gives -200."""
    x = np.asarray(frame, dtype=np.float64)
    if x.size == 0:
        return SILENCE_DB
    rms = math.sqrt(float(np.dot(x, x)) / x.size)
    return 20.0 * math.log10(rms) if rms > 1e-10 else SILENCE_DB


class EnergyVAD:
    """Frame-by-frame energy VAD with an adaptive noise floor and a hangover.

    Feed consecutive frames of :attr:`frame_length` samples to :meth:`process`; the
    caller (the stream gate) owns the audio and keeps its own per-frame speech flags
    from the returned :class:`VadFrame` events.
    """

    def __init__(self, sample_rate: int = 16000, config: Optional[VadConfig] = None) -> None:
        self.config = config or VadConfig()
        self.sample_rate = int(sample_rate)
        self.frame_length = max(1, int(round(self.sample_rate * self.config.frame_ms / 1000.0)))
        frame_s = self.frame_length / self.sample_rate
        self.hangover_frames = int(round(self.config.hangover_s / frame_s))
        self._history: deque[float] = deque(maxlen=max(1, int(round(self.config.floor_history_s / frame_s))))
        self.frames = 0
        self.in_speech = False
        self.last_loud: Optional[int] = None

    @property
    def frame_seconds(self) -> float:
        return self.frame_length / self.sample_rate

    def noise_floor(self) -> float:
        """Current adaptive floor (dBFS): a low percentile of recent frame levels."""
        if not self._history:
            return SILENCE_DB
        return float(np.percentile(np.fromiter(self._history, dtype=np.float64), self.config.floor_percentile))

    def process(self, frame: np.ndarray) -> VadFrame:
        """Classify one frame and update the speech-run state."""
        idx = self.frames
        self.frames += 1
        db = frame_db(frame)
        # The floor includes the current frame: on the very first frame of a stream the
        # floor equals its level, so a stream that opens on noise is never called speech.
        self._history.append(db)
        floor = self.noise_floor()
        loud = db > self.config.abs_floor_db and db > floor + self.config.margin_db
        onset = ended = False
        bridged = 0
        if loud:
            if self.in_speech and self.last_loud is not None:
                bridged = idx - self.last_loud - 1
            else:
                onset = True
            self.in_speech = True
            self.last_loud = idx
        elif self.in_speech and self.last_loud is not None and idx - self.last_loud > self.hangover_frames:
            self.in_speech = False
            ended = True
        return VadFrame(index=idx, db=db, floor_db=floor, loud=loud, onset=onset, bridged=bridged, ended=ended,
                        last_loud=self.last_loud)

    def label(self, x: np.ndarray) -> np.ndarray:
        """Per-frame speech flags (loud or bridged) for a whole signal; for tests and tuning.

        Only complete frames are labelled. Uses (and advances) this instance's state.
        """
        x = np.asarray(x, dtype=np.float32)
        n = len(x) // self.frame_length
        flags = np.zeros(n, dtype=bool)
        for i in range(n):
            ev = self.process(x[i * self.frame_length : (i + 1) * self.frame_length])
            if ev.loud:
                flags[i] = True
                if ev.bridged:
                    flags[i - ev.bridged : i] = True
        return flags
