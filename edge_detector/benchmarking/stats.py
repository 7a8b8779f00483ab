"""Small statistics the benchmark needs, in numpy only.

scipy is a training/dev dependency, never a runtime one (DESIGN.md section 1), and the
benchmark must run on a device without it; so the rank correlation and the inverse
normal CDF used for DET axes are written here and checked against scipy in the tests.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["pearson", "spearman", "rankdata_average", "probit", "latency_summary"]


def _pair(x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    b = np.asarray(y, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"correlation needs two sequences of equal length, got {a.size} and {b.size}")
    if a.size < 2:
        raise ValueError("correlation needs at least two pairs")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("correlation inputs must be finite")
    return a, b


def pearson(x: ArrayLike, y: ArrayLike) -> Optional[float]:
    """Pearson's r; ``None`` when either side is constant (r is undefined, not 0).

    Centred first and computed in float64, so scores near -1e-3 (log P close to 0)
    do not lose digits to cancellation.
    """
    a, b = _pair(x, y)
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    if den == 0.0:
        return None
    return float(np.clip(np.dot(a, b) / den, -1.0, 1.0))


def rankdata_average(x: ArrayLike) -> np.ndarray:
    """Ranks 1..n with tied values sharing the average of their ranks (scipy's 'average').

    Ties are common here: a saturated model gives many files log P = 0.0 exactly, and
    giving those arbitrary distinct ranks would invent correlation that is not there.
    """
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    n = a.size
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    # Indices where a new run of equal values starts, plus the end.
    starts = np.flatnonzero(np.concatenate([[True], sorted_a[1:] != sorted_a[:-1]]))
    bounds = np.concatenate([starts, [n]])
    counts = np.diff(bounds)
    # Positions s..e-1 (0-based) hold ranks s+1..e; their mean is (s + 1 + e) / 2.
    mean_rank = (bounds[:-1] + 1 + bounds[1:]) / 2.0
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, counts)
    return ranks


def spearman(x: ArrayLike, y: ArrayLike) -> Optional[float]:
    """Spearman's rho: Pearson's r of the average-tie ranks; ``None`` if a side is constant."""
    a, b = _pair(x, y)
    return pearson(rankdata_average(a), rankdata_average(b))


# Wichura, "Algorithm AS 241: The percentage points of the normal distribution",
# Applied Statistics 37 (1988), PPND16: about 1e-16 relative accuracy.
_A = (3.3871328727963666080e0, 1.3314166789178437745e2, 1.9715909503065514427e3, 1.3731693765509461125e4,
      4.5921953931549871457e4, 6.7265770927008700853e4, 3.3430575583588128105e4, 2.5090809287301226727e3)
_B = (1.0, 4.2313330701600911252e1, 6.8718700749205790830e2, 5.3941960214247511077e3,
      2.1213794301586595867e4, 3.9307895800092710610e4, 2.8729085735721942674e4, 5.2264952788528545610e3)
_C = (1.42343711074968357734e0, 4.63033784615654529590e0, 5.76949722146069140550e0, 3.64784832476320460504e0,
      1.27045825245236838258e0, 2.41780725177450611770e-1, 2.27238449892691845833e-2, 7.74545014278341407640e-4)
_D = (1.0, 2.05319162663775882187e0, 1.67638483018380384940e0, 6.89767334985100004550e-1,
      1.48103976427480074590e-1, 1.51986665636164571966e-2, 5.47593808499534494600e-4, 1.05075007164441684324e-9)
_E = (6.65790464350110377720e0, 5.46378491116411436990e0, 1.78482653991729133580e0, 2.96560571828504891230e-1,
      2.65321895265761230930e-2, 1.24266094738807843860e-3, 2.71155556874348757815e-5, 2.01033439929228813265e-7)
_F = (1.0, 5.99832206555887937690e-1, 1.36929880922735805310e-1, 1.48753612908506148525e-2,
      7.86869131145613259100e-4, 1.84631831751005468180e-5, 1.42151175831644588870e-7, 2.04426310338993978564e-15)


def _poly(coeffs: tuple[float, ...], r: np.ndarray) -> np.ndarray:
    out = np.full_like(r, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        out = out * r + c
    return out


def probit(p: ArrayLike) -> np.ndarray:
    """Inverse of the standard normal CDF (the DET plot's "normal deviate" axis).

    Wichura's AS 241 rational approximations (central region |p - 0.5| <= 0.425, then
    two tail regions in sqrt(-log(min(p, 1 - p)))). Returns -inf at 0, +inf at 1 and
    NaN outside [0, 1], like ``scipy.stats.norm.ppf``.
    """
    p = np.asarray(p, dtype=np.float64)
    scalar = p.ndim == 0
    p = np.atleast_1d(p)
    out = np.full(p.shape, np.nan)
    q = p - 0.5
    central = np.abs(q) <= 0.425
    if np.any(central):
        qc = q[central]
        r = 0.180625 - qc * qc
        out[central] = qc * _poly(_A, r) / _poly(_B, r)
    tail = (~central) & (p > 0.0) & (p < 1.0)
    if np.any(tail):
        pt = p[tail]
        r = np.sqrt(-np.log(np.minimum(pt, 1.0 - pt)))
        near = r <= 5.0
        val = np.empty_like(r)
        rn = r[near] - 1.6
        val[near] = _poly(_C, rn) / _poly(_D, rn)
        rf = r[~near] - 5.0
        val[~near] = _poly(_E, rf) / _poly(_F, rf)
        out[tail] = np.where(q[tail] < 0.0, -val, val)
    out[p == 0.0] = -np.inf
    out[p == 1.0] = np.inf
    return out[0] if scalar else out


def latency_summary(samples_ms: ArrayLike, window_seconds: float) -> dict[str, float]:
    """Percentiles (numpy 'linear' method), mean, RTF and throughput of per-window timings.

    RTF = compute time / audio time, from the median (the robust figure on a shared
    machine) and from the mean; windows/s = 1000 / mean latency (one stream, batch 1).
    """
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no latency samples")
    mean = float(x.mean())
    p50, p90, p99 = (float(v) for v in np.percentile(x, [50, 90, 99]))
    return {
        "runs": int(x.size),
        "mean_ms": mean,
        "std_ms": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "min_ms": float(x.min()),
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "max_ms": float(x.max()),
        "rtf_p50": p50 / 1000.0 / window_seconds,
        "rtf_mean": mean / 1000.0 / window_seconds,
        "windows_per_s": 1000.0 / mean if mean > 0 else float("inf"),
    }
