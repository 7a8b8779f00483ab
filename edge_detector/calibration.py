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


def fit_logistic_regression(features: np.ndarray, labels: np.ndarray, l2: float = 1e-4,
                            iterations: int = 100) -> tuple[np.ndarray, float]:
    """Prior-weighted (0.5 / 0.5) linear logistic regression ``llr = features @ weights + bias``, by Newton steps.

    ``features``: ``[n, k]`` scores (one column per score: one model's raw score, or the
    calibrated scores of the members of a fusion); ``labels``: ``[n]``, 1 = bona fide,
    0 = spoof. Minimises the prior-weighted cross-entropy (Cllr up to a constant)
    ``0.5/N_bona * sum_bona log(1 + e^-llr) + 0.5/N_spoof * sum_spoof log(1 + e^llr)``,
    so the output reads as a log-likelihood ratio whatever the class sizes: the linear
    logistic regression fusion of Brümmer et al., "Fusion of heterogeneous speaker
    recognition systems in the STBU submission for the NIST SRE 2006", IEEE TASLP 15(7),
    2007 (the FoCal toolkit), with k = 1 the usual score calibration. Columns are
    standardised for a well-conditioned problem (a constant column is left unscaled) and
    mapped back at the end; a small L2 penalty on the standardised weights (not the bias)
    keeps the fit finite when the classes are perfectly separated. Returns
    ``(weights [k] float64, bias)``. Raises ValueError without examples of both classes.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    n_bona, n_spoof = int(np.sum(y == 1)), int(np.sum(y == 0))
    if n_bona == 0 or n_spoof == 0:
        raise ValueError("calibration needs both bona fide and spoofed examples")
    if x.shape[0] != y.size:
        raise ValueError(f"{x.shape[0]} feature rows for {y.size} labels")
    w = np.where(y == 1, 0.5 / n_bona, 0.5 / n_spoof)
    mu = x.mean(axis=0)
    sd = x.std(axis=0)
    sd[sd == 0] = 1.0
    a = np.hstack([(x - mu) / sd, np.ones((x.shape[0], 1))])  # standardised columns, then the bias
    k = x.shape[1]
    penalty = np.append(np.full(k, l2), 1e-12)
    theta = np.zeros(k + 1)  # standardised weights, then the bias
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(a @ theta)))
        g = a.T @ (w * (p - y)) + np.append(l2 * theta[:k], 0.0)
        h = (a * (w * p * (1 - p))[:, None]).T @ a + np.diag(penalty)
        step = np.linalg.solve(h, g)
        theta -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    weights = theta[:k] / sd
    return weights, float(theta[k] - np.sum(theta[:k] * mu / sd))


def fit_logistic_calibration(bonafide: np.ndarray, spoof: np.ndarray, l2: float = 1e-4,
                             iterations: int = 100) -> Calibration:
    """Prior-weighted (0.5 / 0.5) logistic regression of the label on one score: ``llr = a * score + b``.

    :func:`fit_logistic_regression` with one column. A small L2 penalty on the slope
    keeps the fit finite when the classes are perfectly separated (then the slope would
    otherwise grow without bound). Raises ValueError without examples of both classes.
    """
    bona = np.asarray(bonafide, dtype=np.float64).reshape(-1)
    spoof = np.asarray(spoof, dtype=np.float64).reshape(-1)
    if bona.size == 0 or spoof.size == 0:
        raise ValueError("calibration needs both bona fide and spoofed examples")
    weights, bias = fit_logistic_regression(np.concatenate([bona, spoof])[:, None],
                                            np.concatenate([np.ones(bona.size), np.zeros(spoof.size)]),
                                            l2=l2, iterations=iterations)
    return Calibration(float(weights[0]), bias)


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
