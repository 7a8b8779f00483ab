"""LFCC-GMM training side: features, two diagonal GMMs (scikit-learn), evaluation, bundle.

The recipe is the ASVspoof 2021 LA baseline's (``LFCC_GMM_ASVspoof_2021_baseline.m``):
LFCC features of every training file (:mod:`edge_detector.lfcc`), one GMM fitted on the
frames of the bona fide files and one on the frames of the spoof files (diagonal
covariances, 512 components, EM), score = mean per-frame log-likelihood ratio. Two
differences, both stated in the bundle and the report:

* each file contributes the frames of the bundle's window (the first 64 600 samples,
  tiled when shorter), so training, evaluation and the device see the same audio;
* ``max_frames`` caps the frames per class by seeded uniform subsampling (the baseline's
  ``*_ds_factor`` subsamples files instead), so a CPU budget can be kept.

EM is scikit-learn's ``GaussianMixture`` (``covariance_type="diag"``, k-means++
initialisation, ``random_state=seed``), run one iteration at a time with ``warm_start`` so
progress can be reported; that is the same EM as one ``fit(max_iter=n)`` call without
its convergence test (``tol`` is applied here on the lower bound).

Scores for validation and held-out EER come from :class:`edge_detector.gmm.LFCCGMMScorer`,
the device's own code, on the saved parameters.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from edge_detector.bundle import default_manifest, publish, sha256_file, write_manifest
from edge_detector.gmm import CLASSES, DiagonalGMM, LFCCGMMScorer, save_gmm_pair
from edge_detector.lfcc import LFCCFrontEnd, LFCCSpec
from edge_detector.windows import WindowRule, first_window

Log = Callable[[str], None]
GMM_FILE = "gmm.npz"


@dataclass
class GMMConfig:
    """How the two GMMs are fitted (recorded in the report and the manifest)."""

    components: int = 512
    iterations: int = 10  # the baseline's max_iterations
    max_frames: int = 0  # per class; 0 = every frame
    tol: float = 1e-3  # stop when the mean log-likelihood gains less (scikit-learn's default)
    reg_covar: float = 1e-6  # added to every variance (scikit-learn's default)
    seed: int = 1234
    init: str = "k-means++"


def window_features(signals: Sequence[np.ndarray], spec: LFCCSpec, window: int,
                    log: Optional[Log] = None, label: str = "features") -> list[np.ndarray]:
    """LFCC ``[frames, dims]`` float64 of the first ``window`` samples of every signal (tiled when shorter)."""
    fe = LFCCFrontEnd(spec)
    out = []
    step = max(1, len(signals) // 10)
    for i, x in enumerate(signals):
        out.append(fe(first_window(np.asarray(x, dtype=np.float32), window)))
        if log is not None and ((i + 1) % step == 0 or i + 1 == len(signals)):
            log(f"{label}: {i + 1}/{len(signals)} files")
    return out


def subsample_frames(feats: Sequence[np.ndarray], max_frames: int, seed: int) -> np.ndarray:
    """All frames stacked ``[N, dims]``, or ``max_frames`` of them drawn without replacement (seeded)."""
    x = np.concatenate(list(feats), axis=0)
    if max_frames and len(x) > max_frames:
        idx = np.sort(np.random.default_rng(seed).choice(len(x), size=max_frames, replace=False))
        x = x[idx]
    return x


def fit_gmm(frames: np.ndarray, cfg: GMMConfig, log: Optional[Log] = None, label: str = "GMM") -> DiagonalGMM:
    """Fit one diagonal GMM with scikit-learn's EM, one logged iteration at a time.

    k-means++ initialisation starts every component at one frame (variance ``reg_covar``),
    so the first logged mean log-likelihood is hugely negative; from the second iteration
    on it is the usual figure. Raises ValueError when there are fewer frames than components.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    if len(frames) < cfg.components:
        raise ValueError(f"{label}: {len(frames)} frames cannot fit {cfg.components} components")
    gm = GaussianMixture(n_components=cfg.components, covariance_type="diag", max_iter=1, tol=0.0,
                         reg_covar=cfg.reg_covar, init_params=cfg.init, random_state=cfg.seed, warm_start=True)
    previous = -math.inf
    for it in range(cfg.iterations):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gm.fit(frames)
        bound = float(gm.lower_bound_)
        if log is not None:
            log(f"{label}: EM iteration {it + 1}/{cfg.iterations}, mean log-likelihood {bound:.4f} "
                f"({time.perf_counter() - t0:.1f} s)")
        if abs(bound - previous) < cfg.tol:
            break
        previous = bound
    return DiagonalGMM(gm.weights_, gm.means_, gm.covariances_)


