"""Few-shot adaptation of the final layer on the device (numpy only): fit, cross-fit, guard.

Given embeddings ``E`` ``[n, H]`` of labelled recordings (bona fide recorded on the device,
plus spoofs: known attacks and/or vocoded copies of the bona fide) and the shipped final
layer ``θ0 = (w0, b0)`` (:class:`edge_detector.head.LinearHead`), the new layer is the
maximum a posteriori logistic regression with a Gaussian prior centred on the shipped
weights::

    θ* = argmin_θ  Σ_i ω_i · CE(y_i, σ(w·e_i + b))  +  λ/2 · ||w - w0||²

    CE = cross-entropy (log loss); ω_i = n / (2 n_{y_i}) (each class carries half the
    weight, total weight n); the bias b is not penalised.

Source of the objective: adaptation by a prior centred on the old model's weights,
Chelba & Acero, "Adaptation of maximum entropy capitalizer: Little data can help a lot",
Computer Speech and Language 20(4), 2006; the same penalty on deep networks is "L2-SP"
(Li, Grandvalet & Davoine, ICML 2018, arXiv 1802.01483). With few samples the penalty
dominates and the layer stays near the shipped one; the data term grows with ``n``, so
more samples move it further. The problem is strictly convex; it is solved by Newton's
method with a backtracking line search (Boyd & Vandenberghe, Convex Optimization, 9.5).

The guard (:func:`adapt_head`) measures the procedure on data it did not fit: the files
are split into ``k`` stratified folds and every file is scored by a layer fitted on the
other folds (cross-fitting). The adaptation is refused when those held-back scores have a
higher EER than the source bundle's scores of the same files, or when the adapted gate
would accept any signal of the sanity set (:mod:`edge_detector.sanity`: tones, noise,
buzz, clicks, formant-synthesised vowels): the final layer with its new calibration
accepts it and the runtime's speech-presence check lets it through to the model.
The calibration and thresholds come from the held-back scores too (the layer's scores
on its own training files would be optimistic), through :mod:`edge_detector.calibration`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from .calibration import Calibration, choose_thresholds, fit_logistic_calibration
from .detector import ACCEPT, decide
from .errors import DataError, EdgeDetectorError, ExitCode
from .head import LinearHead
from .metrics import compute_eer

OBJECTIVE = ("argmin_theta sum_i w_i * CE(y_i, sigmoid(weight . e_i + bias)) + l2/2 * ||weight - weight_shipped||^2; "
             "w_i = n / (2 n_class(i)); bias not penalised (MAP with a Gaussian prior centred on the shipped "
             "layer: Chelba & Acero, Computer Speech and Language 2006; L2-SP, Li et al., ICML 2018)")


class AdaptationRefused(EdgeDetectorError):
    """The guard refused the adaptation (nothing is written). Exit code 3, like a rejection."""

    exit_code = ExitCode.REJECT
    kind = "adaptation_refused"


@dataclass(frozen=True)
class AdaptSettings:
    """``l2``: λ of the objective (default: the value that kept every other family of the dev corpus
    within about 1 pp in benchmarks/results/adapt; smaller adapts more and risks more); ``folds``: cross-fitting folds (at most the smaller class's size);
    ``max_eer_increase``: held-back EER may exceed the source's by at most this (absolute);
    ``target_far`` / ``target_frr``: threshold targets as in `edge-detect calibrate`."""

    l2: float = 1000.0
    folds: int = 4
    seed: int = 0
    max_eer_increase: float = 0.0
    target_far: float = 0.01
    target_frr: float = 0.05

    def __post_init__(self) -> None:
        if not (np.isfinite(self.l2) and self.l2 > 0):
            raise ValueError("l2 must be a positive number (it keeps the layer near the shipped one)")
        if self.folds < 2:
            raise ValueError("folds must be at least 2")


def class_weights(labels: np.ndarray) -> np.ndarray:
    """``ω_i = n / (2 n_{y_i})`` for labels ``[n]`` in {0, 1} (1 = bona fide): classes weigh the same."""
    y = np.asarray(labels)
    n1, n0 = int((y == 1).sum()), int((y == 0).sum())
    if n1 == 0 or n0 == 0:
        raise DataError("adaptation needs both classes: bona fide and spoof (known attacks or vocoded copies)")
    return np.where(y == 1, len(y) / (2.0 * n1), len(y) / (2.0 * n0))


def objective(theta: np.ndarray, x: np.ndarray, y: np.ndarray, w: np.ndarray, prior: np.ndarray, l2: float) -> float:
    """The objective of the module docstring at ``theta`` ``[H + 1]`` (``x`` = ``[E, 1]``)."""
    u = x @ theta
    data = np.sum(w * np.where(y == 1, np.logaddexp(0.0, -u), np.logaddexp(0.0, u)))
    d = theta[:-1] - prior[:-1]
    return float(data + 0.5 * l2 * d @ d)


def fit_head(embeddings: np.ndarray, labels: np.ndarray, prior: LinearHead, l2: float,
             weights: Optional[np.ndarray] = None, max_iter: int = 100, tol: float = 1e-10) -> LinearHead:
    """Minimise the objective from ``prior`` by damped Newton steps; return the fitted head.

    ``embeddings`` ``[n, H]``, ``labels`` ``[n]`` (1 = bona fide, 0 = spoof), ``weights``
    ``[n]`` (default :func:`class_weights`). Raises DataError when a class is missing.
    Stops when the Newton decrement ``g·Δ/2`` falls below ``tol`` (the objective is then
    within about ``tol`` of its minimum).
    """
    e = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    w = class_weights(y) if weights is None else np.asarray(weights, dtype=np.float64)
    x = np.hstack([e, np.ones((len(e), 1))])
    theta0 = prior.theta
    if x.shape[1] != theta0.size:
        raise ValueError(f"embeddings have {e.shape[1]} dimensions, the head {prior.dim}")
    reg = np.full(theta0.size, float(l2))
    reg[-1] = 1e-9  # bias unpenalised (a tiny ridge keeps the system non-singular)
    theta = theta0.copy()
    f = objective(theta, x, y, w, theta0, l2)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(x @ theta)))
        g = x.T @ (w * (p - y)) + reg * (theta - theta0)
        hess = (x * (w * p * (1.0 - p))[:, None]).T @ x + np.diag(reg)
        step = np.linalg.solve(hess, g)
        decrement = float(g @ step)
        if decrement / 2.0 < tol:
            break
        t = 1.0
        while True:
            cand = theta - t * step
            f_new = objective(cand, x, y, w, theta0, l2)
            if f_new <= f - 1e-4 * t * decrement or t < 1e-10:
                break
            t *= 0.5
        theta, f = cand, f_new
    return LinearHead.from_theta(theta)


def stratified_folds(labels: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Fold index ``[n]`` in ``0..k-1``: each class shuffled (seeded) and dealt round-robin."""
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(y), dtype=np.int64)
    offset = 0
    for cls in (1, 0):
        idx = np.flatnonzero(y == cls)
        idx = idx[rng.permutation(len(idx))]
        fold[idx] = (np.arange(len(idx)) + offset) % k
        offset += len(idx)
    return fold


