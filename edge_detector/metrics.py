"""Detection metrics as the ASVspoof evaluation packages define them (numpy only).

Numbers in this project are compared with published RawNet2 / AASIST results, so the
EER and the min t-DCF must be computed *exactly* the way the ASVspoof 2019 evaluation
package computes them, quirks included:

* Scores are oriented "higher = more bona fide" (the RawNet2 log-softmax of class 1).
* The DET curve is swept over the scores sorted with a *stable* sort of the bona fide
  scores followed by the spoof scores, so on a tie the bona fide trial comes first and
  is counted as rejected before the spoof trial is counted as rejected. Ties are thus
  resolved pessimistically (a model that gives everything the same score gets EER 1,
  not 0), which keeps degenerate, saturated models from looking good.
* The curve includes the operating point *before* the lowest score (everything
  accepted: FRR 0, FAR 1), whose threshold is the lowest score minus 0.001.
* The EER is the mean of FRR and FAR at the first sweep point where |FRR - FAR| is
  smallest, not an interpolated crossing.

The min t-DCF is the legacy formulation of the ASVspoof 2019 challenge (Kinnunen et
al., Odyssey 2018; ASVspoof 2019 evaluation plan), which is what the 2019 LA results
in the literature (RawNet2, AASIST) report.

Nothing here imports anything but numpy and this package's error classes, because the
device runtime uses the same functions when it calibrates thresholds.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from numpy.typing import ArrayLike

from edge_detector.errors import DataError, MissingFileError
from edge_detector.textio import read_text

__all__ = [
    "ASVSPOOF2019_COSTS",
    "TDCFCosts",
    "asv_error_rates",
    "compute_det_curve",
    "compute_eer",
    "compute_min_tdcf",
    "load_asv_scores",
    "threshold_rates",
]

PathLike = Union[str, "os.PathLike[str]"]

# Offset of the first sweep point below the lowest score (ASVspoof package convention).
_BEFORE_FIRST_OFFSET = 0.001


def _as_scores(values: ArrayLike, name: str) -> np.ndarray:
    """Return `values` as a non-empty, finite, 1-D float64 array, or raise ValueError.

    Every metric here silently produces garbage on an empty class (division by zero)
    or on NaN (NaN sorts last and is counted as "most bona fide"), so both are refused
    up front with a message that names the offending class.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} scores must be a 1-D sequence, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"no {name} scores: both classes need at least one score")
    bad = ~np.isfinite(arr)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{int(bad.sum())} of {arr.size} {name} scores are not finite "
            f"(first at index {first}: {arr[first]!r})"
        )
    return arr


