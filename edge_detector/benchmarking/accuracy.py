"""Accuracy side of the benchmark: score lists joined with the protocol, then every figure.

All EERs come from :func:`edge_detector.metrics.compute_eer` and all t-DCFs from
:func:`edge_detector.metrics.compute_min_tdcf`: the benchmark must never carry a second
EER implementation that could disagree with the one the README compares with published
numbers.

Scores are oriented "higher = more bona fide" (log P(bona fide)) for every model, the
full PyTorch model included, so they can be compared and correlated directly.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..detector import ACCEPT, REJECT, UNCERTAIN, decide
from ..errors import DataError, MissingFileError
from ..metrics import compute_eer, compute_min_tdcf, threshold_rates
from ..protocol import ProtocolEntry
from ..textio import read_text
from .stats import pearson, spearman

__all__ = [
    "JoinError",
    "join_scores",
    "read_score_file",
    "write_score_file",
    "model_accuracy",
    "shipped_threshold_metrics",
    "agreement",
    "compare_with_full",
]

_MAX_LISTED = 10


class JoinError(DataError):
    """A score list and the protocol do not hold the same file ids."""

    kind = "join_mismatch"


def _listed(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_MAX_LISTED])
    more = len(ids) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def join_scores(entries: Sequence[ProtocolEntry], scores: Mapping[str, float], name: str,
                reasons: Optional[Mapping[str, str]] = None) -> np.ndarray:
    """Return ``name``'s scores in protocol order, or raise JoinError listing the differences.

    Silently dropping an unscored trial (or scoring a file the protocol does not know)
    changes the EER without anyone noticing, and a figure computed over a different
    set of trials than the reference's is not comparable with it. So any difference
    is fatal, and the message names the missing and the extra ids (with why a file
    could not be scored, when known).
    """
    wanted = [e.file_id for e in entries]
    wanted_set = set(wanted)
    missing = [i for i in wanted if i not in scores]
    extra = sorted(i for i in scores if i not in wanted_set)
    if missing or extra:
        parts = [f"scores of {name} do not match the protocol ({len(wanted)} trials, {len(scores)} scores)"]
        if missing:
            why = ""
            if reasons:
                known = [f"{i}: {reasons[i]}" for i in missing[:3] if i in reasons]
                why = f" [{'; '.join(known)}]" if known else ""
            parts.append(f"{len(missing)} missing: {_listed(missing)}{why}")
        if extra:
            parts.append(f"{len(extra)} not in the protocol: {_listed(extra)}")
        raise JoinError("; ".join(parts))
    out = np.asarray([scores[i] for i in wanted], dtype=np.float64)
    bad = ~np.isfinite(out)
    if bad.any():
        ids = [wanted[i] for i in np.flatnonzero(bad)]
        raise JoinError(f"scores of {name}: {len(ids)} non-finite score(s): {_listed(ids)}")
    return out


def read_score_file(path: Union[str, os.PathLike]) -> dict[str, float]:
    """Read an ASVspoof-style score list: ``ID SCORE`` or the 2019 CM layout ``ID SYSTEM KEY SCORE``.

    The id is the first field and the score the last. A duplicate id, a line of any
    other length or a non-number raises DataError with the line number: the join check
    can only be trusted if the file was read exactly.
    """
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"score file not found: {p}")
    scores: dict[str, float] = {}
    for lineno, raw in enumerate(read_text(p).splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) not in (2, 4):
            raise DataError(f"{p}, line {lineno}: expected 'ID SCORE' or 'ID SYSTEM KEY SCORE', got {line!r}")
        key, text = fields[0], fields[-1]
        try:
            value = float(text)
        except ValueError:
            raise DataError(f"{p}, line {lineno}: score is not a number: {text!r}") from None
        if key in scores:
            raise DataError(f"{p}, line {lineno}: duplicate id {key!r}")
        scores[key] = value
    if not scores:
        raise DataError(f"{p}: no scores in file")
    return scores


def write_score_file(path: Union[str, os.PathLike], entries: Sequence[ProtocolEntry], scores: np.ndarray) -> Path:
    """Write ``ID SCORE`` lines in protocol order (readable back by :func:`read_score_file`)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(f"{e.file_id} {float(s):.8f}\n" for e, s in zip(entries, scores)), encoding="utf-8")
    return p


