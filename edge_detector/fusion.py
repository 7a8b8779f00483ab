"""Fusion bundles: several sealed bundles in one folder, deciding by a weighted sum of their calibrated scores.

Layout (written by `edge-detect fuse`)::

    fused/
      manifest.json    model.family "fusion"; fusion.members (sub-folder names), fusion.weights,
                       calibration (scale 1, offset = the fusion's bias), thresholds; sealed
      fusion.json      the "model file": for each member its folder, model id, family, model
                       sha256 and the sha256 of its manifest (manifest_digest); hashed in files
      m1-rawnet2/      a complete bundle (its own manifest.json, model, checksums, seal)
      m2-lfcc-gmm/     another one

Nothing of a member is trusted without its own verification: loading a fusion loads each
member with :func:`edge_detector.bundle.load_bundle` (its files' sha256 and its manifest's
seal), then requires its manifest to be the one the fusion was built with (the digest in
``fusion.json``, itself hashed in the sealed fusion manifest), and its sample rate and
window length to be the fusion's. A missing, tampered, replaced or recalibrated member, a
member of another rate or window, or a hand-edited weight (the fusion manifest's seal) is a
BundleError (exit 7).

Per window ``w``: ``score(w) = sum_i weight_i * llr_i(w)`` with ``llr_i = scale_i * raw_i(w)
+ offset_i`` (member ``i``'s own calibration); windows are combined by the fusion's rule and
``llr = score + calibration.offset`` is what the thresholds apply to. `edge-detect
calibrate` fits the weights and the offset by prior-weighted linear logistic regression on
the members' calibrated scores (:func:`fit_fusion`; Brümmer et al., IEEE TASLP 15(7), 2007,
the FoCal fusion). Numpy only.
"""
from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np

from .bundle import MANIFEST_NAME, load_bundle, manifest_digest
from .errors import BundleError
from .textio import read_text
from .windows import WindowRule, make_windows

if TYPE_CHECKING:
    from .bundle import Bundle
    from .session import SessionSettings

FAMILY = "fusion"
FUSION_FILE = "fusion.json"
FUSION_FORMAT = "edge-detector-fusion"
RULE = "weighted-sum-of-calibrated-scores"


def check_fusion_manifest(manifest: Mapping[str, Any], where: str) -> None:
    """The ``fusion`` section is well formed: the rule, >= 2 plain unique member folder names, one finite
    weight per member. Raises BundleError naming the field."""
    f = manifest["fusion"]
    if f["rule"] != RULE:
        raise BundleError(f"{where}: field 'fusion.rule' must be {RULE!r}, got {f['rule']!r}")
    members, weights = f["members"], f["weights"]
    if len(members) < 2:
        raise BundleError(f"{where}: field 'fusion.members' must name at least two member bundles")
    if len(weights) != len(members):
        raise BundleError(f"{where}: field 'fusion.weights' has {len(weights)} value(s) for {len(members)} members")
    for name in members:
        if (not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith(".")
                or name == MANIFEST_NAME or name in manifest["files"]):
            raise BundleError(f"{where}: fusion member {name!r} must be the plain name of a sub-folder of the bundle")
    if len(set(members)) != len(members):
        raise BundleError(f"{where}: field 'fusion.members' names a member twice")
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(float(w)):
            raise BundleError(f"{where}: field 'fusion.weights' must hold finite numbers, got {w!r}")


def check_member(member: Mapping[str, Any], fusion: Mapping[str, Any], where: str) -> None:
    """A member fits the fusion: not a fusion itself, same sample rate and window length. Raises BundleError."""
    if member["model"]["family"] == FAMILY:
        raise BundleError(f"{where}: a member may not be a fusion bundle itself")
    for key, unit in (("audio.sample_rate", "Hz"), ("windows.window", "samples")):
        sec, field = key.split(".")
        if int(member[sec][field]) != int(fusion[sec][field]):
            raise BundleError(f"{where}: its {key} is {member[sec][field]} {unit}, the fusion's is "
                              f"{fusion[sec][field]} {unit}; every member must score the same windows")


