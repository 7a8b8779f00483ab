"""The device-side detector: bundle + its family's scorer → scores and decisions.

Everything that affects a decision comes from the bundle manifest (model family, front
end, window rule, calibration, thresholds); the only inputs here are the audio and how
to run the model on this device. The scorer comes from the family registry
(:mod:`edge_detector.families`): an onnxruntime session for the ONNX families.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional, Union

import numpy as np

from .audio import check_scorable, load_audio, prepare_array
from .bundle import Bundle, load_bundle
from .errors import BundleError
from .frontend import FrontEndSpec, SincFFTFrontEnd
from .session import SessionSettings
from .speech_presence import check_speech
from .windows import WindowRule, combine_scores, make_windows, scored_audio, window_starts

ACCEPT, REJECT, UNCERTAIN = "accept", "reject", "uncertain"


@dataclass
class DetectionResult:
    """One decision about one piece of audio (serialises to one JSON line)."""

    source: str
    duration: float
    windows: list[dict[str, float]]
    score: float  # combined raw score (log P(bona fide))
    calibrated: float
    decision: str
    thresholds: dict[str, float]
    combine: str
    model_id: str
    model_sha256: str
    provider: str
    latency_ms: float  # inference only
    total_ms: float  # decode + preprocessing + inference
    extra: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        rec = asdict(self)
        rec.pop("extra")
        out: dict[str, Any] = {"file": rec.pop("source"), "duration": rec.pop("duration")}
        out["decision"] = rec.pop("decision")
        out["score"] = rec.pop("score")
        out["llr"] = rec.pop("calibrated")
        out.update(rec)
        out.update(self.extra)
        return out


def decide(calibrated: float, accept: float, reject: float) -> str:
    """Two thresholds: accept at or above ``accept``, reject below ``reject``, uncertain between."""
    if not np.isfinite(calibrated):
        return REJECT
    if calibrated >= accept:
        return ACCEPT
    if calibrated < reject:
        return REJECT
    return UNCERTAIN


class WindowScorer:
    """Raw windows → raw scores: the optional numpy front end, then the onnxruntime session.

    One class for every place that must score exactly as the device does: the Detector,
    the export parity gate and the int8 calibration/evaluation all go through it, so a
    bundle is never checked or calibrated on a path the device does not run.
    """

    def __init__(self, session: Any, input_name: str, output_name: str,
                 frontend: Optional[FrontEndSpec] = None, max_batch: int = 16, where: str = "model") -> None:
        self.session = session
        self.input_name = input_name
        self.output_name = output_name
        self.frontend = SincFFTFrontEnd(frontend) if frontend is not None else None
        self.max_batch = max(1, int(max_batch))
        self.where = where
        inputs = {i.name: i for i in session.get_inputs()}
        names_out = [o.name for o in session.get_outputs()]
        if input_name not in inputs or output_name not in names_out:
            raise BundleError(
                f"{where}: model has inputs {list(inputs)} / outputs {names_out}, "
                f"manifest expects {input_name!r} / {output_name!r}"
            )
        shape = list(inputs[input_name].shape or [])  # empty: the model states no shape; nothing to check
        expected_rank = 3 if frontend is not None else 2
        if shape and len(shape) != expected_rank:
            raise BundleError(
                f"{where}: model input {input_name!r} has shape {shape}; the manifest's front end "
                f"({'numpy ' + frontend.type if frontend is not None else 'none: waveform in'}) "
                f"needs rank {expected_rank}"
            )
        if frontend is not None and len(shape) == 3 and isinstance(shape[1], int) and shape[1] != int(frontend.filters):
            raise BundleError(f"{where}: model takes {shape[1]} filter channels, frontend.filters is {frontend.filters}")

    def model_inputs(self, windows: np.ndarray) -> np.ndarray:
        """What the session is fed for ``[n, window]`` raw windows (features when there is a front end)."""
        batch = np.ascontiguousarray(windows, dtype=np.float32)
        return self.frontend(batch) if self.frontend is not None else batch

    @property
    def providers(self) -> list[str]:
        """The onnxruntime execution providers of the session, first = the one used."""
        return list(self.session.get_providers())

    def run_inputs(self, inputs: np.ndarray) -> np.ndarray:
        """One score per row of ``inputs``; BundleError if the graph returns any other number of values."""
        (scores,) = self.session.run([self.output_name], {self.input_name: inputs})
        flat = np.asarray(scores, dtype=np.float32).reshape(-1)
        if flat.size != len(inputs):
            raise BundleError(f"{self.where}: model output {self.output_name!r} has shape {list(np.shape(scores))} "
                              f"for {len(inputs)} window(s); the runtime needs one score per window")
        return flat

    def score_signal(self, samples: np.ndarray, rule: WindowRule) -> tuple[np.ndarray, list[int]]:
        """Raw scores of the windows ``rule`` takes from the 1-D float32 ``samples``, and their starts.

        With a numpy front end and several overlapping windows (``mode="all"``), the
        front end filters each stretch of signal once for up to ``max_batch`` windows
        (:meth:`SincFFTFrontEnd.features_windows`) instead of once per window, and no
        ``[n, window]`` copy of the signal is made; otherwise the stacked windows are
        scored by :meth:`score`.
        """
        x = np.asarray(samples, dtype=np.float32)
        if self.frontend is None or rule.mode == "first" or len(x) <= rule.window:
            batch, starts = make_windows(x, rule)
            return self.score(batch), starts
        starts = window_starts(len(x), rule.window, rule.hop)
        f, pooled = self.frontend.spec.output_shape(rule.window)
        feats = np.empty((min(self.max_batch, len(starts)), f, pooled), dtype=np.float32)  # reused per batch
        out = []
        for i in range(0, len(starts), self.max_batch):
            part = starts[i: i + self.max_batch]
            out.append(self.run_inputs(self.frontend.features_windows(x, part, rule.window, out=feats[: len(part)])))
        return np.concatenate(out), starts

    def score(self, batch: np.ndarray) -> np.ndarray:
        """Raw scores for ``[n, window]`` windows, ``max_batch`` at a time (bounded memory)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        out = [self.run_inputs(self.model_inputs(batch[i : i + self.max_batch]))
               for i in range(0, len(batch), self.max_batch)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)