def training_set(embeddings: np.ndarray, labels: np.ndarray,
                 negatives: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings, labels, weights) to fit on: the files with :func:`class_weights`, plus the
    synthetic negatives (label 0) sharing an extra weight of n/2, as much as the given spoofs
    (so their number does not decide how much they count)."""
    e = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    w = class_weights(y)
    if negatives is None or not len(negatives):
        return e, y, w
    neg = np.asarray(negatives, dtype=np.float64)
    return (np.vstack([e, neg]), np.concatenate([y, np.zeros(len(neg), np.int64)]),
            np.concatenate([w, np.full(len(neg), len(y) / (2.0 * len(neg)))]))


def cross_fitted_scores(embeddings: np.ndarray, labels: np.ndarray, prior: LinearHead, l2: float,
                        folds: np.ndarray, negatives: Optional[np.ndarray] = None) -> np.ndarray:
    """Raw scores ``[n]``: each file scored by a head fitted on the other folds (and the negatives) only."""
    e = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels)
    out = np.zeros(len(y))
    for k in np.unique(folds):
        held = folds == k
        x, t, w = training_set(e[~held], y[~held], negatives)
        out[held] = fit_head(x, t, prior, l2, weights=w).score(e[held])
    return out


@dataclass
class AdaptationResult:
    """What :func:`adapt_head` decided; ``report`` is the manifest's record of it."""

    head: LinearHead
    calibration: Calibration
    thresholds: dict[str, Any]
    eer_before: float
    eer_held_back: float
    held_back_scores: np.ndarray
    sanity: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