def read_fusion_file(bundle: "Bundle") -> list[dict[str, Any]]:
    """The member entries of ``fusion.json`` (folder, manifest_sha256, ...), checked against the manifest."""
    path = bundle.path / bundle.manifest["fusion"]["file"]
    try:
        doc = json.loads(read_text(path))
    except FileNotFoundError:
        raise BundleError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: not a readable fusion file ({exc})") from None
    entries = doc.get("members") if isinstance(doc, dict) and doc.get("format") == FUSION_FORMAT else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("folder"), str)
                                                and isinstance(e.get("manifest_sha256"), str) for e in entries):
        raise BundleError(f"{path}: not an {FUSION_FORMAT} file (format, members[].folder, members[].manifest_sha256)")
    if [e["folder"] for e in entries] != list(bundle.manifest["fusion"]["members"]):
        raise BundleError(f"{path}: its members {[e['folder'] for e in entries]} differ from the manifest's "
                          f"fusion.members {bundle.manifest['fusion']['members']}")
    return entries


def load_members(bundle: "Bundle") -> tuple["Bundle", ...]:
    """Every member of a fusion bundle, loaded and verified against its own manifest and against
    ``fusion.json`` (see the module docstring). Raises BundleError naming the member and what failed."""
    members = []
    for entry in read_fusion_file(bundle):
        where = f"{bundle.path}: fusion member {entry['folder']!r}"
        path = bundle.path / entry["folder"]
        if not path.is_dir():
            raise BundleError(f"{where} is missing (no folder {path})")
        try:
            member = load_bundle(path, verify=True)
        except BundleError as exc:
            raise BundleError(f"{where}: {exc}") from None
        digest = manifest_digest(member.manifest)
        if digest != entry["manifest_sha256"]:
            raise BundleError(f"{where}: its manifest (sha256 {digest[:12]}) is not the one this fusion was built "
                              f"with ({entry['manifest_sha256'][:12]}): the member was replaced or recalibrated; "
                              "rebuild the fusion with `edge-detect fuse`")
        check_member(member.manifest, bundle.manifest, where)
        members.append(member)
    return tuple(members)


class FusionScorer:
    """Raw windows → ``sum_i weight_i * llr_i`` per window, each member scored by its own family's scorer.

    ``members``: verified member bundles; ``scorers``: their scorers (same order);
    ``weights``: ``[k]``. :meth:`features` gives the ``[n, k]`` member llrs that
    `calibrate` fits the weights on.
    """

    def __init__(self, members: Sequence["Bundle"], scorers: Sequence[Any], weights: Sequence[float],
                 max_batch: int = 16) -> None:
        self.members = list(members)
        self.scorers = list(scorers)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.scale = np.array([float(m.manifest["calibration"]["scale"]) for m in self.members])
        self.offset = np.array([float(m.manifest["calibration"]["offset"]) for m in self.members])
        self.max_batch = max_batch

    @property
    def max_batch(self) -> int:
        return self._max_batch

    @max_batch.setter
    def max_batch(self, value: int) -> None:
        self._max_batch = max(1, int(value))
        for s in self.scorers:
            s.max_batch = self._max_batch

    @property
    def providers(self) -> list[str]:
        """What runs the members, first = the first member's, each name once."""
        return list(dict.fromkeys(p for s in self.scorers for p in s.providers))

    def features(self, batch: np.ndarray) -> np.ndarray:
        """``[n, k]`` float64: member ``i``'s calibrated score of each of the ``[n, window]`` windows."""
        raw = np.stack([np.asarray(s.score(batch), dtype=np.float64) for s in self.scorers], axis=1)
        return raw * self.scale + self.offset

    def features_signal(self, samples: np.ndarray, rule: WindowRule) -> tuple[np.ndarray, list[int]]:
        """``([n_windows, k], starts)``: the members' calibrated scores of the windows ``rule`` takes from
        the 1-D ``samples`` (a member that shares front-end work between windows keeps doing so)."""
        cols, starts, batch = [], None, None
        for s in self.scorers:
            fn = getattr(s, "score_signal", None)
            if fn is not None:
                col, starts = fn(samples, rule)
            else:
                if batch is None:
                    batch, starts = make_windows(np.asarray(samples, dtype=np.float32), rule)
                col = s.score(batch)
            cols.append(np.asarray(col, dtype=np.float64))
        return np.stack(cols, axis=1) * self.scale + self.offset, list(starts or [])

    def score(self, batch: np.ndarray) -> np.ndarray:
        """``[n]`` float32 fused scores of ``[n, window]`` windows."""
        return (self.features(batch) @ self.weights).astype(np.float32)

    def score_signal(self, samples: np.ndarray, rule: WindowRule) -> tuple[np.ndarray, list[int]]:
        """Fused scores of the windows ``rule`` takes from ``samples``, and their starts."""
        feats, starts = self.features_signal(samples, rule)
        return (feats @ self.weights).astype(np.float32), starts


