"""Score calibration and the accept / uncertain / reject thresholds (numpy only).

The raw model score (log P(bona fide)) is not a likelihood ratio: its scale depends on
training class weights and data. Calibration fits an affine map ``llr = a * score + b``
by prior-weighted logistic regression on labelled audio (both classes weighted equally,
so the result reads as a log-likelihood ratio). Thresholds then come from the same
labelled scores: the accept threshold keeps the false-accept rate at most
``target_far``, the reject threshold keeps the false-reject rate at most ``target_frr``,
and neither crosses the EER point; between them the gate answers "uncertain".
Runs on the device too (no torch), so a deployment can be re-calibrated in place.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DataError
from .metrics import compute_eer


class CalibrationError(DataError):
    """A calibration or threshold target that would make the gate's decisions wrong (exit 5)."""

    kind = "bad_calibration"


@dataclass(frozen=True)
class Calibration:
    scale: float
    offset: float

    def apply(self, scores: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(scores, dtype=np.float64) + self.offset


def fit_logistic_calibration(bonafide: np.ndarray, spoof: np.ndarray, l2: float = 1e-4,
                             iterations: int = 100) -> Calibration:
    """Prior-weighted (0.5 / 0.5) logistic regression of the label on the score, by Newton steps.

    A small L2 penalty on the slope keeps the fit finite when the classes are perfectly
    separated (then the slope would otherwise grow without bound).
    """
    bona = np.asarray(bonafide, dtype=np.float64)
    spoof = np.asarray(spoof, dtype=np.float64)
    if bona.size == 0 or spoof.size == 0:
        raise ValueError("calibration needs both bona fide and spoofed examples")
    x = np.concatenate([bona, spoof])
    y = np.concatenate([np.ones_like(bona), np.zeros_like(spoof)])
    w = np.concatenate([np.full(bona.size, 0.5 / bona.size), np.full(spoof.size, 0.5 / spoof.size)])
    # Standardise for a well-conditioned problem, map back at the end.
    mu, sd = float(x.mean()), float(x.std()) or 1.0
    z = (x - mu) / sd
    theta = np.zeros(2)  # slope, intercept on standardised scores
    for _ in range(iterations):
        logit = theta[0] * z + theta[1]
        p = 1.0 / (1.0 + np.exp(-logit))
        g = np.array([np.sum(w * (p - y) * z) + l2 * theta[0], np.sum(w * (p - y))])
        s = w * p * (1 - p)
        h = np.array([[np.sum(s * z * z) + l2, np.sum(s * z)], [np.sum(s * z), np.sum(s) + 1e-12]])
        step = np.linalg.solve(h, g)
        theta -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    a = theta[0] / sd
    b = theta[1] - theta[0] * mu / sd
    return Calibration(float(a), float(b))


def check_calibration(cal: Calibration) -> Calibration:
    """Refuse a fit with a slope that is not a positive finite number; return ``cal`` unchanged.

    The manifest's score orientation is "higher is bona fide", so calibrated = a * score + b
    must increase with the score. A negative slope means the labelled scores rank spoofs
    above bona fide: almost always a protocol with the labels swapped (or the wrong
    protocol for this audio). Raises CalibrationError.
    """
    if not (np.isfinite(cal.scale) and np.isfinite(cal.offset)):
        raise CalibrationError(f"calibration fit is not finite (slope {cal.scale}, offset {cal.offset})")
    if cal.scale <= 0:
        raise CalibrationError(
            f"calibration slope {cal.scale:.4g} is not positive: on this data the model scores spoofs higher than "
            "bona fide. Are the protocol's labels swapped (bonafide/spoof), or is it the wrong protocol? "
            "Nothing was written")
    return cal


def check_target(name: str, value: float) -> float:
    """A rate target (FAR, FRR) must be a number in [0, 1]; raises CalibrationError otherwise."""
    if not (isinstance(value, (int, float, np.floating)) and 0.0 <= float(value) <= 1.0):
        raise CalibrationError(f"{name} must be a rate between 0 and 1, got {value!r}")
    return float(value)


def far_threshold(spoof: np.ndarray, target_far: float) -> float:
    """Lowest threshold whose false-accept rate (spoof >= t) is at most ``target_far``."""
    s = np.sort(np.asarray(spoof, dtype=np.float64))[::-1]
    k = int(np.floor(target_far * len(s)))
    if k >= len(s):
        return float(s[-1])
    return float(np.nextafter(s[k], np.inf))


def frr_threshold(bonafide: np.ndarray, target_frr: float) -> float:
    """Highest threshold whose false-reject rate (bona fide < t) is at most ``target_frr``."""
    b = np.sort(np.asarray(bonafide, dtype=np.float64))
    k = int(np.floor(target_frr * len(b)))
    return float(b[min(k, len(b) - 1)])


def choose_thresholds(bona_llr: np.ndarray, spoof_llr: np.ndarray, target_far: float = 0.01,
                      target_frr: float = 0.05) -> dict[str, Any]:
    """Accept / reject thresholds on calibrated scores, with the rates they give on this data.

    Raises CalibrationError when a target is outside [0, 1].
    """
    target_far, target_frr = check_target("target_far", target_far), check_target("target_frr", target_frr)
    eer, t_eer = compute_eer(bona_llr, spoof_llr)
    accept = max(t_eer, far_threshold(spoof_llr, target_far))
    reject = min(t_eer, frr_threshold(bona_llr, target_frr))
    bona, spoof = np.asarray(bona_llr), np.asarray(spoof_llr)
    return {
        "accept": float(accept),
        "reject": float(reject),
        "eer": float(eer),
        "eer_threshold": float(t_eer),
        "target_far": target_far,
        "target_frr": target_frr,
        "far_at_accept": float(np.mean(spoof >= accept)),
        "frr_at_reject": float(np.mean(bona < reject)),
        "uncertain_bonafide": float(np.mean((bona >= reject) & (bona < accept))),
        "uncertain_spoof": float(np.mean((spoof >= reject) & (spoof < accept))),
    }