def adapt_head(embeddings: np.ndarray, labels: np.ndarray, source_scores: np.ndarray, prior: LinearHead,
               settings: AdaptSettings, sanity_embeddings: Optional[np.ndarray] = None,
               sanity_names: Sequence[str] = (), negatives: Optional[np.ndarray] = None,
               sanity_reaches_model: Optional[Sequence[bool]] = None) -> AdaptationResult:
    """Fit, measure on held-back folds, calibrate, check the sanity set; raise AdaptationRefused on failure.

    ``embeddings`` ``[n, H]`` and ``labels`` ``[n]`` of the given files; ``source_scores``
    ``[n]``: the source bundle's raw scores of the same files (the "before"). Needs at
    least 2 files of each class (DataError otherwise). ``negatives`` ``[m, H]``: embeddings
    of synthetic non-speech (:func:`hard_negatives`), always in the training part, never
    in the measurement. ``sanity_embeddings`` ``[s, H]``: the sanity set's embeddings, none
    of which may be accepted; ``sanity_reaches_model`` ``[s]`` (default all True): False
    for a signal the runtime refuses before the model (:func:`reaches_model`), which the
    gate therefore cannot accept.
    """
    y = np.asarray(labels).astype(np.int64)
    n1, n0 = int((y == 1).sum()), int((y == 0).sum())
    if min(n1, n0) < 2:
        raise DataError(f"adaptation needs both classes, at least 2 scorable files each (got {n1} bona fide, {n0} spoof); "
                        "add spoofs (known attacks, or vocoded copies of the bona fide: `edge-detect vocode`)")
    k = int(min(settings.folds, n1, n0))
    folds = stratified_folds(y, k, settings.seed)
    held = cross_fitted_scores(embeddings, y, prior, settings.l2, folds, negatives)
    src = np.asarray(source_scores, dtype=np.float64)
    eer_before = compute_eer(src[y == 1], src[y == 0])[0]
    eer_after = compute_eer(held[y == 1], held[y == 0])[0]
    if eer_after > eer_before + settings.max_eer_increase:
        raise AdaptationRefused(
            f"adaptation refused: on held-back files (each scored by a layer fitted without it, {k} folds) the EER "
            f"would rise from {eer_before:.2%} (source bundle) to {eer_after:.2%}. Nothing was written. Give more or "
            "cleaner recordings, or a stronger pull to the shipped layer (--l2)")
    cal = fit_logistic_calibration(held[y == 1], held[y == 0])
    if not (np.isfinite(cal.scale) and cal.scale > 0):
        raise AdaptationRefused(f"adaptation refused: held-back scores rank spoofs above bona fide (calibration slope "
                                f"{cal.scale:.3g}); are the labels swapped? Nothing was written")
    llr = cal.apply(held)
    th = choose_thresholds(llr[y == 1], llr[y == 0], target_far=settings.target_far, target_frr=settings.target_frr)
    x, t, w = training_set(embeddings, y, negatives)
    head = fit_head(x, t, prior, settings.l2, weights=w)
    sanity = []
    if sanity_embeddings is not None and len(sanity_embeddings):
        s_llr = cal.apply(head.score(sanity_embeddings))
        names = list(sanity_names) or [f"sanity_{i}" for i in range(len(s_llr))]
        reach = [True] * len(s_llr) if sanity_reaches_model is None else [bool(v) for v in sanity_reaches_model]
        sanity = [{"name": nm, "llr": float(v),
                   "decision": decide(float(v), th["accept"], th["reject"]) if ok else "not_speech"}
                  for nm, v, ok in zip(names, s_llr, reach)]
        accepted = [s["name"] for s in sanity if s["decision"] == ACCEPT]
        if accepted:
            raise AdaptationRefused(
                f"adaptation refused: the adapted bundle would accept {len(accepted)} signal(s) of the sanity set "
                f"({', '.join(accepted[:6])}{' ...' if len(accepted) > 6 else ''}), which no voice gate may accept. "
                "Nothing was written. Add spoofs closer to these, or a stronger pull to the shipped layer (--l2)")
    change = float(np.linalg.norm(head.weight - prior.weight) / max(np.linalg.norm(prior.weight), 1e-12))
    report = {"objective": OBJECTIVE, "l2": settings.l2, "solver": "Newton with backtracking line search",
              "synthetic_negatives": 0 if negatives is None else int(len(negatives)),
              "held_back": {"method": f"stratified {k}-fold cross-fitting (seed {settings.seed}): every file "
                                      "scored by a layer fitted on the other folds",
                            "eer_before": eer_before, "eer_after": eer_after,
                            "max_eer_increase": settings.max_eer_increase},
              "weight_change_relative": change, "bias_before": prior.bias, "bias_after": head.bias,
              "sanity": {"items": len(sanity), "accepted": 0,
                         "refused_before_the_model": sum(s["decision"] == "not_speech" for s in sanity),
                         "max_llr_reaching_the_model": max((s["llr"] for s in sanity if s["decision"] != "not_speech"),
                                                           default=None)}}
    return AdaptationResult(head, cal, th, eer_before, eer_after, held, sanity, report)


