"""AASIST-L edge variants: speed per window (one thread) and fidelity to the official model.

Variants (all built here from one checkpoint, every one checked against PyTorch first):

- ``official``: the whole model as one ONNX graph (sinc convolution, ``Selu``), as the
  TorchScript exporter writes it: the reference for speed and for fidelity.
- ``graph-selu``: the same graph with every encoder SELU written as Relu + Exp
  (:func:`export.fold.selu_vectorised`, the same function).
- ``fft``: the sinc stage in numpy (FFT overlap-save, |x|, max-pool over time; 69 of the 70
  bands — the 70th never reaches the output) and the rest in ONNX (``Selu`` op).
- ``fft-selu``: both exact rewrites.
- ``fft-selu-lrR``: ``fft-selu`` with block 0's second and block 1's two convolutions
  replaced by a rank-R factorisation fitted to their outputs on the calibration windows
  (:func:`low_rank`; approximate, no training).
- ``fft-selu-int8``: ``fft-selu`` with static int8 QDQ (per-channel S8S8 on the convolutions,
  the project's :class:`quantize.static_int8.Quantizer`), calibrated on ``--calibration``
  dev windows that are not in the fidelity subset.

Speed: median of warmed runs on one window, one intra-op thread, graph level 'all', all
variants timed in alternating blocks (``time_interleaved``), each through the device path
(:class:`edge_detector.detector.WindowScorer`, numpy front end included).
Fidelity: the first ``--count`` entries of ``balanced_order(protocol, --seed)`` (bona fide and
spoof interleaved after a seeded shuffle), first 4.04 s window; Spearman of scores against
``official``, decision agreement at the official model's EER threshold on this subset (both
models' scores against that one threshold), agreement at each model's own EER threshold,
EER. Scores are the official ``logit[1]``.

    nice -n 15 python benchmarks/aasist_edge.py ../shared/models/aasist/AASIST-L.pth \
        --protocol ../shared/data/dev/protocol.txt --audio-dir ../shared/data/dev \
        --out benchmarks/results/aasist/edge_aasist-l.json
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # before numpy/torch load
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_detector.benchmarking.environment import capture_environment  # noqa: E402
from edge_detector.benchmarking.latency import time_interleaved  # noqa: E402
from edge_detector.benchmarking.stats import latency_summary, spearman  # noqa: E402
from edge_detector.detector import WindowScorer  # noqa: E402
from edge_detector.metrics import compute_eer  # noqa: E402
from edge_detector.protocol import read_protocol  # noqa: E402
from edge_detector.session import SessionSettings, make_session  # noqa: E402

WINDOW = 64600
#: Variants scored on the whole subset; the other exact ones are checked by parity only (CPU budget).
FIDELITY = ["official", "fft-selu", "fft-selu-int8"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_variants(checkpoint: str, work: Path) -> tuple[Any, dict[str, tuple[Path, Any]]]:
    """fp32 ONNX files of every exact variant: name → (path, front-end spec or None)."""
    import torch

    from export.aasist import load_aasist
    from export.aasist_export import AASISTBody, AASISTScore, frontend_spec_for
    from export.fold import selu_vectorised
    from export.onnx_export import export_onnx

    model, _ = load_aasist(checkpoint)
    fast = copy.deepcopy(model).use_selu(selu_vectorised)
    spec = frontend_spec_for(model)
    shape = spec.output_shape(WINDOW)
    out = {}
    for name, module, fe in (("official", AASISTScore(model), None), ("graph-selu", AASISTScore(fast), None),
                             ("fft", AASISTBody(model), spec), ("fft-selu", AASISTBody(fast), spec)):
        path = work / f"{name}.onnx"
        if fe is None:
            export_onnx(module, path, window=WINDOW)
        else:
            export_onnx(module, path, input_name="features", input_shape=shape)
        out[name] = (path, fe)
    torch.set_num_threads(1)
    return model, out


def scorer(path: Path, spec: Any, threads: int = 1) -> WindowScorer:
    sess = make_session(path, SessionSettings(intra_op_threads=threads, graph_optimization_level="all"))
    return WindowScorer(sess, "features" if spec is not None else "waveform", "score", spec, max_batch=1,
                        where=str(path))


def quantize_variant(src: Path, spec: Any, calib: np.ndarray, work: Path) -> Path:
    """Static int8 QDQ of ``src`` calibrated on the front-end features of ``calib`` windows."""
    from onnxruntime.quantization import quant_pre_process

    from quantize.static_int8 import FeatureReader, QuantOptions, Quantizer

    pre = work / "pre.onnx"
    quant_pre_process(str(src), str(pre))
    feats = scorer(src, spec).model_inputs(calib)
    class Options(QuantOptions):  # keep the calibrator's memory to one batch of AASIST's large maps
        def extra_options(self) -> dict[str, Any]:
            # flush the ranges every 2 windows (ORT refuses a count that divides the windows exactly)
            return {**super().extra_options(), "CalibMaxIntermediateOutputs": 2 if len(calib) % 2 else 3}

    # Conv only: the graph-attention MatMuls multiply two activations (pair products, attention
    # weights at temperature 100), where 8-bit activations cost more fidelity than they save time
    q = Quantizer(pre, work, FeatureReader("features", feats, batch_size=1), Options(op_types=("Conv",)))
    return q.quantize(work / "fft-selu-int8.onnx", exclude_nodes=[])


LOW_RANK_LAYERS = (("encoder.0.0", "conv2"), ("encoder.1.0", "conv1"), ("encoder.1.0", "conv2"))


def low_rank(model: Any, calib: np.ndarray, rank: int) -> Any:
    """A copy of ``model`` whose widest convolutions (:data:`LOW_RANK_LAYERS`: block 0's second and
    block 1's two, about 45 % of the one-thread time) are replaced by a rank-``rank`` factorisation
    fitted to their outputs on ``calib`` windows (no training): with ``U`` the top principal
    directions of the output channels (mean ``mu``), ``y ≈ mu + U Uᵀ (W*x + b - mu)``, i.e. a
    convolution to ``rank`` channels followed by a 1×1 convolution back (cost ``rank/C`` of the
    original plus the 1×1). Approximate: the point is the speed/fidelity trade-off.
    """
    import torch
    from torch import nn

    m = copy.deepcopy(model)
    convs = {f"{b}.{c}": getattr(m.get_submodule(b), c) for b, c in LOW_RANK_LAYERS}
    stats: dict[str, list[Any]] = {}

    def hook(name: str) -> Callable[..., None]:
        def collect(_mod: Any, _inp: Any, out: "torch.Tensor") -> None:
            y = out.detach().transpose(0, 1).reshape(out.shape[1], -1).double()
            s = stats.setdefault(name, [0, 0.0, 0.0])
            s[0] += y.shape[1]
            s[1] = s[1] + y.sum(1)
            s[2] = s[2] + y @ y.T
        return collect

    handles = [conv.register_forward_hook(hook(name)) for name, conv in convs.items()]
    with torch.no_grad():
        for row in calib:
            model_out = m(torch.from_numpy(row[None]))  # noqa: F841 (the hooks collect)
    for h in handles:
        h.remove()
    for (block, attr), (name, conv) in zip(LOW_RANK_LAYERS, convs.items()):
        n, s1, s2 = stats[name]
        mu = s1 / n
        _, vecs = torch.linalg.eigh(s2 / n - torch.outer(mu, mu))
        u = vecs[:, -rank:]  # [C, r], top directions
        w, b = conv.weight.detach().double(), conv.bias.detach().double()
        first = nn.Conv2d(conv.in_channels, rank, conv.kernel_size, padding=conv.padding)
        second = nn.Conv2d(rank, conv.out_channels, 1)
        with torch.no_grad():
            first.weight.copy_(torch.einsum("cr,cikl->rikl", u, w).float())
            first.bias.copy_((u.T @ (b - mu)).float())
            second.weight.copy_(u[:, :, None, None].float())
            second.bias.copy_(mu.float())
        setattr(m.get_submodule(block), attr, nn.Sequential(first, second))
    return m.eval()


def decision_threshold(official: np.ndarray, eer_threshold: float) -> float:
    """The official EER threshold moved halfway to the next official score above it.

    The EER threshold is one of the official scores ("accept iff score > threshold"), so an
    exact rewrite that differs by 1e-6 would flip that file's decision; the midpoint gives the
    official model the same decisions and leaves a margin on both sides.
    """
    above = official[official > eer_threshold]
    return float((eer_threshold + above.min()) / 2) if above.size else float(eer_threshold)


def fidelity(official: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    bona, spoof = labels == 1, labels == 0
    eer_o, thr_o = compute_eer(official[bona], official[spoof])
    eer_v, thr_v = compute_eer(scores[bona], scores[spoof])
    thr = decision_threshold(official, thr_o)
    return {"spearman": spearman(official, scores), "eer": eer_v,
            "agreement_at_official_eer_threshold": float(np.mean((official > thr) == (scores > thr))),
            "agreement_at_own_eer_thresholds": float(np.mean((official > thr) == (scores > decision_threshold(scores, thr_v)))),
            "official_eer_threshold": thr, "max_abs_diff": float(np.max(np.abs(scores - official)))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--protocol", required=True)
    ap.add_argument("--audio-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=120, help="fidelity subset size")
    ap.add_argument("--calibration", type=int, default=9, help="int8 calibration windows (outside the subset)")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--ranks", type=lambda v: [int(r) for r in v.split(",") if r], default=[16, 8],
                    help="low-rank variants (comma-separated ranks; empty for none)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args(argv)
    from quantize.static_int8 import balanced_order, load_set

    order = balanced_order(read_protocol(args.protocol), args.seed)
    subset = load_set(order, args.audio_dir, args.count, 16000, WINDOW, 600.0, log)
    calib = load_set(order, args.audio_dir, args.calibration, 16000, WINDOW, 600.0, log,
                     exclude_ids=frozenset(subset.file_ids))
    log(f"fidelity subset: {len(subset.file_ids)} files ({int(subset.labels.sum())} bona fide); "
        f"calibration: {len(calib.file_ids)}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, files = build_variants(args.checkpoint, work)
        spec = files["fft-selu"][1]
        files["fft-selu-int8"] = (quantize_variant(files["fft-selu"][0], spec, calib.windows, work), spec)
        from export.aasist_export import AASISTBody
        from export.fold import selu_vectorised
        from export.onnx_export import export_onnx

        for rank in args.ranks:
            approx = low_rank(model, calib.windows, rank).use_selu(selu_vectorised)
            name = f"fft-selu-lr{rank}"
            export_onnx(AASISTBody(approx), work / f"{name}.onnx", input_name="features",
                        input_shape=spec.output_shape(WINDOW))
            files[name] = (work / f"{name}.onnx", spec)
            FIDELITY.append(name)
        scorers = {name: scorer(path, fe) for name, (path, fe) in files.items()}
        sizes = {name: path.stat().st_size for name, (path, _) in files.items()}
        # parity of each exact variant with PyTorch on a few subset windows
        import torch

        with torch.no_grad():
            ref = model(torch.from_numpy(subset.windows[:4]))[:, 1].numpy()
        parity = {name: float(np.max(np.abs(s.score(subset.windows[:4]) - ref))) for name, s in scorers.items()}
        log(f"max |score - PyTorch| on 4 windows: {parity}")
        scores = {}
        for name in FIDELITY:
            log(f"scoring {len(subset.file_ids)} windows with {name}")
            scores[name] = scorers[name].score(subset.windows)
        one = subset.windows[:1]
        fns: dict[str, Callable[[], Any]] = {name: (lambda s=s: s.score(one)) for name, s in scorers.items()}
        times = time_interleaved(fns, warmup=args.warmup, runs=args.runs, block=5, label="latency")
    official_ms = float(np.median(times["official"]))
    variants = {}
    for name in files:
        lat = latency_summary(times[name], WINDOW / 16000.0)
        variants[name] = {"onnx_bytes": sizes[name], "parity_vs_pytorch": parity[name], "latency_ms": lat,
                          "speedup_vs_official": official_ms / float(np.median(times[name]))}
        if name in scores:
            variants[name].update(fidelity(scores["official"], scores[name], subset.labels))
    report = {
        "what": f"{model.config.name} edge variants: one-thread latency per 4.04 s window and fidelity to the official model",
        "command": "nice -n 15 python " + " ".join([str(Path(sys.argv[0]))] + (argv if argv is not None else sys.argv[1:])),
        "subset_rule": f"first {args.count} decodable entries of quantize.static_int8.balanced_order(protocol, seed={args.seed})",
        "calibration_rule": f"next {args.calibration} decodable entries of the same order, none in the subset",
        "n_files": len(subset.file_ids), "n_bonafide": int(subset.labels.sum()),
        "threads": 1, "graph_optimization_level": "all", "runs": args.runs, "warmup": args.warmup,
        "variants": variants, "environment": capture_environment(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    for name, v in variants.items():
        fid = (f"spearman {v['spearman']:.4f}  agree {100 * v['agreement_at_official_eer_threshold']:.1f} %  "
               f"EER {100 * v['eer']:.2f} %" if "spearman" in v else "(parity only)")
        print(f"{name:>16s} p50 {v['latency_ms']['p50_ms']:7.1f} ms  x{v['speedup_vs_official']:.2f}  {fid}  "
              f"parity {v['parity_vs_pytorch']:.2g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