#: Windows per model call in the Detector. In a fresh `edge-detect score --windows all` process
#: a larger batch makes onnxruntime and the front end touch more fresh memory, and the
#: first-touch page faults cost more than batching saves; 4 overlapping windows still share
#: most of their front-end work (SincFFTFrontEnd.features_windows). Per-window CPU time and
#: peak RSS for 1, 4 and 16: benchmarks/results/batch_size.json (benchmarks/batch_size.py).
DEFAULT_MAX_BATCH = 4


class Detector:
    """Scores audio with a bundle. Windows of one input go to the scorer in one call.

    The scorer is made by the family the manifest names (``model.family``, see
    :mod:`edge_detector.families`); ``session`` is its onnxruntime session when it has
    one (ONNX families), else None.
    """

    def __init__(self, bundle: Union[Bundle, str, os.PathLike], settings: Optional[SessionSettings] = None,
                 max_batch: int = DEFAULT_MAX_BATCH, require_speech: bool = True) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.settings = settings or SessionSettings()
        self.max_batch = max(1, int(max_batch))
        #: Refuse audio without speech (NotSpeechError, exit 13) before the model runs. Every
        #: accepting path keeps it on; only evaluating or calibrating the model alone turns it off.
        self.require_speech = bool(require_speech)
        self.scorer = self.bundle.family.make_scorer(self.bundle, self.settings, self.max_batch)
        self.session = getattr(self.scorer, "session", None)

    @property
    def providers(self) -> list[str]:
        """What runs the model, first = the one used (onnxruntime providers, or ``numpy``)."""
        return list(self.scorer.providers)

    @property
    def provider(self) -> str:
        return self.providers[0]

    def window_rule(self, mode: Optional[str] = None) -> WindowRule:
        rule = self.bundle.window_rule
        if mode is None or mode == rule.mode:
            return rule
        return WindowRule(window=rule.window, hop=rule.hop, mode=mode, combine=rule.combine)

    def score_windows(self, batch: np.ndarray) -> np.ndarray:
        """Raw scores for a ``[n, window]`` float32 batch of raw windows (split into ``max_batch`` chunks).

        When the manifest declares a numpy front end, the scorer computes it before the
        model runs, so callers always pass raw windows whatever the bundle.
        """
        self.scorer.max_batch = self.max_batch
        return self.scorer.score(batch)

    def score_signal(self, samples: np.ndarray, rule: WindowRule) -> tuple[np.ndarray, list[int]]:
        """Raw scores of the windows ``rule`` takes from 1-D float32 ``samples``, and their start offsets.

        A scorer that offers ``score_signal`` (the ONNX scorer with a numpy front end)
        filters overlapping windows once; any other gets the stacked windows.
        """
        self.scorer.max_batch = self.max_batch
        fn = getattr(self.scorer, "score_signal", None)
        if fn is not None:
            return fn(samples, rule)
        batch, starts = make_windows(samples, rule)
        return self.scorer.score(batch), starts

    def score_samples(self, samples: np.ndarray, source: str = "array", windows: Optional[str] = None,
                      started: Optional[float] = None) -> DetectionResult:
        """Decide on float32 mono samples already at the bundle's sample rate."""
        t0 = started if started is not None else time.perf_counter()
        sr = self.bundle.sample_rate
        check_scorable(samples, sr, self.bundle.min_seconds, name=source)
        rule = self.window_rule(windows)
        speech = None
        if self.require_speech:  # judged on what the windows cover; the model still sees it all, untrimmed
            speech = check_speech(scored_audio(samples, rule), sr, name=source).to_dict()
        t_inf = time.perf_counter()
        scores, starts = self.score_signal(samples, rule)
        latency = (time.perf_counter() - t_inf) * 1000.0
        combined = combine_scores(scores, rule.combine)
        calibrated = self.bundle.calibrate(combined)
        decision = decide(calibrated, self.bundle.accept_threshold, self.bundle.reject_threshold)
        wins = [{"start": s / sr, "end": min(len(samples), s + rule.window) / sr, "score": float(v)}
                for s, v in zip(starts, scores)]
        return DetectionResult(
            source=source, duration=len(samples) / sr, windows=wins, score=combined, calibrated=calibrated,
            decision=decision,
            thresholds={"accept": self.bundle.accept_threshold, "reject": self.bundle.reject_threshold},
            combine=rule.combine if len(wins) > 1 else "single", model_id=self.bundle.model_id,
            model_sha256=self.bundle.model_sha256, provider=self.provider, latency_ms=latency,
            total_ms=(time.perf_counter() - t0) * 1000.0, extra={} if speech is None else {"speech": speech},
        )

    def score_array(self, samples: np.ndarray, sample_rate: int, source: str = "array",
                    windows: Optional[str] = None) -> DetectionResult:
        """Decide on an in-memory signal at any rate and channel layout ([n] or [n, channels])."""
        t0 = time.perf_counter()
        x = prepare_array(samples, sample_rate, self.bundle.sample_rate)
        return self.score_samples(x, source=source, windows=windows, started=t0)

    def _decode(self, path: Union[str, os.PathLike, BinaryIO], rule: WindowRule, name: str,
                max_seconds: Optional[float] = None) -> Any:
        """Decode only what ``rule`` scores: the first window (plus the resampler's margin) for
        "first"; the whole file, block by block up to the limit, for "all"."""
        limit = self.bundle.max_seconds if max_seconds is None else min(max_seconds, self.bundle.max_seconds)
        return load_audio(path, self.bundle.sample_rate, max_seconds=limit, name=name,
                          first_samples=rule.window if rule.mode == "first" else None)

    def features_file(self, path: Union[str, os.PathLike], windows: Optional[str] = "first") -> np.ndarray:
        """What `calibrate` fits on for one file, ``[k]`` float64: the scorer's ``features`` of the rule's
        windows (a fusion's members' calibrated scores), each column combined by the bundle's rule;
        for a single model (k = 1) the combined raw score, as :meth:`score_file` gives it. No speech
        check. Raises AudioError / MissingFileError subclasses."""
        rule = self.window_rule(windows)
        samples = self._decode(path, rule, str(path)).samples
        check_scorable(samples, self.bundle.sample_rate, self.bundle.min_seconds, name=str(path))
        self.scorer.max_batch = self.max_batch
        fn = getattr(self.scorer, "features_signal", None)
        feats = fn(samples, rule)[0] if fn is not None else self.score_signal(samples, rule)[0][:, None]
        return np.array([combine_scores(col, rule.combine) for col in np.asarray(feats).T], dtype=np.float64)

    def score_file(self, path: Union[str, os.PathLike, BinaryIO], windows: Optional[str] = None,
                   source: Optional[str] = None, max_seconds: Optional[float] = None,
                   on_scored: Optional[Callable[[np.ndarray, DetectionResult], None]] = None) -> DetectionResult:
        """Decode a file with the shared preprocessing and decide on it.

        ``path`` may be a seekable binary file object (an upload held in memory), named
        ``source`` in the record and messages. ``max_seconds`` may only lower the
        bundle's own duration limit. ``on_scored(samples, result)``, when given, is called
        after a decision with the float32 mono samples the windows covered (the first
        window's span, or all decoded audio for "all"; :func:`scored_audio`), e.g. to keep
        them as enrolment audio. Raises AudioError / MissingFileError subclasses.
        """
        t0 = time.perf_counter()
        name = source if source is not None else str(path)
        rule = self.window_rule(windows)
        decoded = self._decode(path, rule, name, max_seconds)
        result = self.score_samples(decoded.samples, source=name, windows=windows, started=t0)
        if not decoded.complete:  # stopped after the first window: the rest was never decoded
            result.duration = max(result.duration, decoded.declared_seconds)
            result.extra["decoded_seconds"] = round(len(decoded.samples) / self.bundle.sample_rate, 4)
        result.extra["source_rate"] = decoded.source_rate
        result.extra["source_channels"] = decoded.source_channels
        if on_scored is not None:
            on_scored(scored_audio(decoded.samples, rule), result)
        return result