def reaches_model(signal: np.ndarray, sample_rate: int, window: int) -> bool:
    """Whether the runtime would score ``signal`` at all: its speech-presence check
    (:mod:`edge_detector.speech_presence`, on the audio the first window covers) refuses
    non-speech before the model. True when this runtime has no such check."""
    try:
        from .speech_presence import judge
    except ImportError:
        return True
    return bool(judge(np.asarray(signal, dtype=np.float32)[:window], sample_rate).speech)


def sanity_signals(sample_rate: int) -> tuple[list[str], list[np.ndarray], str]:
    """(names, float32 signals at ``sample_rate``, where they came from): the set no gate may accept.

    :func:`edge_detector.sanity.sanity_set` without espeak-ng (so the guard does not depend
    on what is installed); when that module is absent, a small stand-in: a tone, white
    noise and the formant-synthesised vowels of `make-demo`.
    """
    try:
        from .sanity import sanity_set
    except ImportError:
        from .demo_audio import synthesize_vowels

        rng = np.random.default_rng(0)
        t = np.arange(5 * sample_rate) / sample_rate
        sigs = {"tone_440": 0.5 * np.sin(2 * np.pi * 440.0 * t), "white_noise": 0.2 * rng.standard_normal(len(t)),
                "formant_vowels": synthesize_vowels(5.0, sr=sample_rate)}
        return list(sigs), [np.asarray(v, dtype=np.float32) for v in sigs.values()], "edge_detector.adaptation (stand-in)"
    items = sanity_set(sample_rate, with_espeak=False)
    return [s.name for s in items], [s.samples for s in items], "edge_detector.sanity.sanity_set (without espeak-ng)"