def _labels(entries: Sequence[ProtocolEntry]) -> np.ndarray:
    return np.asarray([e.is_bonafide for e in entries], dtype=bool)


def model_accuracy(entries: Sequence[ProtocolEntry], scores: np.ndarray,
                   asv: Optional[tuple[np.ndarray, np.ndarray, np.ndarray]] = None) -> dict[str, Any]:
    """EER (+ threshold, on raw scores), min t-DCF when ASV scores are given, EER per system.

    The per-system EER is each spoofing system's trials against *all* bona fide trials,
    the ASVspoof convention: it shows which attacks a compressed model lost, which the
    pooled EER hides when one system dominates the set.
    """
    is_bona = _labels(entries)
    bona, spoof = scores[is_bona], scores[~is_bona]
    eer, thr = compute_eer(bona, spoof)
    out: dict[str, Any] = {"eer": eer, "eer_threshold": thr, "eer_threshold_on": "raw score",
                           "n_bonafide": int(is_bona.sum()), "n_spoof": int((~is_bona).sum())}
    if asv is not None:
        tdcf, tdcf_thr = compute_min_tdcf(bona, spoof, *asv)
        out["min_tdcf"] = tdcf
        out["min_tdcf_threshold"] = tdcf_thr
    else:
        out["min_tdcf"] = None
    systems = np.asarray([e.system for e in entries])
    per: dict[str, dict[str, Any]] = {}
    for system in sorted(set(systems[~is_bona].tolist())):
        sel = systems == system
        s_eer, s_thr = compute_eer(bona, scores[sel])
        per[system] = {"eer": s_eer, "threshold": s_thr, "n_spoof": int(sel.sum())}
    out["per_system"] = per
    return out


def _decisions(calibrated: np.ndarray, accept: float, reject: float) -> np.ndarray:
    return np.asarray([decide(float(c), accept, reject) for c in calibrated])


