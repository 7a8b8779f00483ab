"""The device-side detector: bundle + onnxruntime session → scores and decisions.

Everything that affects a decision comes from the bundle manifest (window rule,
calibration, thresholds); the only inputs here are the audio and how to run the
session on this device.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from .audio import check_scorable, load_audio, prepare_array
from .bundle import Bundle, load_bundle
from .errors import BundleError
from .session import SessionSettings, make_session
from .windows import WindowRule, combine_scores, make_windows

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


class Detector:
    """Scores audio with a bundle. Windows of one input go to the session in one call."""

    def __init__(self, bundle: Union[Bundle, str, os.PathLike], settings: Optional[SessionSettings] = None,
                 max_batch: int = 16) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.settings = settings or SessionSettings()
        self.session = make_session(self.bundle.model_path, self.settings,
                                    default_level=self.bundle.manifest["onnx"]["graph_optimization_level"])
        self.input_name = self.bundle.manifest["onnx"]["input"]
        self.output_name = self.bundle.manifest["onnx"]["output"]
        names_in = [i.name for i in self.session.get_inputs()]
        names_out = [o.name for o in self.session.get_outputs()]
        if self.input_name not in names_in or self.output_name not in names_out:
            raise BundleError(
                f"{self.bundle.model_path}: model has inputs {names_in} / outputs {names_out}, "
                f"manifest expects {self.input_name!r} / {self.output_name!r}"
            )
        self.max_batch = max(1, int(max_batch))

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def window_rule(self, mode: Optional[str] = None) -> WindowRule:
        rule = self.bundle.window_rule
        if mode is None or mode == rule.mode:
            return rule
        return WindowRule(window=rule.window, hop=rule.hop, mode=mode, combine=rule.combine)

    def score_windows(self, batch: np.ndarray) -> np.ndarray:
        """Raw scores for a ``[n, window]`` float32 batch (split into ``max_batch`` chunks)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        out = []
        for i in range(0, len(batch), self.max_batch):
            (scores,) = self.session.run([self.output_name], {self.input_name: batch[i : i + self.max_batch]})
            out.append(np.asarray(scores, dtype=np.float32).reshape(-1))
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def score_samples(self, samples: np.ndarray, source: str = "array", windows: Optional[str] = None,
                      started: Optional[float] = None) -> DetectionResult:
        """Decide on float32 mono samples already at the bundle's sample rate."""
        t0 = started if started is not None else time.perf_counter()
        sr = self.bundle.sample_rate
        check_scorable(samples, sr, self.bundle.min_seconds, name=source)
        rule = self.window_rule(windows)
        batch, starts = make_windows(samples, rule)
        t_inf = time.perf_counter()
        scores = self.score_windows(batch)
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
            total_ms=(time.perf_counter() - t0) * 1000.0,
        )

    def score_array(self, samples: np.ndarray, sample_rate: int, source: str = "array",
                    windows: Optional[str] = None) -> DetectionResult:
        """Decide on an in-memory signal at any rate and channel layout ([n] or [n, channels])."""
        t0 = time.perf_counter()
        x = prepare_array(samples, sample_rate, self.bundle.sample_rate)
        return self.score_samples(x, source=source, windows=windows, started=t0)

    def score_file(self, path: Union[str, os.PathLike], windows: Optional[str] = None) -> DetectionResult:
        """Decode a file with the shared preprocessing and decide on it."""
        t0 = time.perf_counter()
        decoded = load_audio(path, self.bundle.sample_rate, max_seconds=self.bundle.max_seconds)
        result = self.score_samples(decoded.samples, source=str(path), windows=windows, started=t0)
        result.extra["source_rate"] = decoded.source_rate
        result.extra["source_channels"] = decoded.source_channels
        return result