def fusion_scorer(bundle: "Bundle", settings: "SessionSettings", max_batch: int) -> FusionScorer:
    """The fusion family's scorer factory: each verified member's own family makes its scorer."""
    members = load_members(bundle)
    scorers = [m.family.make_scorer(m, settings, max_batch) for m in members]
    return FusionScorer(members, scorers, bundle.manifest["fusion"]["weights"], max_batch)


def fit_fusion(manifest: Mapping[str, Any], features: np.ndarray, labels: np.ndarray,
               fitted_on: Optional[dict[str, Any]] = None) -> tuple[dict[str, Any], np.ndarray, dict[str, Any]]:
    """`calibrate` for a fusion: weights and bias by prior-weighted linear logistic regression.

    ``features``: ``[n, k]`` members' calibrated scores (:meth:`FusionScorer.features`) of
    labelled files, ``labels`` ``[n]`` (1 = bona fide). Returns the manifest sections to
    replace (``fusion`` with the new weights, ``calibration`` with scale 1 and the bias as
    offset), the fused llr ``[n]`` and a summary for the log. Raises CalibrationError
    (exit 5) when the fit is not finite or gives no member a positive weight (the labels
    rank spoofs above bona fide: swapped?).
    """
    from .calibration import CalibrationError, fit_logistic_regression

    x = np.asarray(features, dtype=np.float64)
    weights, bias = fit_logistic_regression(x, labels)
    names = list(manifest["fusion"]["members"])
    if not (np.all(np.isfinite(weights)) and math.isfinite(bias)):
        raise CalibrationError(f"fusion fit is not finite (weights {weights.tolist()}, bias {bias})")
    if not np.any(weights > 0):
        raise CalibrationError(
            f"fusion weights {dict(zip(names, np.round(weights, 4).tolist()))} are all zero or negative: on this "
            "data every member scores spoofs higher than bona fide. Are the protocol's labels swapped "
            "(bonafide/spoof), or is it the wrong protocol? Nothing was written")
    fusion = dict(manifest["fusion"])
    fusion["weights"] = [float(w) for w in weights]
    calibration = {"method": "linear logistic regression fusion (prior 0.5)", "scale": 1.0, "offset": float(bias),
                   "fitted_on": fitted_on or {},
                   "description": "llr = sum_i fusion.weights[i] * llr_i + offset, llr_i = member i's calibrated "
                                  "score (its own manifest's calibration)"}
    summary = {"weights": dict(zip(names, fusion["weights"])), "offset": float(bias)}
    return {"fusion": fusion, "calibration": calibration}, x @ weights + bias, summary