def hard_negatives(sample_rate: int, seconds: float = 4.5, seed: int = 1) -> tuple[list[str], list[np.ndarray]]:
    """(names, float32 signals): synthetic non-speech the fit learns to reject (label spoof).

    Random draws (seeded) of the kinds of signal in the sanity set (:mod:`edge_detector.sanity`),
    made here with other frequencies, rates, seeds and levels, so that the guard still tests
    signals the fit has not seen: pure and amplitude-modulated tones, vibrato tones, sweeps,
    square and sawtooth waves, harmonic buzz, white / pink / brown noise (steady and with a
    syllabic envelope), clicks and impulse trains, tone beeps, near-silence (DC offsets,
    faint hiss, mains hum) and formant-synthesised vowels. Coloured noise by 1/f^a spectral
    shaping of white Gaussian noise.
    """
    from .demo_audio import synthesize_vowels

    sr = int(sample_rate)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr

    def env() -> np.ndarray:  # syllabic envelope, 2-6 Hz
        return 0.5 * (1.0 - np.cos(2 * np.pi * rng.uniform(2, 6) * t + rng.uniform(0, 6)))

    def freq(lo: float, hi: float) -> float:
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))

    def harmonics(f0: float) -> np.ndarray:
        return sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, int(sr / 2.2 // f0) + 1))

    def coloured(a: float) -> np.ndarray:
        spec = np.fft.rfft(rng.standard_normal(len(t)))
        f = np.fft.rfftfreq(len(t), 1.0 / sr)
        spec[1:] *= f[1:] ** (-a / 2.0)
        spec[0] = 0.0
        return np.fft.irfft(spec, len(t))

    def pulses(rate: float) -> np.ndarray:
        x = np.zeros(len(t))
        x[:: max(1, int(sr / rate))] = 1.0
        return x

    sigs: dict[str, np.ndarray] = {}
    for i in range(4):
        sigs[f"tone_{i}"] = np.sin(2 * np.pi * freq(80, 5000) * t)
        sigs[f"am_tone_{i}"] = np.sin(2 * np.pi * freq(150, 3000) * t) * env()
        f0, dev = freq(120, 1500), rng.uniform(10, 80)
        sigs[f"vibrato_tone_{i}"] = np.sin(2 * np.pi * np.cumsum(f0 + dev * np.sin(2 * np.pi * rng.uniform(3, 7) * t)) / sr)
        sigs[f"buzz_{i}"] = harmonics(freq(70, 300)) * (env() if i % 2 else 1.0)
        sigs[f"noise_{i}"] = coloured(float(i % 3)) * (env() if i >= 2 else 1.0)
    for i in range(2):
        f0, f1 = freq(50, 500), freq(2000, 7500)
        sigs[f"sweep_{i}"] = np.sin(2 * np.pi * (f0 * t + 0.5 * (f1 - f0) / seconds * t * t))
        sigs[f"square_{i}"] = np.sign(np.sin(2 * np.pi * freq(80, 400) * t + 0.3))
        sigs[f"sawtooth_{i}"] = 2 * ((freq(80, 400) * t) % 1.0) - 1
        sigs[f"clicks_{i}"] = pulses(rng.uniform(1, 8))
        sigs[f"impulse_train_{i}"] = pulses(freq(60, 250))
        sigs[f"beeps_{i}"] = np.sin(2 * np.pi * freq(400, 1200) * t) * (np.sin(2 * np.pi * rng.uniform(2, 5) * t) > 0)
        sigs[f"vowels_{i}"] = synthesize_vowels(seconds, sr=sr, seed=seed + 16 + i, f0=rng.uniform(90, 220))
    out = {k: 0.4 * x / (np.max(np.abs(x)) + 1e-12) for k, x in sigs.items()}
    for i, level in enumerate(10.0 ** rng.uniform(-4.7, -2, 3)):  # near-silence: DC, hiss, hum
        out[f"dc_{i}"] = np.full(len(t), level)
        out[f"hiss_{i}"] = level * rng.standard_normal(len(t))
        out[f"hum_{i}"] = sum(level / k * np.sin(2 * np.pi * rng.choice([50.0, 60.0]) * k * t + k) for k in range(1, 6))
    return list(out), [np.asarray(x, dtype=np.float32) for x in out.values()]
