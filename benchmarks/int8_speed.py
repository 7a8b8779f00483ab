"""Can int8 pay for this model on this CPU? Graph and whole-window timing of int8 variants vs fp32.

The first int8 sibling (QDQ on every Conv/MatMul/Gemm of a MatMul-GRU export) was slower
than fp32 here (0.85x per window) although the CPU has AVX-512 VNNI. This script measures,
on one thread and one window:

- ``fp32``: the fp32 bundle's graph (ONNX GRU op);
- ``int8_shipped``: the int8 sibling as ``benchmarks/export_edge_variant.sh`` builds it
  (``edge-detect quantize --op-types Conv --min-conv-channels 16 --gru-weights int8``):
  convolutions with >= 16 input channels int8, the GRU one fp32 op reading int8 weights;
- ``int8_conv_all``: every Conv quantized (QDQ, per-channel S8S8, one Q/DQ pair per
  quantized node as the quantize path makes them), the GRU fp32: shows what the 8-channel
  stage-1 convolutions cost as int8;
- ``int8_conv_wide``: only the convolutions with at least ``--min-channels`` input channels
  quantized, GRU weights fp32 (the shipped recipe without the int8 GRU storage).

The ``int8_conv*`` variants exist only to be timed: they are calibrated on synthetic
speech-like windows (activation ranges do not change the speed), never shipped. Times:
``graph`` = ``session.run`` on precomputed features; ``window`` = numpy front end +
graph for one window (``WindowScorer.score``). All variants are timed in alternating
blocks (:func:`edge_detector.benchmarking.latency.time_interleaved`), in CPU time of this
process by default (``--clock cpu``: robust on a shared machine); per-operator
figures come from onnxruntime's profiler. ``amdahl`` bounds any int8 variant: the
window time if every Conv (and the GRU) cost nothing.

    python benchmarks/int8_speed.py [--fp32 BUNDLE] [--int8 BUNDLE] [--runs 200] [--out PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import profile_path  # noqa: E402,F401  (first: keeps the caller's environment for children, then 1 BLAS thread)
import numpy as np  # noqa: E402

from edge_detector.benchmarking.environment import benchmark_command, capture_environment  # noqa: E402
from edge_detector.benchmarking.latency import time_interleaved  # noqa: E402
from edge_detector.bundle import load_bundle  # noqa: E402
from edge_detector.defaults import DEFAULT_BUNDLE_DIR  # noqa: E402
from edge_detector.demo_audio import synthesize_vowels  # noqa: E402
from edge_detector.detector import WindowScorer  # noqa: E402
from edge_detector.session import SessionSettings, make_session  # noqa: E402
from profile_path import CLOCKS, onnx_op_profile, pin_to_cpu  # noqa: E402


def calibration_features(scorer: WindowScorer, window: int, n: int = 8) -> np.ndarray:
    """Front-end features of ``n`` synthetic speech-like windows (for ranges only)."""
    wins = np.stack([np.resize(synthesize_vowels(4.5, seed=s), window) for s in range(n)]).astype(np.float32)
    return scorer.model_inputs(wins)


def quantize_convs(fp32_onnx: Path, out: Path, feats: np.ndarray, input_name: str, per_channel: bool,
                   min_channels: int = 0) -> Path:
    """QDQ int8 of the Conv nodes only (S8S8; per-channel or per-tensor weights), each quantized
    node with its own Q/DQ pair (:func:`quantize.qdq_graph.dedicate_qdq`, as the quantize path does)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from quantize.qdq_graph import dedicate_qdq

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32_onnx), str(pre), skip_symbolic_shape=True)
    model = onnx.load(str(pre))
    shapes = {i.name: i for i in model.graph.initializer}
    exclude = []
    for node in model.graph.node:
        if node.op_type == "Conv" and min_channels:
            w = shapes.get(node.input[1])
            if w is not None and w.dims[1] < min_channels:
                exclude.append(node.name)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{input_name: feats[i: i + 1]} for i in range(len(feats))])

        def get_next(self) -> Optional[dict[str, np.ndarray]]:
            return next(self.items, None)

    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                    per_channel=per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=exclude, extra_options={"WeightSymmetric": True})
    qmodel = onnx.load(str(out))
    dedicate_qdq(qmodel, ("Conv",))
    onnx.save(qmodel, str(out))
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fp32", default=str(DEFAULT_BUNDLE_DIR))
    ap.add_argument("--int8", default=None, help="The shipped-style int8 bundle (default: <fp32>-int8 if present).")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--min-channels", type=int, default=16)
    ap.add_argument("--cpu", type=int, default=-1, help="CPU to pin to (-1: no pinning).")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                    help="cpu: this process's CPU time (robust on a shared machine); wall: elapsed time.")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "int8_speed.json"))
    args = ap.parse_args(argv)
    cpus = pin_to_cpu(None if args.cpu < 0 else args.cpu)

    fp32 = load_bundle(args.fp32)
    int8_dir = args.int8 or str(Path(args.fp32).with_name(Path(args.fp32).name + "-int8"))
    int8 = load_bundle(int8_dir) if (Path(int8_dir) / "manifest.json").is_file() else None
    settings = SessionSettings(intra_op_threads=1, inter_op_threads=1)
    name = fp32.manifest["onnx"]["input"]

    def scorer(path: Path) -> WindowScorer:
        return WindowScorer(make_session(path, settings), name, "score", fp32.frontend, max_batch=1, where=str(path))

    base = scorer(fp32.model_path)
    window = fp32.window_rule.window
    feats = calibration_features(base, window)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        paths = {"fp32": fp32.model_path,
                 "int8_conv_all": quantize_convs(fp32.model_path, t / "conv.onnx", feats, name, True),
                 "int8_conv_wide": quantize_convs(fp32.model_path, t / "conv_wide.onnx", feats, name, True,
                                                  args.min_channels)}
        if int8 is not None:
            paths["int8_shipped"] = int8.model_path
        scorers = {k: scorer(p) for k, p in paths.items()}
        one = feats[:1]
        x = np.resize(synthesize_vowels(4.5, seed=99), (1, window)).astype(np.float32)
        calls = {}
        for k, s in scorers.items():
            calls[f"graph:{k}"] = (lambda s=s: s.run_inputs(one))
            calls[f"window:{k}"] = (lambda s=s: s.score(x))
        calls["frontend"] = lambda: base.model_inputs(x)
        print(f"timing {len(calls)} calls x {args.runs} runs, interleaved", file=sys.stderr)
        samples = time_interleaved(calls, args.warmup, args.runs, clock=CLOCKS[args.clock])
        med = {k: float(np.median(v)) for k, v in samples.items()}
        ops = {}
        for k, p in paths.items():
            ops[k] = onnx_op_profile(str(p), name, one)
        model_bytes = {k: Path(p).stat().st_size for k, p in paths.items()}
    conv_us = sum(v["us"] for op, v in ops["fp32"]["per_op_type_us"].items() if "Conv" in op)
    gru_us = sum(v["us"] for op, v in ops["fp32"]["per_op_type_us"].items() if op in ("GRU", "Gemm", "FusedGemm"))
    frac = (conv_us + gru_us) / ops["fp32"]["kernel_sum_us"]
    bound_ms = med["window:fp32"] - frac * med["graph:fp32"]
    report = {
        "benchmark": "int8_speed",
        "command": benchmark_command("benchmarks/int8_speed.py", argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pinned_cpus": cpus, "nice": os.nice(0),
        "threads": 1, "runs": args.runs, "warmup": args.warmup, "clock": args.clock,
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "fp32_bundle": args.fp32, "int8_bundle": int8_dir if int8 is not None else None,
        "int8_recipe": None if int8 is None else {k: int8.manifest["quantization"].get(k) for k in (
            "op_types", "min_conv_channels", "fp32_for_speed_groups", "gru_weights", "runtime_kernels")},
        "model_bytes": model_bytes,
        "median_ms": med,
        "speedup_vs_fp32": {k.split(":", 1)[1] + " (" + k.split(":", 1)[0] + ")":
                            med[k.split(":", 1)[0] + ":fp32"] / v for k, v in med.items()
                            if ":" in k and not k.endswith(":fp32")},
        "amdahl": {"fp32_conv_and_gru_share_of_graph_kernels": frac,
                   "window_ms_if_conv_and_gru_were_free": bound_ms,
                   "best_possible_int8_speedup_per_window": med["window:fp32"] / bound_ms},
        "ort_ops": ops,
        "samples_ms": {k: [round(float(s), 4) for s in v] for k, v in samples.items()},
        "note": "int8_conv* variants are calibrated on synthetic windows and only timed, never shipped",
        "environment": capture_environment(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    for k, v in med.items():
        print(f"{k:32s} {v:7.3f} ms")
    for k, v in report["speedup_vs_fp32"].items():
        print(f"speed-up {k:32s} {v:5.2f}x")
    print(f"bound: conv+GRU {100 * frac:.0f}% of the fp32 graph; window {med['window:fp32']:.2f} ms -> "
          f">= {bound_ms:.2f} ms if they were free ({report['amdahl']['best_possible_int8_speedup_per_window']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