def compute_det_curve(
    bonafide: ArrayLike, spoof: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sweep a threshold over all scores and return (frr, far, thresholds).

    The three arrays have ``len(bonafide) + len(spoof) + 1`` entries. Entry 0 is the
    point before the lowest score (everything accepted: frr 0, far 1). Entry k >= 1
    rejects the k lowest trials of the stable sort (bona fide before spoof on ties)
    and its threshold is the k-th lowest score; for untied scores that is the rule
    "accept iff score > thresholds[k]". frr is the fraction of bona fide trials
    rejected, far the fraction of spoof trials still accepted.

    This is the single DET implementation: `compute_eer` and `compute_min_tdcf` both
    read their operating points from it, so they can never disagree about ties.
    """
    bona = _as_scores(bonafide, "bona fide")
    spf = _as_scores(spoof, "spoof")
    n_bona, n_spoof = bona.size, spf.size
    scores = np.concatenate([bona, spf])
    is_bona = np.concatenate(
        [np.ones(n_bona, dtype=np.int64), np.zeros(n_spoof, dtype=np.int64)]
    )
    # mergesort is stable: equal scores keep "bona fide first" from the concatenation.
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    bona_rejected = np.cumsum(is_bona[order])
    rejected = np.arange(1, scores.size + 1, dtype=np.int64)
    spoof_accepted = n_spoof - (rejected - bona_rejected)

    frr = np.concatenate([[0.0], bona_rejected / n_bona])
    far = np.concatenate([[1.0], spoof_accepted / n_spoof])
    thresholds = np.concatenate(
        [[sorted_scores[0] - _BEFORE_FIRST_OFFSET], sorted_scores]
    )
    return frr, far, thresholds


def compute_eer(bonafide_scores: ArrayLike, spoof_scores: ArrayLike) -> tuple[float, float]:
    """Return (eer, threshold) the way the ASVspoof evaluation package computes them.

    The EER is taken at the first DET point where |frr - far| is smallest, as the mean
    of the two rates there, and the threshold is that point's threshold (see
    `compute_det_curve`). No interpolation: results then match published numbers to
    the last digit. Raises ValueError for an empty class or a non-finite score.
    """
    frr, far, thresholds = compute_det_curve(bonafide_scores, spoof_scores)
    index = int(np.argmin(np.abs(frr - far)))
    eer = 0.5 * (frr[index] + far[index])
    return float(eer), float(thresholds[index])


@dataclass(frozen=True)
class TDCFCosts:
    """Priors and costs of the tandem detection cost function.

    Kept as one frozen object so a report can state exactly which cost model its
    t-DCF used; the defaults of the 2019 challenge are `ASVSPOOF2019_COSTS`.
    """

    p_tar: float
    p_non: float
    p_spoof: float
    c_miss_asv: float
    c_fa_asv: float
    c_miss_cm: float
    c_fa_cm: float

    def __post_init__(self) -> None:
        values = (self.p_tar, self.p_non, self.p_spoof, self.c_miss_asv,
                  self.c_fa_asv, self.c_miss_cm, self.c_fa_cm)
        if any(not np.isfinite(v) or v < 0 for v in values):
            raise ValueError(f"t-DCF priors and costs must be finite and >= 0: {self}")
        total = self.p_tar + self.p_non + self.p_spoof
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"t-DCF priors must sum to 1, they sum to {total:.6f}")


# ASVspoof 2019: P_spoof = 0.05, the rest split 99:1 between targets and non-targets.
ASVSPOOF2019_COSTS = TDCFCosts(
    p_tar=0.9405,
    p_non=0.0095,
    p_spoof=0.05,
    c_miss_asv=1.0,
    c_fa_asv=10.0,
    c_miss_cm=1.0,
    c_fa_cm=10.0,
)


def asv_error_rates(
    asv_tar: ArrayLike, asv_non: ArrayLike, asv_spoof: ArrayLike, threshold: float
) -> tuple[float, float, float]:
    """Return (Pfa_asv, Pmiss_asv, Pmiss_spoof_asv) of the ASV system at `threshold`.

    A trial is accepted by the ASV when its score is >= threshold (the 2019 package's
    rule). Pmiss_spoof_asv is the fraction of spoofs the ASV already rejects on its
    own: the countermeasure only matters for the rest.
    """
    tar = _as_scores(asv_tar, "ASV target")
    non = _as_scores(asv_non, "ASV non-target")
    spf = _as_scores(asv_spoof, "ASV spoof")
    p_fa = float(np.mean(non >= threshold))
    p_miss = float(np.mean(tar < threshold))
    p_miss_spoof = float(np.mean(spf < threshold))
    return p_fa, p_miss, p_miss_spoof


def compute_min_tdcf(
    bona_cm: ArrayLike,
    spoof_cm: ArrayLike,
    asv_tar: ArrayLike,
    asv_non: ArrayLike,
    asv_spoof: ArrayLike,
    costs: TDCFCosts = ASVSPOOF2019_COSTS,
) -> tuple[float, float]:
    """Return (min normalized t-DCF, CM threshold) with the legacy ASVspoof 2019 formula.

    The ASV system is fixed at its own EER threshold (target vs non-target). Then for
    every CM threshold of the DET sweep:

        C1 = P_tar (C_miss_cm - C_miss_asv Pmiss_asv) - P_non C_fa_asv Pfa_asv
        C2 = C_fa_cm P_spoof (1 - Pmiss_spoof_asv)
        t-DCF = (C1 Pmiss_cm + C2 Pfa_cm) / min(C1, C2)

    Normalising by min(C1, C2) makes 1.0 the cost of the better of the two trivial CMs
    (accept all / reject all), so a value >= 1 means the CM is useless and the minimum
    over the sweep is never above 1. Raises ValueError when C1 or C2 is negative or
    zero, where the normalised cost is undefined (an ASV worse than chance, or one
    that already rejects every spoof).
    """
    asv_threshold = compute_eer(asv_tar, asv_non)[1]
    p_fa_asv, p_miss_asv, p_miss_spoof_asv = asv_error_rates(
        asv_tar, asv_non, asv_spoof, asv_threshold
    )
    c1 = costs.p_tar * (costs.c_miss_cm - costs.c_miss_asv * p_miss_asv) - (
        costs.p_non * costs.c_fa_asv * p_fa_asv
    )
    c2 = costs.c_fa_cm * costs.p_spoof * (1.0 - p_miss_spoof_asv)
    if c1 < 0 or c2 < 0:
        raise ValueError(
            f"t-DCF is undefined: negative cost weight (C1={c1:.6g}, C2={c2:.6g}); "
            "the ASV scores or the cost model are not sensible"
        )
    if min(c1, c2) == 0:
        raise ValueError(
            f"t-DCF cannot be normalised: min(C1={c1:.6g}, C2={c2:.6g}) is 0 "
            "(e.g. the ASV already rejects every spoof)"
        )
    p_miss_cm, p_fa_cm, thresholds = compute_det_curve(bona_cm, spoof_cm)
    tdcf_norm = (c1 * p_miss_cm + c2 * p_fa_cm) / min(c1, c2)
    index = int(np.argmin(tdcf_norm))
    return float(tdcf_norm[index]), float(thresholds[index])


_ASV_KEYS = ("target", "nontarget", "spoof")


def load_asv_scores(path: PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read an ASVspoof 2019 ASV score file into (target, nontarget, spoof) arrays.

    Lines are ``SPEAKER_OR_ID KEY SCORE`` with KEY one of target / nontarget / spoof;
    blank lines and ``#`` comments are skipped. Any other line raises DataError with
    the file name and line number, because a silently skipped line would change the
    t-DCF without anyone noticing. A missing file raises MissingFileError.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"ASV score file not found: {path}")
    buckets: dict[str, list[float]] = {key: [] for key in _ASV_KEYS}
    try:
        text = read_text(path)  # UTF-8, a leading BOM dropped
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc})") from exc
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 3:
            raise DataError(
                f"{path}, line {lineno}: expected 3 fields 'ID KEY SCORE', "
                f"got {len(fields)}: {line!r}"
            )
        _, key, score_text = fields
        if key not in buckets:
            raise DataError(
                f"{path}, line {lineno}: key must be one of {', '.join(_ASV_KEYS)}, "
                f"got {key!r}"
            )
        try:
            score = float(score_text)
        except ValueError:
            raise DataError(
                f"{path}, line {lineno}: score is not a number: {score_text!r}"
            ) from None
        if not np.isfinite(score):
            raise DataError(f"{path}, line {lineno}: score is not finite: {score_text!r}")
        buckets[key].append(score)
    if not any(buckets.values()):
        raise DataError(f"{path}: no scores in file")
    return tuple(np.asarray(buckets[key], dtype=np.float64) for key in _ASV_KEYS)  # type: ignore[return-value]


def threshold_rates(
    bona: ArrayLike, spoof: ArrayLike, accept_threshold: float
) -> dict[str, float]:
    """Error rates of the deployed decision rule "accept iff score >= accept_threshold".

    Unlike the EER this is what a user of a shipped threshold experiences, so it uses
    the runtime's own rule. Returns a dict with ``accuracy``, ``far`` (spoofs
    accepted), ``frr`` (bona fide rejected), ``threshold``, ``n_bonafide`` and
    ``n_spoof``. Raises ValueError for an empty class or non-finite scores/threshold.
    """
    b = _as_scores(bona, "bona fide")
    s = _as_scores(spoof, "spoof")
    threshold = float(accept_threshold)
    if not np.isfinite(threshold):
        raise ValueError(f"accept_threshold must be finite, got {accept_threshold!r}")
    bona_accepted = int(np.count_nonzero(b >= threshold))
    spoof_accepted = int(np.count_nonzero(s >= threshold))
    correct = bona_accepted + (s.size - spoof_accepted)
    return {
        "accuracy": correct / (b.size + s.size),
        "far": spoof_accepted / s.size,
        "frr": (b.size - bona_accepted) / b.size,
        "threshold": threshold,
        "n_bonafide": b.size,
        "n_spoof": s.size,
    }
