"""RawNet2's fixed sinc front end in numpy: FFT filtering, |x|, max-pool 3.

Why it exists: the 20-filter, 1025-tap sinc convolution is about 62 % of RawNet2's
multiply-accumulates (1.3 of 2.1 GMAC per window) and about half of the fp32 runtime,
yet its filters are fixed (never learned, never in the checkpoint). A direct
convolution costs ``kernel`` MACs per output sample and filter; an FFT costs
``O(log fft_size)``. Computing the stage here, before onnxruntime, makes the ONNX graph
start at ``first_bn`` and lets the device do the expensive part with ``numpy.fft``.

Exactness: ``F.conv1d`` is a cross-correlation, ``y[m] = sum_k x[m + k] h[k]`` with
``m = 0 .. window - kernel`` ("valid"). Overlap-save with spectrum ``X * conj(H)``
computes exactly that (no flip is assumed, although the sinc filters are symmetric);
float32 FFTs match the direct convolution to a few 1e-7 of the signal scale. Then
``|y|`` and a floor-mode max-pool of 3, as ``F.max_pool1d(torch.abs(y), 3)``.

Memory: the scratch holds the block spectra of the signal being filtered and one band's
``|y|`` at a time (about 0.6 MB for one 64 600-sample window at 9000 points, whatever the
number of filters), plus transform scratch for :data:`CHUNK_BLOCKS` blocks; overlapping
windows filtered together (:meth:`SincFFTFrontEnd.features_windows`) grow the first two
with their span. numpy only: this module is part of the device runtime.
"""
from __future__ import annotations

import threading

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .errors import BundleError
from .sincbank import check_sinc_keep, odd_kernel_size, sinc_filters, sinc_filters_subset

#: Front-end types a bundle may declare in ``manifest["frontend"]["type"]``.
SINC_FFT_NUMPY = "sinc-fft-numpy"
FRONTEND_TYPES = (SINC_FFT_NUMPY,)
#: Overlap-save block (FFT) size, lower end. Measured on x86 with numpy's pocketfft:
#: blocks of 8192-9216 points were faster than one 65 536-point transform per window and
#: than blocks of 10 240 points or more, and keep the scratch arrays small (one band at a
#: time, inside L2); the block must be well above the kernel length.
PREFERRED_FFT_SIZE = 8192
#: How far above PREFERRED_FFT_SIZE a block may grow to cut the padding of the last block.
FFT_SIZE_SLACK = 1.125


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


def _smooth_sizes(lo: int, hi: int) -> list[int]:
    """Sizes in [lo, hi] with no prime factor above 5 (fast for pocketfft), ascending."""
    out = []
    p2 = 1
    while p2 <= hi:
        p3 = p2
        while p3 <= hi:
            p5 = p3
            while p5 <= hi:
                if p5 >= lo:
                    out.append(p5)
                p5 *= 5
            p3 *= 3
        p2 *= 2
    return sorted(out)


