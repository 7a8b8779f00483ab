"""Diagonal-covariance GMM log-likelihoods in numpy, and the LFCC-GMM scorer of the runtime.

The score of the ASVspoof 2021 LFCC-GMM baseline (``LFCC_GMM_ASVspoof_2021_baseline.m``:
``mean(compute_llk(x, bona fide GMM)) - mean(compute_llk(x, spoof GMM))``; the Python port
uses scikit-learn's ``GaussianMixture.score``, the same mean) is the average over frames
of the per-frame log-likelihood ratio, higher = more bona fide.

Per frame ``x`` (``D`` dims) and component ``k`` (weight ``w_k``, mean ``m_k``, variances
``v_k``)::

    log N(x; m_k, v_k) = -1/2 (D log 2 pi + sum_d log v_kd + sum_d (x_d - m_kd)^2 / v_kd)
    log p(x) = logsumexp_k (log w_k + log N(x; m_k, v_k))

The quadratic form is expanded to one matrix product, ``[x^2, x] @ [-(1/v) / 2; m/v]^T``
plus a per-component constant, and the log-sum-exp subtracts each frame's maximum before
``exp`` so that no term overflows or underflows to a wrong answer. The ``[frames, K]``
scratch is kept per thread and reused (fresh 0.3-1 MB arrays per window cost page faults,
see :class:`edge_detector.lfcc.LFCCFrontEnd`). numpy only: runtime.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Union

import numpy as np

from .errors import BundleError
from .lfcc import LFCCFrontEnd, LFCCSpec

if TYPE_CHECKING:
    from .bundle import Bundle
    from .session import SessionSettings

#: The two models of the bundle's npz file, in the order of the score (bona fide - spoof).
CLASSES = ("bonafide", "spoof")
ARRAYS = ("weights", "means", "variances")


def logsumexp(a: np.ndarray, axis: int = -1, overwrite: bool = False) -> np.ndarray:
    """``log(sum(exp(a), axis))`` without overflow: the maximum is factored out first.

    Rows that are all ``-inf`` give ``-inf`` (no NaN). Shapes: ``a`` reduced over ``axis``.
    ``overwrite=True`` uses ``a`` (float, writeable) as scratch instead of allocating a copy.
    """
    m = np.max(a, axis=axis, keepdims=True)
    m_safe = np.where(np.isfinite(m), m, 0.0)
    shifted = np.subtract(a, m_safe, out=a if overwrite else None)
    np.exp(shifted, out=shifted)
    with np.errstate(divide="ignore"):  # log(0) = -inf is the right answer for an all -inf row
        return np.log(np.sum(shifted, axis=axis)) + np.squeeze(m_safe, axis=axis)


@dataclass(frozen=True)
class DiagonalGMM:
    """``weights [K]``, ``means [K, D]``, ``variances [K, D]`` (float64, variances > 0, weights sum to 1)."""

    weights: np.ndarray
    means: np.ndarray
    variances: np.ndarray

    def __post_init__(self) -> None:
        w, m, v = (np.asarray(a, dtype=np.float64) for a in (self.weights, self.means, self.variances))
        if w.ndim != 1 or m.ndim != 2 or v.shape != m.shape or m.shape[0] != w.shape[0]:
            raise BundleError(f"GMM arrays must be weights [K], means [K, D], variances [K, D]; got "
                              f"{w.shape}, {m.shape}, {v.shape}")
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(m)) and np.all(np.isfinite(v))):
            raise BundleError("GMM parameters must be finite")
        if np.any(v <= 0) or np.any(w <= 0) or abs(float(w.sum()) - 1.0) > 1e-6:
            raise BundleError("GMM variances and weights must be positive and the weights sum to 1")
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "means", m)
        object.__setattr__(self, "variances", v)
        precision = 1.0 / v
        # [x^2, x] @ _weights + _const = log w_k + log N(x; m_k, v_k)
        object.__setattr__(self, "_weights", np.ascontiguousarray(np.concatenate([-0.5 * precision.T,
                                                                                  (m * precision).T])))  # [2D, K]
        const = (np.log(w) - 0.5 * (m.shape[1] * np.log(2.0 * np.pi) + np.sum(np.log(v), axis=1)
                                    + np.sum(m * m * precision, axis=1)))
        object.__setattr__(self, "_const", const)  # [K]
        object.__setattr__(self, "_local", threading.local())

    @property
    def components(self) -> int:
        return int(self.weights.shape[0])

    @property
    def dims(self) -> int:
        return int(self.means.shape[1])

    def _scratch(self, frames: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-thread ``[frames, 2D]`` and ``[frames, K]`` float64 buffers, reused while ``frames`` is unchanged."""
        ws = getattr(self._local, "ws", None)
        if ws is None or ws[0].shape[0] != frames:
            ws = (np.empty((frames, 2 * self.dims)), np.empty((frames, self.components)))
            self._local.ws = ws
        return ws

    def weighted_log_prob(self, x: np.ndarray, scratch: bool = False) -> np.ndarray:
        """``log w_k + log N(x_t; m_k, v_k)`` for ``[T, D]`` frames: ``[T, K]`` float64.

        ``scratch=True`` returns the per-thread buffer (overwritten by the next call).
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dims:
            raise ValueError(f"expected [frames, {self.dims}] features, got {x.shape}")
        aug, out = self._scratch(len(x)) if scratch else (np.empty((len(x), 2 * self.dims)), None)
        np.multiply(x, x, out=aug[:, : self.dims])
        aug[:, self.dims :] = x
        out = np.matmul(aug, self._weights, out=out)
        out += self._const
        return out

    def log_likelihood(self, x: np.ndarray) -> np.ndarray:
        """Per-frame ``log p(x_t)``: ``[T]`` float64 (nats)."""
        return logsumexp(self.weighted_log_prob(x, scratch=True), axis=1, overwrite=True)


def load_gmm_pair(path: Union[str, Path]) -> dict[str, DiagonalGMM]:
    """The bona fide and spoof GMMs of a bundle's ``.npz`` (arrays ``bonafide_weights`` ... ``spoof_variances``).

    Loaded without pickle; a missing array or malformed file is a BundleError (exit 7).
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: np.array(data[name]) for name in data.files}
    except (OSError, ValueError, KeyError) as exc:
        raise BundleError(f"{path}: cannot read the GMM parameters ({exc})") from None
    out = {}
    for cls in CLASSES:
        missing = [f"{cls}_{a}" for a in ARRAYS if f"{cls}_{a}" not in arrays]
        if missing:
            raise BundleError(f"{path}: GMM file lacks arrays {missing}")
        try:
            out[cls] = DiagonalGMM(*(arrays[f"{cls}_{a}"] for a in ARRAYS))
        except BundleError as exc:
            raise BundleError(f"{path}: {cls} GMM: {exc}") from None
    if out["bonafide"].dims != out["spoof"].dims:
        raise BundleError(f"{path}: the two GMMs have {out['bonafide'].dims} and {out['spoof'].dims} dims")
    return out