def train_pair(bonafide_feats: Sequence[np.ndarray], spoof_feats: Sequence[np.ndarray], cfg: GMMConfig,
               log: Optional[Log] = None) -> tuple[dict[str, DiagonalGMM], dict[str, int]]:
    """The bona fide and spoof GMMs, and how many frames each was fitted on."""
    gmms, used = {}, {}
    for k, (cls, feats) in enumerate((("bonafide", bonafide_feats), ("spoof", spoof_feats))):
        frames = subsample_frames(feats, cfg.max_frames, cfg.seed + k)
        used[cls] = int(len(frames))
        if log is not None:
            log(f"{cls} GMM: {cfg.components} components on {len(frames)} frames of {len(feats)} files")
        gmms[cls] = fit_gmm(frames, cfg, log, label=f"{cls} GMM")
    return gmms, used


def score_features(scorer: LFCCGMMScorer, feats: Sequence[np.ndarray]) -> np.ndarray:
    """Mean per-frame LLR of precomputed features (what ``scorer.score`` gives for the same windows)."""
    return np.array([float(np.mean(scorer.bonafide.log_likelihood(f) - scorer.spoof.log_likelihood(f)))
                     for f in feats], dtype=np.float64)


def gmm_manifest(spec: LFCCSpec, gmms: dict[str, DiagonalGMM], cfg: GMMConfig, model_id: str,
                 rule: Optional[WindowRule] = None, source: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The manifest of an LFCC-GMM bundle (uncalibrated: calibrated = LLR, thresholds at 0).

    Built from :func:`edge_detector.bundle.default_manifest` (common fields) with the ONNX
    parts replaced by the ``gmm`` entry the LFCC-GMM family requires.
    """
    components = gmms["bonafide"].components
    m = default_manifest(model_id=model_id, model_config={}, parameters=0, window_rule=rule,
                         sample_rate=int(spec.sample_rate), source_checkpoint=source or {})
    for key in ("onnx", "parity"):
        m.pop(key, None)
    params = sum(g.weights.size + g.means.size + g.variances.size for g in gmms.values())
    m["model"] = {"family": "LFCC-GMM", "variant": "fp64", "parameters": int(params),
                  "config": {"components": components, "dims": spec.dims, "covariance": "diagonal",
                             "fit": {k: v for k, v in asdict(cfg).items()}}}
    m["gmm"] = {"file": GMM_FILE, "components": components, "dims": spec.dims, "covariance": "diagonal",
                "classes": list(CLASSES), "arrays": "{class}_{weights,means,variances}, float64"}
    m["frontend"] = spec.to_manifest()
    m["score"] = {"orientation": "higher_is_bonafide", "kind": "llr_gmm",
                  "description": "mean over frames of log p(x|bona fide GMM) - log p(x|spoof GMM), nats"}
    m["calibration"] = {"method": "none", "scale": 1.0, "offset": 0.0,
                        "description": "uncalibrated: calibrated = LLR; run `edge-detect calibrate`"}
    m["files"] = {GMM_FILE: {}}
    m["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return m


def write_bundle(out: Path, spec: LFCCSpec, gmms: dict[str, DiagonalGMM], cfg: GMMConfig,
                 model_id: Optional[str] = None, evaluation: Optional[dict[str, Any]] = None,
                 source: Optional[dict[str, Any]] = None) -> Path:
    """Write ``gmm.npz`` + ``manifest.json`` to a staging folder, hash, validate, then publish to ``out``.

    ``model_id`` defaults to ``lfcc-gmm-c{components}-{first 12 hex of the npz's sha256}``.
    """
    out = Path(out)
    staging = out.parent / f".{out.name}.staging"
    if staging.exists():
        import shutil

        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    save_gmm_pair(staging / GMM_FILE, gmms)
    if model_id is None:
        model_id = f"lfcc-gmm-c{gmms['bonafide'].components}-{sha256_file(staging / GMM_FILE)[:12]}"
    m = gmm_manifest(spec, gmms, cfg, model_id, source=source)
    m["evaluation"] = evaluation
    write_manifest(staging, m)
    publish(staging, out)
    return out


def require_sklearn() -> None:
    """LFCC-GMM training needs scikit-learn (the ``train`` extra); MissingExtraError (exit 12) otherwise."""
    from edge_detector.errors import MissingExtraError

    try:
        import sklearn  # noqa: F401
    except ModuleNotFoundError:
        raise MissingExtraError("LFCC-GMM training needs scikit-learn: pip install 'edge-detector[train]'") from None


def _eer_record(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    from edge_detector.metrics import compute_eer

    eer, thr = compute_eer(scores[labels == 1], scores[labels == 0])
    return {"files": int(len(labels)), "bonafide": int((labels == 1).sum()), "spoof": int((labels == 0).sum()),
            "eer": float(eer), "threshold": float(thr)}


def run_training(*, protocol_path: str, audio_dir: str, out_dir: str, val_protocol: Optional[str],
                 val_fraction: float, holdout_sources: Optional[str], exclude_sources: Optional[str],
                 heldout_protocol: Optional[str], seed: int, cache_dir: Optional[str], gmm_components: int,
                 gmm_iter: int, gmm_max_frames: int, command: str, log: Log) -> dict[str, Any]:
    """`edge-detect train --model lfcc-gmm`: same splits as RawNet2 training, then two GMMs and a bundle.

    Writes OUT/bundle/ (gmm.npz + manifest.json, evaluation = validation EER), OUT/report.json
    (command, wall time, frames used, validation and held-out EER) and OUT/scores_{val,heldout}.txt.
    Raises DataError / MissingFileError from the protocol and audio, ValueError when a class
    has fewer frames than components.
    """
    from edge_detector.protocol import csv_values, read_protocol, training_splits
    from export.dataset import load_corpus

    from edge_detector.errors import EdgeDetectorError

    require_sklearn()
    started = time.time()
    if (Path(out_dir) / "bundle").exists():
        raise EdgeDetectorError(f"{Path(out_dir) / 'bundle'} already exists; choose another --out (nothing is overwritten)")
    train_e, val_e, held_e = training_splits(protocol_path, exclude_sources, holdout_sources, val_protocol,
                                             val_fraction, seed)
    if heldout_protocol:
        held_e = held_e + read_protocol(heldout_protocol)
    log(f"train {len(train_e)} files, validation {len(val_e)}, held out {len(held_e)}")
    unique = list({e.file_id: e for e in train_e + val_e + held_e}.values())
    corpus = load_corpus(unique, audio_dir, cache_dir=cache_dir)
    spec, rule = LFCCSpec(), WindowRule()
    cfg = GMMConfig(components=gmm_components, iterations=gmm_iter, max_frames=gmm_max_frames, seed=seed)

    t_feat = time.time()
    train = corpus.subset(train_e)
    feats = window_features(train.signals, spec, rule.window, log, "train features")
    labels = train.labels
    feat_seconds = time.time() - t_feat
    t_fit = time.time()
    gmms, frames_used = train_pair([f for f, y in zip(feats, labels) if y == 1],
                                   [f for f, y in zip(feats, labels) if y == 0], cfg, log)
    fit_seconds = time.time() - t_fit
    scorer = LFCCGMMScorer(spec, gmms)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for name, entries in (("val", val_e), ("heldout", held_e)):
        if not entries:
            continue
        part = corpus.subset(entries)
        scores = score_features(scorer, window_features(part.signals, spec, rule.window, log, f"{name} features"))
        results[name] = _eer_record(scores, part.labels)
        (out / f"scores_{name}.txt").write_text("".join(f"{e.file_id} {s:.6f}\n" for e, s in zip(entries, scores)))
        log(f"{name} EER {results[name]['eer'] * 100:.2f} % on {len(entries)} files")
    evaluation = None
    if "val" in results:
        evaluation = {"set": Path(val_protocol).name if val_protocol else f"stratified {val_fraction} split",
                      "files": results["val"]["files"], "eer": results["val"]["eer"],
                      "eer_threshold_raw": results["val"]["threshold"], "windows": "first"}
    source = {"trained_by": "edge-detect train --model lfcc-gmm", "protocol": Path(protocol_path).name,
              "train_files": len(train_e), "frames": frames_used}
    bundle = write_bundle(out / "bundle", spec, gmms, cfg, model_id=None, evaluation=evaluation, source=source)
    report = {
        "command": command, "model": "lfcc-gmm", "wall_seconds": round(time.time() - started, 1),
        "feature_seconds_train": round(feat_seconds, 1), "fit_seconds": round(fit_seconds, 1),
        "train_files": len(train_e), "val_files": len(val_e), "frames_per_class": frames_used,
        "gmm": asdict(cfg), "frontend": spec.to_manifest(), "window": "first 64600 samples, tiled when shorter",
        "bundle": str(bundle),
        "best_val_eer": results.get("val", {}).get("eer"),
        "val": results.get("val"),
    }
    if "heldout" in results:
        report["heldout"] = dict(results["heldout"], sources=csv_values(holdout_sources),
                                 protocol=Path(heldout_protocol).name if heldout_protocol else None)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