def choose_fft_size(window: int, kernel: int, preferred: int = PREFERRED_FFT_SIZE) -> int:
    """FFT size for overlap-save of a ``window``-sample signal with a ``kernel``-tap filter.

    Short windows (at most one preferred block) get a single power-of-two block. Otherwise
    the 5-smooth size in ``[preferred, 1.125 * preferred]`` (at least twice the kernel)
    that transforms the fewest samples in total (blocks x size): for RawNet2's 64 600
    samples and 1025 taps that is 9000 points (8 blocks, 0.4 % padding) instead of 8192
    (9 blocks, 16 %). ``benchmarks/frontend_speed.py`` times both, interleaved: with the
    8 filters of the edge bundles 9000 points was faster in every run here
    (``results/frontend_speed_8.json``); with 20 filters the two were within run-to-run
    noise (9000 faster in the committed ``results/frontend_speed.json``, slower in two
    other runs).
    """
    k = odd_kernel_size(kernel)
    block = max(int(preferred), _next_pow2(2 * k))
    if window < k:
        return block
    if _next_pow2(window) <= block:
        return _next_pow2(window)
    n_out = window - k + 1

    def transformed(n: int) -> int:
        return -(-n_out // (n - k + 1)) * n

    return min(_smooth_sizes(block, int(block * FFT_SIZE_SLACK)), key=lambda n: (transformed(n), n))


def bank_for(n_filters: int, kernel: int, sample_rate: int, keep: Optional[tuple[int, ...]] = None,
             total: Optional[int] = None) -> np.ndarray:
    """The float32 filter bank: the plain ``n_filters``-band bank, or rows ``keep`` of the
    ``total``-band bank for a model whose sinc filters were pruned (band edges come from
    the original band count; see :func:`edge_detector.sincbank.sinc_filters_subset`)."""
    if keep is None:
        return sinc_filters(n_filters, kernel, sample_rate)
    if total is None or len(keep) != n_filters:
        raise ValueError("a pruned sinc bank needs total and len(keep) == filters")
    return sinc_filters_subset(int(total), keep, kernel, sample_rate)


@lru_cache(maxsize=16)
def filter_spectra(n_filters: int, kernel: int, sample_rate: int, fft_size: int,
                   keep: Optional[tuple[int, ...]] = None, total: Optional[int] = None) -> np.ndarray:
    """``conj(rfft(h, fft_size))`` for every filter, complex64 ``[n_filters, fft_size // 2 + 1]`` (cached, read-only).

    Computed in float64 and rounded once, so the only float32 error is in the per-window FFTs.
    """
    bank = bank_for(n_filters, kernel, sample_rate, keep, total).astype(np.float64)
    if fft_size < bank.shape[1]:
        raise ValueError(f"fft size {fft_size} is shorter than the {bank.shape[1]}-tap kernel")
    spec = np.conj(np.fft.rfft(bank, n=fft_size, axis=-1)).astype(np.complex64)
    spec.setflags(write=False)
    return spec


@dataclass(frozen=True)
class FrontEndSpec:
    """What the manifest's ``frontend`` field states (absent/None = the graph takes the waveform)."""

    filters: int = 20
    kernel: int = 1024
    sample_rate: int = 16000
    pool: int = 3
    type: str = SINC_FFT_NUMPY
    keep: Optional[tuple[int, ...]] = None  # kept band indices of a sinc-pruned model
    total: Optional[int] = None  # the original band count those indices refer to

    def __post_init__(self) -> None:
        if self.type not in FRONTEND_TYPES:
            raise BundleError(f"unknown front-end type {self.type!r}; this runtime knows {FRONTEND_TYPES}")
        for name in ("filters", "kernel", "sample_rate", "pool"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise BundleError(f"frontend.{name} must be a positive integer, got {value!r}")
        # One representation per bank: the config's 1024 and the manifest's 1025 are the same filters.
        object.__setattr__(self, "kernel", odd_kernel_size(int(self.kernel)))
        if (self.keep is None) != (self.total is None):
            raise BundleError("frontend.keep and frontend.total go together (kept bands of the original grid)")
        if self.keep is not None:
            try:
                keep = check_sinc_keep(self.keep, int(self.total))
            except (TypeError, ValueError) as exc:
                raise BundleError(f"frontend.keep: {exc}") from None
            if len(keep) != int(self.filters):
                raise BundleError(f"frontend.keep has {len(keep)} bands but frontend.filters is {self.filters}")
            object.__setattr__(self, "keep", keep)

    @property
    def taps(self) -> int:
        """The kernel length actually used (the baseline makes 1024 odd: 1025)."""
        return odd_kernel_size(int(self.kernel))

    def output_length(self, window: int) -> int:
        """Pooled length for a window: ``floor((window - taps + 1) / pool)``."""
        return (int(window) - self.taps + 1) // int(self.pool)

    def output_shape(self, window: int) -> tuple[int, int]:
        return int(self.filters), self.output_length(window)

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "filters": int(self.filters), "kernel": self.taps,
                               "sample_rate": int(self.sample_rate), "pool": int(self.pool)}
        if self.keep is not None:
            out.update({"keep": list(self.keep), "total": int(self.total)})
        return out

    def bank(self) -> np.ndarray:
        return bank_for(int(self.filters), int(self.kernel), int(self.sample_rate), self.keep, self.total)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], pool: int = 3) -> "FrontEndSpec":
        """The front end of a RawNet2 ``config`` dict (a checkpoint's or ``manifest['model']['config']``)."""
        keep = config.get("sinc_keep")
        return cls(filters=int(config.get("sinc_filters", 20)), kernel=int(config.get("sinc_kernel", 1024)),
                   sample_rate=int(config.get("sample_rate", 16000)), pool=int(pool),
                   keep=None if keep is None else tuple(int(i) for i in keep),
                   total=None if config.get("sinc_total") is None else int(config["sinc_total"]))

    @classmethod
    def from_manifest(cls, entry: Any) -> Optional["FrontEndSpec"]:
        """Parse ``manifest["frontend"]``; None stays None; anything malformed is a BundleError."""
        if entry is None:
            return None
        if not isinstance(entry, Mapping):
            raise BundleError(f"field 'frontend' must be an object or null, got {type(entry).__name__}")
        kind = entry.get("type")
        if kind not in FRONTEND_TYPES:
            raise BundleError(f"unknown front-end type {kind!r}; this runtime knows {FRONTEND_TYPES}")
        missing = [k for k in ("filters", "kernel", "sample_rate", "pool") if k not in entry]
        if missing:
            raise BundleError(f"field 'frontend' lacks {missing}")
        keep = entry.get("keep")
        if keep is not None and not isinstance(keep, (list, tuple)):
            raise BundleError("frontend.keep must be a list of band indices")
        return cls(filters=entry["filters"], kernel=entry["kernel"], sample_rate=entry["sample_rate"],
                   pool=entry["pool"], type=kind, keep=None if keep is None else tuple(keep),
                   total=entry.get("total"))