def shipped_threshold_metrics(entries: Sequence[ProtocolEntry], raw: np.ndarray, scale: float, offset: float,
                              accept: float, reject: float) -> dict[str, Any]:
    """What a user of the bundle experiences: its calibration and its two thresholds.

    ``accuracy``/``far``/``frr`` use the binary rule "accept iff calibrated >= accept"
    (:func:`edge_detector.metrics.threshold_rates`), so an *uncertain* bona fide trial
    counts as a false reject and an uncertain spoof as correctly kept out, exactly as
    the gate's exit code treats them (only 0 = accept). The three-way counts per class
    and ``accuracy_decided`` (accuracy over trials not in the uncertain band) show how
    much of that is the band rather than outright errors.
    """
    is_bona = _labels(entries)
    cal = scale * raw + offset
    rates = threshold_rates(cal[is_bona], cal[~is_bona], accept)
    dec = _decisions(cal, accept, reject)
    counts = {}
    for cls, sel in (("bonafide", is_bona), ("spoof", ~is_bona)):
        counts[cls] = {d: int(np.count_nonzero(dec[sel] == d)) for d in (ACCEPT, UNCERTAIN, REJECT)}
    decided = dec != UNCERTAIN
    correct = (is_bona & (dec == ACCEPT)) | (~is_bona & (dec == REJECT))
    n_dec = int(decided.sum())
    return {
        "accept_threshold": float(accept),
        "reject_threshold": float(reject),
        "calibration": {"scale": float(scale), "offset": float(offset)},
        "rule": "accept iff calibrated >= accept (uncertain counts as not accepted)",
        "accuracy": rates["accuracy"],
        "far": rates["far"],
        "frr": rates["frr"],
        "frr_hard": counts["bonafide"][REJECT] / max(1, int(is_bona.sum())),
        "uncertain_rate": float(np.mean(dec == UNCERTAIN)),
        "accuracy_decided": (float(np.count_nonzero(correct & decided)) / n_dec) if n_dec else None,
        "decisions": counts,
    }


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of trials on which two decision arrays are equal."""
    return float(np.mean(np.asarray(a) == np.asarray(b)))


def agreement_at_own_thresholds(a: np.ndarray, a_threshold: float, b: np.ndarray, b_threshold: float) -> float:
    """Share of trials two models decide alike, each accepting iff its raw score > its own threshold.

    The rule of the DET sweep (and of the EER threshold), independent of calibration; the
    benchmark and the training report's fidelity figure both use it.
    """
    return agreement(np.asarray(a) > a_threshold, np.asarray(b) > b_threshold)


def compare_with_full(entries: Sequence[ProtocolEntry], full: np.ndarray, edge: np.ndarray,
                      full_acc: Mapping[str, Any], edge_acc: Mapping[str, Any],
                      calibration: Optional[tuple[float, float, float, float]] = None) -> dict[str, Any]:
    """Edge vs full on the same trials: EER drop, score correlation, decision agreement.

    Agreement is reported two ways, each labelled:

    * ``at_bundle_thresholds``: both models' raw scores go through *the bundle's*
      calibration and accept/reject thresholds (``calibration`` = scale, offset, accept,
      reject), three-way decisions compared. This answers "would the shipped gate have
      decided differently if it ran the full model" — the question compression raises.
    * ``at_own_eer_threshold``: each model at its own EER threshold, binary decisions
      ("accept iff score > threshold", the rule of the DET sweep). This is independent
      of calibration, so it is defined even for an uncalibrated bundle.
    """
    diff = np.abs(edge - full)
    out: dict[str, Any] = {
        "eer_drop": float(edge_acc["eer"] - full_acc["eer"]),
        "eer_drop_note": "edge EER - full EER (positive = the edge model is worse)",
        "eer_ratio": (float(edge_acc["eer"] / full_acc["eer"]) if full_acc["eer"] > 0 else None),
        "pearson": pearson(full, edge),
        "spearman": spearman(full, edge),
        "max_abs_score_diff": float(diff.max()),
        "mean_abs_score_diff": float(diff.mean()),
    }
    if full_acc.get("min_tdcf") is not None and edge_acc.get("min_tdcf") is not None:
        out["min_tdcf_drop"] = float(edge_acc["min_tdcf"] - full_acc["min_tdcf"])
    per_drop = {}
    for system, rec in edge_acc["per_system"].items():
        ref = full_acc["per_system"].get(system)
        if ref is not None:
            per_drop[system] = float(rec["eer"] - ref["eer"])
    out["per_system_eer_drop"] = per_drop
    agree: dict[str, Any] = {}
    if calibration is not None:
        scale, offset, accept, reject = calibration
        d_full = _decisions(scale * full + offset, accept, reject)
        d_edge = _decisions(scale * edge + offset, accept, reject)
        agree["at_bundle_thresholds"] = {
            "agreement": agreement(d_full, d_edge),
            "agreement_accept_vs_not": agreement(d_full == ACCEPT, d_edge == ACCEPT),
            "rule": "full and edge raw scores through the bundle's calibration and accept/reject thresholds",
        }
    agree["at_own_eer_threshold"] = {
        "agreement": agreement_at_own_thresholds(full, full_acc["eer_threshold"], edge, edge_acc["eer_threshold"]),
        "rule": "each model: accept iff raw score > its own EER threshold",
    }
    out["agreement"] = agree
    return out


def clean_json(value: Any) -> Any:
    """Replace NaN/inf by None recursively: bench.json must be strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, np.generic):
        return clean_json(value.item())
    return value
