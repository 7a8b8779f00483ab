"""Per-operator profile of an AASIST / AASIST-L ONNX graph in onnxruntime (one thread).

Exports the checkpoint's whole-model graph (``waveform`` → official score, TorchScript
exporter, as the project's export does) to a temporary folder, runs it with onnxruntime
profiling on (graph level 'all', one intra-op thread, sequential execution), and sums
each node's kernel time over the timed runs. Reports per operator type and the heaviest
nodes, with the share of the total kernel time, and the encoder's output shape after
each residual block (where the time goes: the first blocks run on a 23 × 21 490 map).

    python benchmarks/aasist_profile.py ../shared/models/aasist/AASIST-L.pth \
        --out benchmarks/results/aasist/profile_aasist-l_fp32.json [--runs 10] [--warmup 3]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # before numpy/torch load
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_detector.benchmarking.environment import capture_environment  # noqa: E402


def export_graph(checkpoint: str, path: Path) -> Any:
    """Write the whole-model score graph of ``checkpoint``; returns the PyTorch model."""
    import torch

    from export.aasist import load_aasist
    from export.aasist_export import AASISTScore
    from export.onnx_export import export_onnx

    torch.set_num_threads(1)
    model, _ = load_aasist(checkpoint)
    export_onnx(AASISTScore(model), path, window=model.config.window)
    return model


def profile(onnx_path: Path, window: np.ndarray, warmup: int, runs: int, prefix: str) -> list[dict[str, Any]]:
    """Kernel-time events of ``runs`` timed runs (the warm-up runs are dropped)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_profiling = True
    so.profile_file_prefix = prefix
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for _ in range(warmup + runs):
        sess.run(None, {name: window})
    trace = Path(sess.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    runs_ev = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    if len(runs_ev) != warmup + runs:
        raise RuntimeError(f"expected {warmup + runs} model_run events, got {len(runs_ev)}")
    start = runs_ev[warmup]["ts"]
    nodes = [e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")
             and e["ts"] >= start]
    return nodes + [e for e in runs_ev[warmup:]]


def summarise(events: list[dict[str, Any]], runs: int) -> dict[str, Any]:
    by_type: dict[str, float] = defaultdict(float)
    by_node: dict[str, list[Any]] = {}
    run_ms = [e["dur"] / 1000.0 for e in events if e.get("cat") == "Session"]
    for e in events:
        if e.get("cat") != "Node":
            continue
        op = e["args"].get("op_name", "?")
        by_type[op] += e["dur"]
        node = e["name"][: -len("_kernel_time")]
        entry = by_node.setdefault(node, [op, 0.0, e["args"].get("output_type_shape")])
        entry[1] += e["dur"]
    total = sum(by_type.values())
    per_type = [{"op": k, "ms_per_run": v / runs / 1000.0, "share": v / total}
                for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])]
    per_node = [{"node": k, "op": v[0], "ms_per_run": v[1] / runs / 1000.0, "share": v[1] / total,
                 "output": v[2]} for k, v in sorted(by_node.items(), key=lambda kv: -kv[1][1])]
    return {"kernel_ms_per_run": total / runs / 1000.0, "run_ms_median": float(np.median(run_ms)),
            "by_op_type": per_type, "top_nodes": per_node[:20], "n_nodes": len(per_node)}


def encoder_shapes(model: Any, window: np.ndarray) -> list[list[int]]:
    import torch

    with torch.no_grad():
        x = model.front(torch.from_numpy(window))
        shapes = [list(x.shape)]
        x = torch.nn.functional.selu(model.first_bn(x))
        for block in model.encoder:
            x = block(x)
            shapes.append(list(x.shape))
    return shapes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    window = (0.1 * rng.standard_normal((1, 64600))).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        model = export_graph(args.checkpoint, path)
        events = profile(path, window, args.warmup, args.runs, str(Path(tmp) / "prof"))
    report = {
        "what": f"onnxruntime per-operator kernel time, {model.config.name} fp32 whole graph, 1 thread, graph level all",
        "command": "python " + " ".join([str(Path(sys.argv[0]))] + (argv if argv is not None else sys.argv[1:])),
        "model": model.config.name, "runs": args.runs, "warmup": args.warmup,
        "encoder_shapes": {"front (pooled sinc map)": encoder_shapes(model, window)[0],
                           "after blocks 0-5": encoder_shapes(model, window)[1:]},
        **summarise(events, args.runs),
        "environment": capture_environment(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    for row in report["by_op_type"][:10]:
        print(f"{row['op']:>24s} {row['ms_per_run']:8.2f} ms  {100 * row['share']:5.1f} %")
    print(f"kernel total {report['kernel_ms_per_run']:.1f} ms/run; model_run median {report['run_ms_median']:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