def check_weights(weights: Sequence[float]) -> list[float]:
    """``weights`` as floats when every one is finite and > 0; raises ValueError otherwise.

    A zero weight silences a member, a negative one turns its evidence around, and all-zero
    weights would give every input llr 0. Only `calibrate` fits weights from labelled audio.
    """
    w = [float(v) for v in weights]
    if not all(math.isfinite(v) and v > 0 for v in w):
        raise ValueError(f"every fusion weight must be a finite number > 0, got {w}")
    return w


def fusion_manifest(members: Sequence["Bundle"], folders: Sequence[str],
                    weights: Optional[Sequence[float]] = None) -> dict[str, Any]:
    """The manifest of a new (uncalibrated) fusion of ``members`` stored in ``folders``.

    Audio and window rule are the first member's (every member must have its rate and
    window length: :func:`check_member`); ``min_seconds`` the largest and ``max_seconds``
    the smallest of the members'. Default weights ``1/k``: the mean of the members' llr.
    Until `calibrate` fits them, the thresholds are the members' own, made conservative (the
    gate fails closed): accept only at or above ``sum(w) * max_i accept_i`` (the strictest
    member's accept threshold on the weighted sum), reject below ``sum(w) * max_i reject_i``.
    """
    from .bundle import FORMAT_NAME, FORMAT_VERSION, ORIENTATION
    from .digest import sha256

    k = len(members)
    w = [1.0 / k] * k if weights is None else check_weights(weights)
    accept = sum(w) * max(float(m.manifest["thresholds"]["accept"]) for m in members)
    reject = min(accept, sum(w) * max(float(m.manifest["thresholds"]["reject"]) for m in members))
    first = members[0].manifest
    ident = sha256()
    ident.update("|".join(m.model_sha256 for m in members).encode())
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model_id": f"fusion-{ident.hexdigest()[:12]}",
        "model": {"family": FAMILY, "variant": "+".join(m.manifest["model"]["variant"] for m in members),
                  "config": {"members": [{"folder": f, "model_id": m.model_id, "family": m.manifest["model"]["family"]}
                                         for f, m in zip(folders, members)]},
                  "parameters": int(sum(m.manifest["model"]["parameters"] for m in members))},
        "fusion": {"file": FUSION_FILE, "rule": RULE, "members": list(folders), "weights": w,
                   "description": "per window: score = sum_i weights[i] * (member i's calibrated score)"},
        "frontend": None,
        "audio": {**first["audio"], "min_seconds": max(float(m.min_seconds) for m in members),
                  "max_seconds": min(float(m.max_seconds) for m in members)},
        "windows": dict(first["windows"]),
        "score": {"orientation": ORIENTATION, "kind": "fused_llr",
                  "description": "weighted sum of the members' calibrated scores; higher = more bona fide"},
        "calibration": {"method": "none", "scale": 1.0, "offset": 0.0,
                        "description": "uncalibrated: llr = the weighted sum as built; run `edge-detect calibrate`"},
        "thresholds": {"accept": accept, "reject": reject, "on": "calibrated",
                       "rule": "accept if calibrated >= accept; reject if calibrated < reject; else uncertain",
                       "description": "uncalibrated: sum(weights) x the strictest member's accept and reject "
                                      "thresholds; run `edge-detect calibrate`"},
        "source_checkpoint": {"members": {f: m.manifest["source_checkpoint"] for f, m in zip(folders, members)}},
        "quantization": None,
        "evaluation": None,
        "files": {FUSION_FILE: {}},
    }


def fusion_file(members: Sequence["Bundle"], folders: Sequence[str]) -> dict[str, Any]:
    """The content of ``fusion.json``: which member bundle is in which folder, pinned by its manifest's sha256."""
    return {"format": FUSION_FORMAT, "rule": RULE,
            "members": [{"folder": f, "manifest_sha256": manifest_digest(m.manifest), "model_id": m.model_id,
                         "family": m.manifest["model"]["family"], "model_sha256": m.model_sha256}
                        for f, m in zip(folders, members)]}