def save_gmm_pair(path: Union[str, Path], gmms: Mapping[str, Any]) -> Path:
    """Write ``{"bonafide": gmm, "spoof": gmm}`` (anything with weights/means/variances) as an npz."""
    arrays = {f"{cls}_{a}": np.asarray(getattr(gmms[cls], a), dtype=np.float64) for cls in CLASSES for a in ARRAYS}
    p = Path(path)
    with open(p, "wb") as f:
        np.savez(f, **arrays)
    return p


class BlasThreads:
    """Context manager holding numpy's BLAS to ``threads`` threads (0 = leave the library default).

    The matrix products here are small ([frames, 60] x [60, K]); a multi-threaded BLAS
    spins waiting for its other threads, which on a busy CPU made one window 20-50x slower
    (measured: 6 ms with one thread, 90-325 ms with two on a loaded 2-core machine). The
    limit is what ``SessionSettings.intra_op_threads`` means for onnxruntime, applied to
    OpenBLAS/MKL through threadpoolctl (a runtime dependency; without it nothing is limited).
    """

    def __init__(self, threads: int) -> None:
        self.threads = int(threads)
        self._controller = None
        if self.threads > 0:
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:  # pragma: no cover - installed with the package
                return
            self._controller = ThreadpoolController()

    def __enter__(self) -> "BlasThreads":
        self._limit = (self._controller.limit(limits=self.threads, user_api="blas")
                       if self._controller is not None else None)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._limit is not None:
            self._limit.restore_original_limits()


class LFCCGMMScorer:
    """Raw windows → mean per-frame log-likelihood ratio (bona fide GMM - spoof GMM), numpy only.

    ``threads``: BLAS threads while scoring (0 = numpy's default), see :class:`BlasThreads`.
    """

    def __init__(self, spec: LFCCSpec, gmms: Mapping[str, DiagonalGMM], max_batch: int = 16, threads: int = 0) -> None:
        self.frontend = LFCCFrontEnd(spec)
        self.bonafide, self.spoof = gmms["bonafide"], gmms["spoof"]
        if self.bonafide.dims != spec.dims:
            raise BundleError(f"the GMMs take {self.bonafide.dims}-dim features, the LFCC front end gives {spec.dims}")
        self.max_batch = max(1, int(max_batch))
        self.blas = BlasThreads(threads)

    @property
    def providers(self) -> list[str]:
        return ["numpy"]

    def frame_llr(self, window: np.ndarray) -> np.ndarray:
        """Per-frame log-likelihood ratio ``[frames]`` float64 for one 1-D window."""
        feats = self.frontend(window)
        return self.bonafide.log_likelihood(feats) - self.spoof.log_likelihood(feats)

    def score(self, batch: np.ndarray) -> np.ndarray:
        """``[n]`` float32 scores for ``[n, window]`` windows (one at a time: memory is one window's)."""
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        with self.blas:
            return np.array([float(np.mean(self.frame_llr(w))) for w in x], dtype=np.float32)


def lfcc_gmm_scorer(bundle: "Bundle", settings: "SessionSettings", max_batch: int) -> LFCCGMMScorer:
    """The LFCC-GMM family's scorer factory: ``settings.intra_op_threads`` limits the BLAS threads."""
    return LFCCGMMScorer(bundle.frontend, load_gmm_pair(bundle.model_path), max_batch,
                         threads=int(settings.intra_op_threads))
