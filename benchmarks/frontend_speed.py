"""Sinc front end per window: numpy FFT (the device path) vs direct 1025-tap convolution.

Measures, on one thread and one 64 600-sample window, the stage a numpy-fft bundle moves
out of the graph: sinc filtering + |x| + max-pool 3. Compared implementations:

- ``numpy_fft``: :class:`edge_detector.frontend.SincFFTFrontEnd` (overlap-save, FFT size
  chosen by the runtime), the same with the plain power-of-two block (``numpy_fft_8192``)
  and with one whole-window FFT (``numpy_fft_65536``);
- ``torch_conv1d``: ``F.conv1d`` + abs + ``F.max_pool1d`` (what the PyTorch model runs);
- ``ort_conv``: the same three ops as a one-Conv ONNX graph in onnxruntime (what a
  ``--frontend graph`` bundle runs for this stage), graph level 'all'.

Median (and p90) of warmed runs, all implementations timed in alternating blocks (so
machine drift hits each alike); every implementation is also checked against the
float64 direct convolution. Writes ``benchmarks/results/frontend_speed.json``.

    python benchmarks/frontend_speed.py [--filters 20] [--runs 30] [--warmup 5] [--out PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # before numpy/torch load
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_detector.benchmarking.environment import capture_environment  # noqa: E402
from edge_detector.benchmarking.latency import time_interleaved  # noqa: E402
from edge_detector.benchmarking.stats import latency_summary  # noqa: E402
from edge_detector.frontend import FrontEndSpec, SincFFTFrontEnd, choose_fft_size  # noqa: E402

WINDOW = 64600
SECONDS = WINDOW / 16000.0


def ort_frontend_session(bank: np.ndarray, path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A minimal ONNX graph Conv(1025 taps) → Abs → MaxPool(3), run on 1 thread."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ascontiguousarray(bank[:, None, :], dtype=np.float32), "sinc")
    nodes = [
        helper.make_node("Unsqueeze", ["x", "axes"], ["x3"]),
        helper.make_node("Conv", ["x3", "sinc"], ["y"]),
        helper.make_node("Abs", ["y"], ["a"]),
        helper.make_node("MaxPool", ["a"], ["out"], kernel_shape=[3], strides=[3]),
    ]
    graph = helper.make_graph(
        nodes, "sinc_frontend", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WINDOW])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        initializer=[w, numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(["out"], {"x": x})[0]


def reference64(x: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """float64 direct convolution + abs + pool, via numpy (slow; once)."""
    k = bank.shape[1]
    n_out = x.shape[1] - k + 1
    frames = np.lib.stride_tricks.sliding_window_view(x[0].astype(np.float64), k)[:n_out]
    y = frames @ bank.astype(np.float64).T  # [n_out, filters]
    p = n_out // 3
    return np.abs(y[: 3 * p]).reshape(p, 3, -1).max(axis=1).T[None]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--filters", type=int, default=20)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "frontend_speed.json"))
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    sys.path.insert(0, str(ROOT / "tests"))
    from audio_synth import speechlike  # a speech-like window (values matter only for the error check)

    x = speechlike(SECONDS + 0.1, seed=0)[None, :WINDOW].astype(np.float32)
    x += (0.001 * rng.standard_normal(x.shape)).astype(np.float32)
    spec = FrontEndSpec(filters=args.filters)
    fe = SincFFTFrontEnd(spec)
    fe_pow2 = SincFFTFrontEnd(spec, fft_size=8192)
    fe_big = SincFFTFrontEnd(spec, fft_size=65536)
    bank = np.array(fe.filters)
    ref = reference64(x, bank)
    scale = float(np.abs(x).max())

    impls: dict[str, Callable[[], np.ndarray]] = {"numpy_fft": lambda: fe(x), "numpy_fft_8192": lambda: fe_pow2(x),
                                                  "numpy_fft_65536": lambda: fe_big(x)}
    notes: dict[str, str] = {
        "numpy_fft": f"overlap-save, FFT size {choose_fft_size(WINDOW, spec.taps)} (runtime default)",
        "numpy_fft_8192": "overlap-save, FFT size 8192 (the power-of-two block)",
        "numpy_fft_65536": "one 65536-point FFT per window",
    }
    try:
        import torch
        import torch.nn.functional as F

        torch.set_num_threads(1)
        xt = torch.from_numpy(x)[:, None, :]
        bt = torch.from_numpy(bank.copy())[:, None, :]

        def torch_direct() -> np.ndarray:
            with torch.no_grad():
                return F.max_pool1d(torch.abs(F.conv1d(xt, bt)), 3).numpy()

        impls["torch_conv1d"] = torch_direct
        notes["torch_conv1d"] = f"torch {torch.__version__} F.conv1d + abs + max_pool1d, 1 thread"
    except ModuleNotFoundError:
        pass
    tmp = Path(tempfile.mkdtemp())
    try:
        run_ort = ort_frontend_session(bank, tmp / "sinc.onnx")
        impls["ort_conv"] = lambda: run_ort(x)
        notes["ort_conv"] = "onnxruntime Conv + Abs + MaxPool, 1 intra-op thread, graph level all"
    except ModuleNotFoundError:
        pass

    results: dict[str, Any] = {}
    timings = time_interleaved(impls, args.warmup, args.runs)
    for name, fn in impls.items():
        out = fn()
        err = float(np.abs(out.astype(np.float64) - ref).max())
        samples = timings[name]
        results[name] = {"note": notes[name], "max_abs_error_vs_float64_direct": err,
                         "max_abs_error_relative_to_signal_peak": err / scale,
                         **latency_summary(samples, SECONDS)}
        print(f"{name:18s} p50 {results[name]['p50_ms']:8.2f} ms  p90 {results[name]['p90_ms']:8.2f} ms  "
              f"max err {err:.2e}", file=sys.stderr)
    base = results.get("torch_conv1d") or results.get("ort_conv")
    if base:
        for r in results.values():
            r["speedup_vs_direct_p50"] = base["p50_ms"] / r["p50_ms"]
    report = {
        "benchmark": "sinc front end per window (filtering + abs + max-pool 3)",
        "command": "python benchmarks/frontend_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "window_samples": WINDOW, "filters": spec.filters, "taps": spec.taps, "threads": 1,
        "warmup": args.warmup, "runs": args.runs,
        "speedup_baseline": "torch_conv1d" if "torch_conv1d" in results else "ort_conv",
        "results": results,
        "environment": capture_environment(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
