"""Streaming decisions on live audio: ring buffer, incremental windows, the listen rule.

This module knows nothing about PyAudio: it takes float32 mono samples at the model
rate (16 kHz), in chunks of any size, and returns decisions. That keeps the whole
decision logic testable with arrays, and lets `edge-detect listen`, the benchmarks and
a user's own capture code share it.

The rule (stated in `edge-detect listen --help` and docs/microphone.md)
-----------------------------------------------------------------------
Positions are samples since the stream started (after resampling to 16 kHz).

1. **Segment start.** Nothing is scored before the VAD hears speech. At the first
   speech frame the segment starts ``preroll`` (0.5 s) earlier, so the leading
   silence the model was trained with is there; never before the end of the previous
   decision (continuous mode) or the oldest audio still buffered.
2. **Trigger.** A decision is due once the segment holds at least ``min_speech``
   seconds of speech (VAD frames, pauses shorter than the hangover included) and
   either the speech has ended (the hangover expired), or the segment reached its
   longest length (``window + (max_windows - 1) * hop``; one window for
   ``windows=first``), or the time limit came (``finish``).
3. **At least one full window.** A segment shorter than one model window is extended
   backwards over the audio before it (silence stays in, nothing is cut). Only a
   stream younger than one window waits for the window to fill (or, at the time
   limit, is tiled end to end: the bundle's pad rule).
4. **Scoring = ``edge-detect score`` on the segment.** ``windows=first``: the first
   window of the segment. ``windows=all``: windows every ``hop`` from the segment
   start plus one aligned to its end, combined by the bundle's rule (mean / median /
   min), exactly as :func:`edge_detector.windows.make_windows` lays them out; windows
   that complete while audio is still arriving are scored at once, so at the trigger
   usually only the last one is left. Then calibration and the two thresholds:
   accept at or above ``accept``, reject below ``reject``, uncertain between.
5. **Segments that never get enough speech** slide forward (by one hop) instead of
   growing; a segment left without any speech is dropped.
6. **Speech presence.** Before the model runs, the span it would score (the first window,
   or the whole segment with ``windows=all``) must hold speech
   (:mod:`edge_detector.speech_presence`); otherwise the decision is ``not_speech`` with no
   score, the latch does not move, and the stream goes on after the segment.

After a decision (continuous mode) the next segment starts where this one ended.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from .detector import UNCERTAIN, decide
from .resample import StreamResampler  # noqa: F401  (lives with the resampler; re-exported here)
from .speech_presence import judge
from .vad import EnergyVAD, VadConfig
from .windows import WindowRule, combine_scores, first_window, window_starts

__all__ = [
    "RingBuffer",
    "StreamResampler",
    "GatePolicy",
    "DecisionLatch",
    "StreamDecision",
    "StreamGate",
    "RULE_TEXT",
]

#: One-paragraph statement of the combination rule, shared by `listen --help` and docs.
RULE_TEXT = (
    "Decision rule: scoring starts 0.5 s before the first speech the energy VAD hears. "
    "A decision is made once at least --min-speech seconds of speech were heard and the "
    "speech ended (0.3 s of quiet), or the segment reached window + (max-windows - 1) x hop "
    "(one window with --windows first), or --seconds ran out. The segment is at least one "
    "full model window (extended backwards over earlier audio, silences kept, never trimmed) "
    "and is scored exactly like `edge-detect score` on that audio: 'first' = its first window; "
    "'all' = windows every hop plus one aligned to its end, combined by the bundle's rule "
    "(mean/median/min). The calibrated score then meets the bundle's two thresholds: accept at "
    "or above 'accept', reject below 'reject', uncertain between. A segment whose scored span holds "
    "no speech (a tone, a buzz, noise, clicks) is refused before the model: decision not_speech."
)

#: Decision of a segment refused by the speech-presence check (no score).
NOT_SPEECH = "not_speech"


class RingBuffer:
    """Fixed-capacity float32 ring addressed by absolute sample position.

    The stream gate asks for "samples ``start`` to ``end`` since the stream began"; the
    ring answers as long as they are still held, so no caller has to track offsets.
    """

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = int(capacity)
        self._buf = np.zeros(self.capacity, dtype=np.float32)
        self.total = 0  # samples ever written

    @property
    def oldest(self) -> int:
        """Absolute position of the oldest sample still held."""
        return max(0, self.total - self.capacity)

    def write(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        n = len(x)
        if n == 0:
            return
        if n >= self.capacity:  # only the newest `capacity` samples can survive
            x = x[n - self.capacity :]
            self.total += n - self.capacity
            n = self.capacity
        pos = self.total % self.capacity
        first = min(n, self.capacity - pos)
        self._buf[pos : pos + first] = x[:first]
        if first < n:
            self._buf[: n - first] = x[first:]
        self.total += n

    def read(self, start: int, end: int) -> np.ndarray:
        """Copy of samples ``[start, end)``; raises ValueError if any were overwritten or are in the future."""
        if start < self.oldest or end > self.total or start > end:
            raise ValueError(f"samples [{start}, {end}) not held (ring holds [{self.oldest}, {self.total}))")
        n = end - start
        out = np.empty(n, dtype=np.float32)
        pos = start % self.capacity
        first = min(n, self.capacity - pos)
        out[:first] = self._buf[pos : pos + first]
        if first < n:
            out[first:] = self._buf[: n - first]
        return out


@dataclass(frozen=True)
class GatePolicy:
    """When the listener decides (profile `gate` section / CLI options)."""

    min_speech: float = 1.5  # seconds of VAD speech before a decision
    max_windows: int = 3  # longest segment: window + (max_windows - 1) * hop
    preroll: float = 0.5  # seconds kept before the first speech frame
    hop: Optional[int] = None  # streaming hop in samples (None = the bundle's hop)
    mode: Optional[str] = None  # "first" / "all" (None = the bundle's mode)
    combine: Optional[str] = None  # mean / median / min (None = the bundle's rule)

    def __post_init__(self) -> None:
        if not (self.min_speech > 0 and math.isfinite(self.min_speech)):
            raise ValueError("min_speech must be a positive number of seconds")
        if self.max_windows < 1:
            raise ValueError("max_windows must be at least 1")
        if self.preroll < 0:
            raise ValueError("preroll must not be negative")
        if self.hop is not None and self.hop <= 0:
            raise ValueError("hop must be positive")
        if self.mode not in (None, "first", "all"):
            raise ValueError("mode must be 'first' or 'all'")
        if self.combine not in (None, "mean", "median", "min"):
            raise ValueError("combine must be 'mean', 'median' or 'min'")


class DecisionLatch:
    """Hysteresis over the two thresholds for continuous listening (a Schmitt trigger).

    Each decision is already three-way (accept / uncertain / reject). The latch is the
    *state* a monitor shows between decisions: it moves to accept only on a score at or
    above ``accept`` and to reject only on one below ``reject``; an uncertain score
    leaves it where it was, so a voice hovering in the band does not flicker. It starts
    uncertain. The gate's exit code never uses the latch: `--once` exits on the
    decision itself (fail closed).
    """

    def __init__(self, accept: float, reject: float) -> None:
        if reject > accept:
            raise ValueError("reject threshold must not exceed accept threshold")
        self.accept, self.reject = float(accept), float(reject)
        self.state = UNCERTAIN

    def update(self, llr: float) -> str:
        d = decide(llr, self.accept, self.reject)
        if d != UNCERTAIN:
            self.state = d
        return self.state


@dataclass
class StreamDecision:
    """One decision on a segment of the stream (positions in samples since stream start)."""

    start: int
    end: int
    sample_rate: int
    windows: list[tuple[int, int, float]]
    score: float
    llr: float
    decision: str
    state: str
    combine: str
    trigger: str  # end_of_speech | max_length | timeout
    speech_samples: int
    speech_end: Optional[int]  # end of the last speech frame in the segment
    position: int  # stream position when the decision was made
    inference_ms: float  # model time spent at the trigger (windows not scored before)
    thresholds: dict[str, float] = field(default_factory=dict)
    speech: Optional[dict[str, Any]] = None  # the speech-presence evidence, when checked

    def to_record(self) -> dict[str, Any]:
        sr = float(self.sample_rate)
        return {
            "start": round(self.start / sr, 4),
            "end": round(self.end / sr, 4),
            "decision": self.decision,
            "score": self.score if math.isfinite(self.score) else None,
            "llr": self.llr if math.isfinite(self.llr) else None,
            "state": self.state,
            "thresholds": dict(self.thresholds),
            "combine": self.combine,
            "windows": [{"start": round(s / sr, 4), "end": round(e / sr, 4), "score": v} for s, e, v in self.windows],
            "trigger": self.trigger,
            "speech_s": round(self.speech_samples / sr, 3),
            "speech_end": None if self.speech_end is None else round(self.speech_end / sr, 4),
            "inference_ms": round(self.inference_ms, 3),
            **({} if self.speech is None else {"speech": self.speech}),
        }


class StreamGate:
    """Feed 16 kHz float32 chunks, get :class:`StreamDecision` objects (see module docstring)."""

    def __init__(
        self,
        score_windows: Callable[[np.ndarray], np.ndarray],
        calibrate: Callable[[float], float],
        accept: float,
        reject: float,
        rule: WindowRule,
        sample_rate: int = 16000,
        policy: Optional[GatePolicy] = None,
        vad_config: Optional[VadConfig] = None,
        min_seconds: float = 0.5,
        require_speech: bool = True,
    ) -> None:
        self.policy = policy or GatePolicy()
        self.require_speech = bool(require_speech)
        mode = self.policy.mode or rule.mode
        self.rule = WindowRule(window=rule.window, hop=self.policy.hop or rule.hop, mode=mode,
                               combine=self.policy.combine or rule.combine)
        self.sample_rate = int(sample_rate)
        self._score_windows = score_windows
        self._calibrate = calibrate
        self.accept, self.reject = float(accept), float(reject)
        self.latch = DecisionLatch(accept, reject)
        self.min_seconds = float(min_seconds)
        self.vad = EnergyVAD(self.sample_rate, vad_config)
        self.frame = self.vad.frame_length
        W, H = self.rule.window, self.rule.hop
        self.max_len = W if mode == "first" else W + (self.policy.max_windows - 1) * H
        self.min_speech_samples = int(round(self.policy.min_speech * self.sample_rate))
        self.preroll_samples = int(round(self.policy.preroll * self.sample_rate))
        # Hold the longest segment, its pre-roll, one extra window (extension) and slack.
        capacity = self.max_len + self.preroll_samples + W + self.sample_rate
        self.ring = RingBuffer(capacity)
        self._flags = np.zeros(capacity // self.frame + 4, dtype=bool)
        self._pending = np.zeros(0, dtype=np.float32)  # samples of an incomplete frame
        self.position = 0  # samples fed (== ring.total)
        self.origin = 0  # no segment may start before this (end of the previous decision)
        self.seg_start: Optional[int] = None
        self._scored: dict[int, float] = {}  # absolute window start -> raw score (mode all)
        self._waiting: Optional[str] = None  # trigger held until the first window fills
        self.decisions = 0
        self.refusals = 0  # segments refused by the speech-presence check
        self.inference_ms_total = 0.0

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_detector(cls, detector: Any, policy: Optional[GatePolicy] = None,
                      vad_config: Optional[VadConfig] = None) -> "StreamGate":
        """A gate that scores with a :class:`~edge_detector.detector.Detector` and its bundle's rules."""
        b = detector.bundle
        return cls(detector.score_windows, b.calibrate, b.accept_threshold, b.reject_threshold, b.window_rule,
                   sample_rate=b.sample_rate, policy=policy, vad_config=vad_config, min_seconds=b.min_seconds,
                   require_speech=getattr(detector, "require_speech", True))

    # -- bookkeeping ----------------------------------------------------------------------
    def _flag_slot(self, frame_index: int) -> int:
        return frame_index % len(self._flags)

    def speech_in(self, start: int, end: int) -> int:
        """Samples of VAD speech in ``[start, end)`` (frame resolution)."""
        f0, f1 = start // self.frame, -(-end // self.frame)
        f1 = min(f1, self.vad.frames)
        f0 = max(f0, self.vad.frames - len(self._flags) + 1, 0)
        if f1 <= f0:
            return 0
        idx = np.arange(f0, f1) % len(self._flags)
        return int(self._flags[idx].sum()) * self.frame

    def last_speech_end(self, start: int, end: int) -> Optional[int]:
        """End position of the last speech frame within ``[start, end)``, if any."""
        f0 = max(start // self.frame, self.vad.frames - len(self._flags) + 1, 0)
        f1 = min(-(-end // self.frame), self.vad.frames)
        for f in range(f1 - 1, f0 - 1, -1):
            if self._flags[self._flag_slot(f)]:
                return min(end, (f + 1) * self.frame)
        return None

    @property
    def speech_samples(self) -> int:
        """Speech heard in the current segment so far (0 when there is none)."""
        return 0 if self.seg_start is None else self.speech_in(self.seg_start, self.position)

    # -- feeding --------------------------------------------------------------------------
    def feed(self, x: np.ndarray) -> list[StreamDecision]:
        """Append samples (float32 mono at the model rate) and return the decisions they completed."""
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        if len(self._pending):
            x = np.concatenate([self._pending, x])
        out: list[StreamDecision] = []
        n_frames = len(x) // self.frame
        for i in range(n_frames):
            d = self._step(x[i * self.frame : (i + 1) * self.frame])
            if d is not None:
                out.append(d)
        self._pending = x[n_frames * self.frame :].copy()
        return out

    def _step(self, frame: np.ndarray) -> Optional[StreamDecision]:
        self.ring.write(frame)
        self.position += len(frame)
        p = self.position
        ev = self.vad.process(frame)
        slot = self._flag_slot(ev.index)
        self._flags[slot] = ev.loud
        if ev.loud and ev.bridged:
            for f in range(ev.index - ev.bridged, ev.index):
                self._flags[self._flag_slot(f)] = True

        if self._waiting is not None:  # a trigger waiting for the stream's first full window
            if p >= self.rule.window:
                return self._decide(0, self.rule.window, self._waiting)
            return None

        if self.seg_start is None:
            if not ev.loud:
                return None
            onset = ev.index * self.frame
            self.seg_start = max(self.origin, onset - self.preroll_samples, self.ring.oldest)
            self._scored.clear()

        s = self.seg_start
        speech = self.speech_in(s, p)
        enough = speech >= self.min_speech_samples
        if enough and p - s >= self.max_len:
            return self._trigger(s, s + self.max_len, "max_length")
        if enough and ev.ended:
            return self._trigger(s, p, "end_of_speech")
        # Not enough speech yet: a segment may not grow past its longest length.
        if p - s > self.max_len:
            step = self.rule.hop if self.rule.mode == "all" else self.frame
            while p - s > self.max_len:
                s += step
            self.seg_start = s
            self._scored = {k: v for k, v in self._scored.items() if k >= s}
            if self.speech_in(s, p) == 0 and not self.vad.in_speech:
                self.seg_start = None
                self._scored.clear()
                return None
        self._score_ready(s, p)
        return None

    def _score_ready(self, s: int, p: int) -> None:
        """Score the hop-grid windows of the segment that are complete (mode all)."""
        if self.rule.mode != "all":
            return
        W, H = self.rule.window, self.rule.hop
        starts = [g for g in range(s, p - W + 1, H) if g not in self._scored and g + W <= s + self.max_len]
        if not starts:
            return
        batch = np.stack([self.ring.read(g, g + W) for g in starts])
        t0 = time.perf_counter()
        scores = np.asarray(self._score_windows(batch), dtype=np.float64).reshape(-1)
        self.inference_ms_total += (time.perf_counter() - t0) * 1000.0
        for g, v in zip(starts, scores):
            self._scored[g] = float(v)

    def _trigger(self, s: int, e: int, kind: str) -> Optional[StreamDecision]:
        W = self.rule.window
        if e - s < W:
            if e >= W:
                s = max(e - W, self.ring.oldest)
            else:  # the stream itself is younger than one window: wait for it to fill
                self._waiting = kind
                return None
        return self._decide(s, e, kind)

    def _decide(self, s: int, e: int, kind: str) -> StreamDecision:
        W = self.rule.window
        seg = self.ring.read(s, e)
        if self.require_speech:
            ev = judge(seg[:W] if self.rule.mode == "first" else seg, self.sample_rate)
            if not ev.speech:
                return self._refuse(s, e, kind, ev.to_dict())
        if self.rule.mode == "first" or len(seg) <= W:
            rel = [0]
            wins = [(s, min(e, s + W))]
        else:
            rel = window_starts(len(seg), W, self.rule.hop)
            wins = [(s + r, s + r + W) for r in rel]
        todo = [i for i, (a, _) in enumerate(wins) if not (self.rule.mode == "all" and len(seg) > W and a in self._scored)]
        scores = np.zeros(len(wins), dtype=np.float64)
        inf_ms = 0.0
        if todo:
            batch = np.stack([first_window(seg[rel[i] : rel[i] + W], W) for i in todo])
            t0 = time.perf_counter()
            raw = np.asarray(self._score_windows(batch), dtype=np.float64).reshape(-1)
            inf_ms = (time.perf_counter() - t0) * 1000.0
            self.inference_ms_total += inf_ms
            for i, v in zip(todo, raw):
                scores[i] = v
        for i, (a, _) in enumerate(wins):
            if i not in todo:
                scores[i] = self._scored[a]
        combined = combine_scores(scores, self.rule.combine)
        llr = float(self._calibrate(combined))
        decision = decide(llr, self.accept, self.reject)
        state = self.latch.update(llr)
        result = StreamDecision(
            start=s, end=e, sample_rate=self.sample_rate,
            windows=[(a, b, float(v)) for (a, b), v in zip(wins, scores)],
            score=float(combined), llr=llr, decision=decision, state=state,
            combine=self.rule.combine if len(wins) > 1 else "single", trigger=kind,
            speech_samples=self.speech_in(s, e), speech_end=self.last_speech_end(s, e), position=self.position,
            inference_ms=inf_ms, thresholds={"accept": self.accept, "reject": self.reject},
        )
        self.decisions += 1
        self._next_segment(e)
        return result

    def _next_segment(self, e: int) -> None:
        """After a decision (or a refusal) ending at ``e``: the next segment starts there (at once if speech goes on)."""
        self.origin = e
        self._waiting = None
        self._scored.clear()
        self.seg_start = e if self.vad.in_speech else None

    def _refuse(self, s: int, e: int, kind: str, evidence: dict[str, Any]) -> StreamDecision:
        """A ``not_speech`` decision: no score, the latch unchanged; the stream goes on after ``e``."""
        nan = float("nan")
        result = StreamDecision(
            start=s, end=e, sample_rate=self.sample_rate, windows=[], score=nan, llr=nan, decision=NOT_SPEECH,
            state=self.latch.state, combine="none", trigger=kind, speech_samples=self.speech_in(s, e),
            speech_end=self.last_speech_end(s, e), position=self.position, inference_ms=0.0,
            thresholds={"accept": self.accept, "reject": self.reject}, speech=evidence,
        )
        self.refusals += 1
        self._next_segment(e)
        return result

    def finish(self) -> Optional[StreamDecision]:
        """Time is up: decide on what was heard if it was enough speech, else return None."""
        if self._waiting is not None:
            return self._decide(0, min(self.position, self.rule.window), "timeout")
        if self.seg_start is None:
            return None
        s, p = self.seg_start, self.position
        if self.speech_in(s, p) < self.min_speech_samples:
            return None
        W = self.rule.window
        if p - s < W:
            s = max(0, p - W, self.ring.oldest)
        if (p - s) / self.sample_rate < self.min_seconds:
            return None
        return self._decide(s, p, "timeout")