#: Overlap-save blocks transformed per numpy call: the float64 / complex scratch stays about
#: 0.3-0.6 MB whatever the number of windows filtered together.
CHUNK_BLOCKS = 8


def _fft_out(fn, a: np.ndarray, out: np.ndarray, **kw) -> np.ndarray:
    """``fn(a, out=out, **kw)`` (numpy >= 2 writes in place); numpy 1.x has no ``out=`` in numpy.fft."""
    try:
        return fn(a, out=out, **kw)
    except TypeError:
        out[...] = fn(a, **kw)
        return out


class SincFFTFrontEnd:
    """Callable: ``[n, window]`` float32 waveforms → ``[n, filters, pooled]`` float32 features.

    :meth:`features_windows` computes the features of several (overlapping) windows of one
    signal filtering every sample once: the windows of ``--windows all`` overlap by half,
    so this halves the front end's work per window against filtering each window alone.
    """

    def __init__(self, spec: FrontEndSpec, fft_size: Optional[int] = None) -> None:
        self.spec = spec
        self.fft_size = fft_size  # None = chosen per window length by choose_fft_size
        self._local = threading.local()

    @property
    def filters(self) -> np.ndarray:
        return self.spec.bank()

    def _fft_size(self, window: int) -> int:
        """The block size for ``window``-sample windows (also used for a span of several windows)."""
        k = self.spec.taps
        if window - k + 1 <= 0:
            raise ValueError(f"window of {window} samples is shorter than the {k}-tap kernel")
        return int(self.fft_size or choose_fft_size(window, k))

    def _spectra(self, nfft: int) -> np.ndarray:
        return filter_spectra(int(self.spec.filters), int(self.spec.kernel), int(self.spec.sample_rate), int(nfft),
                              self.spec.keep, None if self.spec.total is None else int(self.spec.total))

    def _workspace(self, nfft: int, n_blocks: int) -> dict[str, Any]:
        """Scratch arrays reused across calls (per thread), grown to the most blocks seen.

        Allocating FFT scratch afresh for every window costs more than the FFTs (glibc
        returns such blocks to the kernel on free and the next call pays a page fault per
        4 KiB: measured 9 ms instead of 2.8 ms per window for 12 filters). For the same
        reason the forward FFT runs in float64 with ``out=``: numpy's float32 ``rfft``
        allocates a temporary buffer per call (one-off measurement here, 8 blocks of 9000
        points: 1.0-1.4 ms in float32 against 0.2 ms in float64 into a reused array).
        Scratch for the transforms is sized for :data:`CHUNK_BLOCKS` blocks (inside the
        L2 cache); only the block spectra and one band's ``|y|`` span the whole signal.
        """
        k = self.spec.taps
        hop = nfft - k + 1
        ws = getattr(self._local, "ws", None)
        if ws is not None and ws["nfft"] == nfft and ws["cap"] >= n_blocks:
            return ws
        c = min(CHUNK_BLOCKS, n_blocks)
        bins = nfft // 2 + 1
        ws = {
            "nfft": nfft, "hop": hop, "cap": n_blocks, "chunk": c, "spec": self._spectra(nfft),
            "xs": np.empty((n_blocks, bins), dtype=np.complex64),  # spectra of every block of the signal
            "abs": np.empty((n_blocks, hop), dtype=np.float32),  # |filtered| of one band over the signal
            "in64": np.zeros((c - 1) * hop + nfft, dtype=np.float64),
            "x128": np.empty((c, bins), dtype=np.complex128),
            "prod": np.empty((c, bins), dtype=np.complex64),
            "ys": np.empty((c, nfft), dtype=np.float32),
        }
        self._local.ws = ws
        return ws

    def _load(self, x: np.ndarray, nfft: int) -> tuple[dict[str, Any], int, int]:
        """FFT the overlap-save blocks of the 1-D float32 signal ``x`` into the workspace.

        Returns ``(workspace, n_blocks, n_out)``; block ``b`` yields the valid outputs
        ``b * hop .. (b + 1) * hop - 1`` of the cross-correlation (``n_out`` of them real).
        """
        k = self.spec.taps
        n_out = len(x) - k + 1
        if n_out <= 0:
            raise ValueError(f"signal of {len(x)} samples is shorter than the {k}-tap kernel")
        hop = nfft - k + 1
        n_blocks = -(-n_out // hop)
        ws = self._workspace(nfft, n_blocks)
        buf, c = ws["in64"], ws["chunk"]
        for b0 in range(0, n_blocks, c):
            nb = min(c, n_blocks - b0)
            seg = x[b0 * hop: b0 * hop + (nb - 1) * hop + nfft]
            buf[: len(seg)] = seg
            buf[len(seg):] = 0.0  # zero padding past the end of the signal
            frames = np.lib.stride_tricks.sliding_window_view(buf, nfft)[::hop][:nb]  # a view
            ws["xs"][b0: b0 + nb] = _fft_out(np.fft.rfft, frames, ws["x128"][:nb], axis=-1)  # rounded to complex64
        return ws, n_blocks, n_out

    def _band_abs(self, ws: dict[str, Any], i: int, n_blocks: int) -> np.ndarray:
        """``|x ⋆ h_i|`` over the loaded signal, flat ``[n_blocks * hop]`` (scratch: use at once)."""
        nfft, c = ws["nfft"], ws["chunk"]
        hop = ws["hop"]
        out = ws["abs"][:n_blocks]
        spec = ws["spec"][i][None, :]
        for b0 in range(0, n_blocks, c):
            nb = min(c, n_blocks - b0)
            prod = np.multiply(ws["xs"][b0: b0 + nb], spec, out=ws["prod"][:nb])
            ys = _fft_out(np.fft.irfft, prod, ws["ys"][:nb], n=nfft, axis=-1)
            np.abs(ys[:, :hop], out=out[b0: b0 + nb])
        return out.reshape(-1)

    def _pool_into(self, a: np.ndarray, offset: int, row: np.ndarray) -> None:
        """``row[j] = max(a[offset + p*j : offset + p*(j+1)])`` (floor-mode max-pool, ``p`` = pool)."""
        p = int(self.spec.pool)
        n_pool = row.shape[0]
        v = a[offset: offset + n_pool * p].reshape(n_pool, p)
        if p == 1:
            np.copyto(row, v[:, 0])
            return
        if p > 40:  # very wide pools (coarse-time AASIST variant, pool 81): one reduction beats p - 1 passes
            np.max(v, axis=1, out=row)  # (one-off measurement here per band: p = 81 0.04 ms against 0.09 ms;
            return                      #  at p = 27 the reduction lost, 0.12 ms against 0.055 ms)
        np.maximum(v[:, 0], v[:, 1], out=row)
        for j in range(2, p):  # strided maxima: much faster than a reduction over a length-3 axis
            np.maximum(row, v[:, j], out=row)

    def filtered(self, window: np.ndarray) -> np.ndarray:
        """Valid cross-correlation of one 1-D window with every filter: ``[filters, len - taps + 1]``."""
        x = np.ascontiguousarray(window, dtype=np.float32)
        ws, n_blocks, n_out = self._load(x, self._fft_size(len(x)))
        out = np.empty((ws["spec"].shape[0], n_out), dtype=np.float32)
        nfft, hop, c = ws["nfft"], ws["hop"], ws["chunk"]
        for i in range(out.shape[0]):
            for b0 in range(0, n_blocks, c):
                nb = min(c, n_blocks - b0)
                prod = np.multiply(ws["xs"][b0: b0 + nb], ws["spec"][i][None, :], out=ws["prod"][:nb])
                ys = _fft_out(np.fft.irfft, prod, ws["ys"][:nb], n=nfft, axis=-1)[:, :hop].reshape(-1)
                lo = b0 * hop
                out[i, lo: min(n_out, lo + nb * hop)] = ys[: max(0, min(n_out, lo + nb * hop) - lo)]
        return out

    def _check_out(self, out: Optional[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
        if out is None:
            return np.empty(shape, dtype=np.float32)
        if out.shape != shape or out.dtype != np.float32:
            raise ValueError(f"out must be float32 {shape}, got {out.dtype} {out.shape}")
        return out

    def features_one(self, window: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """``max_pool(|filtered|, pool)`` (floor mode) for one window: ``[filters, pooled]``.

        ``out`` (float32, that shape) receives the result in place: the batch call writes
        straight into its output instead of copying each window's features once more.
        """
        x = np.ascontiguousarray(window, dtype=np.float32)
        out = self._check_out(out, self.spec.output_shape(len(x)))
        ws, n_blocks, _ = self._load(x, self._fft_size(len(x)))
        for i in range(out.shape[0]):
            self._pool_into(self._band_abs(ws, i, n_blocks), 0, out[i])
        return out

    def features_windows(self, signal: np.ndarray, starts: Sequence[int], window: int,
                         out: Optional[np.ndarray] = None) -> np.ndarray:
        """Features of the windows ``signal[s : s + window]`` for ``s`` in ``starts``: ``[n, filters, pooled]``.

        Equal to ``self(np.stack([signal[s:s + window] for s in starts]))`` up to float32
        rounding (the cross-correlation at each output sample uses the same ``taps`` input
        samples; only the FFT block boundaries differ). When the windows overlap (their
        span is shorter than their total length) the span is filtered once and each
        window max-pools its own slice of it; otherwise each window is filtered alone.
        Scratch memory grows with the span: callers bound it by passing a batch of windows
        at a time. Raises ValueError for a window outside the signal.
        """
        x = np.asarray(signal, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"expected a 1-D signal, got shape {x.shape}")
        st = [int(s) for s in starts]
        f, n_pool = self.spec.output_shape(window)
        out = self._check_out(out, (len(st), f, n_pool))
        if not st:
            return out
        if min(st) < 0 or max(st) + window > len(x):
            raise ValueError(f"window starts {min(st)}..{max(st)} (+{window}) fall outside a {len(x)}-sample signal")
        lo, hi = min(st), max(st) + window
        if len(st) == 1 or hi - lo >= len(st) * window:
            for w, s in enumerate(st):
                self.features_one(x[s: s + window], out=out[w])
            return out
        ws, n_blocks, _ = self._load(np.ascontiguousarray(x[lo:hi]), self._fft_size(window))
        for i in range(f):
            a = self._band_abs(ws, i, n_blocks)
            for w, s in enumerate(st):
                self._pool_into(a, s - lo, out[w, i])
        return out

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2:
            raise ValueError(f"expected [n, samples] windows, got shape {x.shape}")
        f, p = self.spec.output_shape(x.shape[1])
        out = np.empty((x.shape[0], f, p), dtype=np.float32)
        for i in range(x.shape[0]):
            self.features_one(x[i], out=out[i])
        return out


def make_frontend(entry: Any) -> Optional[SincFFTFrontEnd]:
    """The front end a manifest asks for (None when the graph takes the waveform itself)."""
    spec = FrontEndSpec.from_manifest(entry)
    return None if spec is None else SincFFTFrontEnd(spec)
