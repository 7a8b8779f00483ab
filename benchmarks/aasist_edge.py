"""AASIST-L edge variants: CPU time per window (one thread) against fidelity to the official model.

Variants (all built here from one checkpoint; every ONNX file is first checked against the PyTorch
module it was exported from, ``parity_vs_own_pytorch``):

- ``official``: the whole model as one ONNX graph (sinc convolution, ``Selu``), as the
  TorchScript exporter writes it: the reference for speed and for fidelity.
- ``fft``: the sinc stage in numpy (below), the rest one ONNX graph with ``Selu`` ops (exact).
- ``fft-selu``: the exact rewrites: sinc stage in numpy (FFT overlap-save, |x|, max-pool over
  time; 69 of the 70 bands — the 70th never reaches the output) and every encoder SELU as
  Relu + Exp (:func:`export.fold.selu_vectorised`). What ``edge-detect export --frontend
  numpy-fft`` writes.
- approximate encoders on top of ``fft-selu`` (:mod:`aasist_variants`; no training unless a
  distilled checkpoint is given): ``lrR`` (blocks 0-1's widest convolutions at rank R, fitted to
  their outputs), ``pI`` / ``pIrR`` (blocks 0-1 pruned by L1 norm to I inner / R residual
  channels), ``ct1`` / ``ct2`` (block 0's / blocks 0-1's time pool moved in front of them: the
  numpy front end pools 9 / 27 in time), combinations (``ct2-p16r16``), and ``-int8`` (static
  int8 QDQ on the convolutions, per-channel S8S8, the project's
  :class:`quantize.static_int8.Quantizer`, calibrated on ``--calibration`` windows outside the
  fidelity subset). ``--latency-only`` variants are timed and parity-checked but not scored on
  the subset (exact ones have the official scores within their parity; CPU budget).

Speed: this process's CPU time (``--clock cpu``, default: on a shared machine time spent
waiting for a core does not count) per window, batch 1, one intra-op thread, graph level
'all', through the device path (:class:`edge_detector.detector.WindowScorer`, numpy front end
included), every variant timed in alternating blocks (``time_interleaved``) so drift hits all
alike; median of warmed runs, session creation excluded. ``numpy-frontend-*`` rows time the
numpy sinc stage alone (the floor under every ``fft-*`` variant).
Fidelity: the first ``--count`` decodable entries of ``balanced_order(protocol, --seed)`` (bona
fide and spoof interleaved after a seeded shuffle), first 4.04 s window; Spearman of scores
against ``official``, decision agreement at the official model's EER threshold on this subset
(both models' scores against that one threshold), agreement at each model's own EER threshold,
EER. Scores are the official ``logit[1]``. ``curve`` ranks the variants by speed-up and marks
the Pareto front (no other variant both faster and higher in Spearman).

    nice -n 15 python benchmarks/aasist_edge.py ../shared/models/aasist/AASIST-L.pth \
        --protocol DATA/protocol.txt --audio-dir DATA \
        --out benchmarks/results/aasist/edge_aasist-l.json

runs everything in one process. On a machine where a low-priority job gets a few per cent of a
core, the stages run apart with ``--work DIR`` (same other arguments): ``--stage build`` (ONNX
files, parity, ``DIR/build.json``; an existing ``DIR/NAME.onnx`` is reused), then
``--stage score --shard I/N`` for I = 0..N-1 (in parallel; ``DIR/scores_IofN.npz``) and
``--stage time`` (``DIR/latency.json``), then ``--stage report --out FILE``.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from edge_detector.benchmarking.environment import capture_environment  # noqa: E402
from edge_detector.benchmarking.latency import time_interleaved  # noqa: E402
from edge_detector.benchmarking.stats import latency_summary, spearman  # noqa: E402
from edge_detector.detector import WindowScorer  # noqa: E402
from edge_detector.metrics import compute_eer  # noqa: E402
from edge_detector.protocol import read_protocol  # noqa: E402
from edge_detector.session import SessionSettings, make_session  # noqa: E402
from profile_path import CLOCKS  # noqa: E402

WINDOW = 64600
#: Approximate variants (built by :func:`approximate`; ``-int8`` = static int8 on top).
DEFAULT_VARIANTS = "fft-selu-int8,lr16,p16r16,ct2,ct3,ct3-p16r16,ct3-p8r16,ct3-p8r16-int8"
#: Timed and parity-checked, but not scored on the subset by default (exact, or dominated).
DEFAULT_LATENCY_ONLY = "fft,fft-selu,fft-selu-int8"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def scorer(path: Path, spec: Any, threads: int = 1) -> WindowScorer:
    sess = make_session(path, SessionSettings(intra_op_threads=threads, graph_optimization_level="all"))
    return WindowScorer(sess, "features" if spec is not None else "waveform", "score", spec, max_batch=1,
                        where=str(path))


def quantize_variant(src: Path, spec: Any, calib: np.ndarray, out: Path) -> Path:
    """Static int8 QDQ of ``src`` (Conv only) calibrated on the front-end features of ``calib`` windows."""
    from onnxruntime.quantization import quant_pre_process

    from quantize.static_int8 import FeatureReader, QuantOptions, Quantizer

    work = out.parent / (out.stem + "-work")
    work.mkdir()
    pre = work / "pre.onnx"
    quant_pre_process(str(src), str(pre))
    feats = scorer(src, spec).model_inputs(calib)

    class Options(QuantOptions):  # keep the calibrator's memory to a few of AASIST's large maps
        def extra_options(self) -> dict[str, Any]:
            # flush the ranges every 2 windows (ORT refuses a count that divides the windows exactly)
            return {**super().extra_options(), "CalibMaxIntermediateOutputs": 2 if len(calib) % 2 else 3}

    # Conv only: the graph-attention MatMuls multiply two activations (pair products, attention
    # weights at temperature 100), where 8-bit activations cost more fidelity than they save time
    q = Quantizer(pre, work, FeatureReader("features", feats, batch_size=1), Options(op_types=("Conv",)))
    return q.quantize(out, exclude_nodes=[])


def approximate(fast: Any, name: str, calib: np.ndarray) -> tuple[Any, int]:
    """The torch model of an approximate variant ``name`` (dash-separated steps applied in the
    order ``p…`` / ``lr…`` then ``ct…``) and the numpy front end's time pool it needs."""
    from aasist_variants import coarse_time, low_rank, prune_channels

    model, pool = fast, 3
    steps = name.split("-")
    for step in steps:
        if step.startswith("p"):
            inner, _, res = step[1:].partition("r")
            model = prune_channels(model, int(inner), int(res) if res else None)
        elif step.startswith("lr"):
            model = low_rank(model, calib, int(step[2:]))
    for step in steps:
        if step.startswith("ct"):
            model, pool = coarse_time(model, int(step[2:]))
    return model, pool


def decision_threshold(official: np.ndarray, eer_threshold: float) -> float:
    """The official EER threshold moved halfway to the next official score above it.

    The EER threshold is one of the official scores ("accept iff score > threshold"), so an
    exact rewrite that differs by 1e-6 would flip that file's decision; the midpoint gives the
    official model the same decisions and leaves a margin on both sides.
    """
    above = official[official > eer_threshold]
    return float((eer_threshold + above.min()) / 2) if above.size else float(eer_threshold)


def fidelity(official: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Spearman, decision agreement (official threshold, own thresholds), EER of ``scores`` against ``official``."""
    bona, spoof = labels == 1, labels == 0
    eer_o, thr_o = compute_eer(official[bona], official[spoof])
    eer_v, thr_v = compute_eer(scores[bona], scores[spoof])
    thr = decision_threshold(official, thr_o)
    return {"spearman": spearman(official, scores), "eer": eer_v,
            "agreement_at_official_eer_threshold": float(np.mean((official > thr) == (scores > thr))),
            "agreement_at_own_eer_thresholds": float(np.mean((official > thr) == (scores > decision_threshold(scores, thr_v)))),
            "official_eer_threshold": thr, "max_abs_diff": float(np.max(np.abs(scores - official)))}


def pareto_curve(variants: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Variants sorted by speed-up (descending); ``pareto`` = no other variant is at least as fast
    and strictly higher in Spearman (or faster and at least as high)."""
    pts = [(n, v["speedup_vs_official"], v["spearman"], v["agreement_at_official_eer_threshold"])
           for n, v in variants.items() if "spearman" in v]
    out = []
    for n, sp, rho, agr in sorted(pts, key=lambda p: -p[1]):
        dominated = any((s2 >= sp and r2 > rho) or (s2 > sp and r2 >= rho) for m, s2, r2, _ in pts if m != n)
        out.append({"variant": n, "speedup": sp, "spearman": rho, "agreement": agr, "pareto": not dominated})
    return out


def build(args: argparse.Namespace, work: Path, subset_windows: np.ndarray, calib: Any) -> dict[str, Any]:
    """Export every variant to ``work/NAME.onnx`` (an existing file is reused, with its record in an
    existing ``build.json``), check each new file against the PyTorch module it came from on two
    subset windows, write and return ``work/build.json``."""
    import torch

    from aasist_variants import encoder_macs
    from export.aasist import load_aasist
    from export.aasist_export import AASISTBody, AASISTScore, frontend_spec_for
    from export.fold import selu_vectorised
    from export.onnx_export import export_onnx

    model, _ = load_aasist(args.checkpoint)
    fast = copy.deepcopy(model).use_selu(selu_vectorised)
    base_spec = frontend_spec_for(model)
    # name → (torch module taking the ONNX input, front-end spec or None)
    torch_models: dict[str, tuple[Any, Any]] = {"official": (AASISTScore(model), None),
                                                "fft": (AASISTBody(model), base_spec),
                                                "fft-selu": (AASISTBody(fast), base_spec)}
    int8_of: dict[str, str] = {}
    for name in [v for v in args.variants.split(",") if v]:
        base = name[: -len("-int8")] if name.endswith("-int8") else name
        if base not in torch_models:
            approx, pool = approximate(fast, base, calib.windows)
            torch_models[base] = (AASISTBody(approx), dataclasses.replace(base_spec, pool=pool))
        if base != name:
            int8_of[name] = base
    distilled = {}
    for item in args.distilled:
        name, _, path = item.partition("=")
        structure = name.split("+")[0]
        if structure not in torch_models:
            raise SystemExit(f"--distilled {item}: {structure!r} is not among the variants")
        saved = torch.load(path, map_location="cpu", weights_only=False)  # our own file (aasist_distill.py)
        torch_models[name] = (AASISTBody(saved["model"].eval()), torch_models[structure][1])
        distilled[name] = {"train_ids": list(saved["train_ids"]), "checkpoint": Path(path).name}
    files: dict[str, tuple[Path, Any]] = {}
    fresh: set[str] = set()  # written now: checked now
    for name, (module, spec) in torch_models.items():
        path = work / f"{name}.onnx"
        if path.exists():
            log(f"reusing {path.name}")
            files[name] = (path, spec)
            continue
        fresh.add(name)
        if spec is None:
            export_onnx(module, path, window=WINDOW)
        else:
            export_onnx(module, path, input_name="features", input_shape=spec.output_shape(WINDOW))
        files[name] = (path, spec)
    for name, base in int8_of.items():
        path = work / f"{name}.onnx"
        if path.exists():
            log(f"reusing {path.name}")
        else:
            fresh.add(name)
            log(f"int8 calibration of {base} on {len(calib.windows)} windows")
            quantize_variant(files[base][0], files[base][1], calib.windows, path)
        files[name] = (path, files[base][1])
    previous = json.loads((work / "build.json").read_text())["variants"] if (work / "build.json").exists() else {}
    record: dict[str, Any] = {}
    with torch.no_grad():
        for name, (path, spec) in files.items():
            if name in previous and name not in fresh:
                record[name] = previous[name]  # same file as when it was checked
                continue
            module, _ = torch_models[int8_of.get(name, name)]
            s = scorer(path, spec)
            ref = module(torch.from_numpy(s.model_inputs(subset_windows[:2]))).numpy()
            pooled_t = spec.output_length(WINDOW) if spec is not None else (WINDOW - 128) // 3
            record[name] = {"frontend": spec.to_manifest() if spec is not None else None,
                            "onnx_bytes": path.stat().st_size, "int8": name in int8_of,
                            "parity_vs_own_pytorch": float(np.max(np.abs(s.score(subset_windows[:2]) - ref))),
                            "encoder_conv_macs": encoder_macs(module.model, pooled_t)}
            if name in distilled:
                record[name]["distilled"] = distilled[name]
    log("max |ONNX - own PyTorch| on 2 windows: " + json.dumps({k: v["parity_vs_own_pytorch"] for k, v in record.items()}))
    (work / "build.json").write_text(json.dumps({"model": model.config.name, "variants": record}, indent=1) + "\n")
    return record


def load_scorers(work: Path) -> tuple[dict[str, Any], dict[str, WindowScorer]]:
    from edge_detector.frontend import FrontEndSpec

    built = json.loads((work / "build.json").read_text())
    return built, {name: scorer(work / f"{name}.onnx", FrontEndSpec.from_manifest(v["frontend"]))
                   for name, v in built["variants"].items()}


def subset_entries(args: argparse.Namespace) -> list[Any]:
    from quantize.static_int8 import balanced_order

    return balanced_order(read_protocol(args.protocol), args.seed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--protocol", required=True)
    ap.add_argument("--audio-dir", required=True)
    ap.add_argument("--out", help="report JSON (stages all / report)")
    ap.add_argument("--work", help="folder for the ONNX files, build.json, shard scores and latency.json "
                                   "(default: a temporary folder, stage all only)")
    ap.add_argument("--stage", choices=["all", "build", "score", "time", "report"], default="all",
                    help="build: ONNX files + parity; score: the subset (or --shard I/N of it); time: "
                         "latency; report: merge into --out. 'all' runs them in one process")
    ap.add_argument("--shard", default="0/1", help="I/N: score entries I, I+N, I+2N, ... of the subset")
    ap.add_argument("--only", default="", help="score stage: only these variants (comma-separated; a later "
                                                "addition such as a distilled variant), written to their own files")
    ap.add_argument("--count", type=int, default=300, help="fidelity subset size")
    ap.add_argument("--skip-trained", action="store_true",
                    help="leave out of the subset every file a distilled variant was trained on (a subset as "
                         "large as the corpus then still measures every variant on files none of them saw)")
    ap.add_argument("--calibration", type=int, default=9, help="int8 / low-rank calibration windows (outside the subset)")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--variants", default=DEFAULT_VARIANTS,
                    help="comma-separated approximate variants besides official, fft and fft-selu")
    ap.add_argument("--latency-only", default=DEFAULT_LATENCY_ONLY,
                    help="variants timed and parity-checked but not scored on the subset (CPU budget)")
    ap.add_argument("--distilled", action="append", default=[], metavar="NAME=CHECKPOINT",
                    help="also score a fine-tuned variant saved by aasist_distill.py (NAME = structure+tag)")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                    help="cpu: this process's CPU time (robust on a shared machine); wall: elapsed time")
    args = ap.parse_args(argv)
    import torch

    from quantize.static_int8 import load_set

    torch.set_num_threads(1)
    if args.stage == "all":
        with tempfile.TemporaryDirectory() as tmp:
            for stage in ("build", "score", "time", "report"):
                main((argv if argv is not None else sys.argv[1:]) + ["--stage", stage, "--work", tmp])
        return 0
    if not args.work:
        raise SystemExit("--work is needed with --stage")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    order = subset_entries(args)
    # The subset: the first --count entries of the order (a file that cannot be decoded is left out
    # and named in the log; every shard applies the same rule to its own entries).
    entries = order[: args.count]
    if args.skip_trained and (work / "build.json").exists():  # e.g. all of dev with a distilled variant
        trained = {i for v in json.loads((work / "build.json").read_text())["variants"].values()
                   for i in v.get("distilled", {}).get("train_ids", [])}
        entries = [e for e in entries if e.file_id not in trained]
    if args.stage == "build":
        head = load_set(entries[:2], args.audio_dir, 2, 16000, WINDOW, 600.0, log)
        calib = load_set(order[args.count:], args.audio_dir, args.calibration, 16000, WINDOW, 600.0, log)
        build(args, work, head.windows, calib)
        return 0
    if args.stage == "score":
        i, n = (int(v) for v in args.shard.split("/"))
        mine = entries[i::n]
        subset = load_set(mine, args.audio_dir, len(mine), 16000, WINDOW, 600.0, log)
        built, scorers = load_scorers(work)
        skip = set(v for v in args.latency_only.split(",") if v) - {"official"}
        only = [v for v in args.only.split(",") if v]
        scores = {}
        for name, s in scorers.items():
            if name in skip or (only and name not in only):
                continue
            trained = set(built["variants"][name].get("distilled", {}).get("train_ids", []))
            if trained & set(subset.file_ids):
                raise SystemExit(f"{name} was trained on {len(trained & set(subset.file_ids))} subset file(s)")
            log(f"shard {i}/{n}: scoring {len(subset.file_ids)} windows with {name}")
            scores[name] = s.score(subset.windows)
        tag = "_" + "_".join(only) if only else ""
        np.savez(work / f"scores{tag}_{i}of{n}.npz", ids=np.array(subset.file_ids), labels=subset.labels,
                 **{f"score:{k}": v for k, v in scores.items()})
        return 0
    if args.stage == "time":
        one = load_set(entries[:1], args.audio_dir, 1, 16000, WINDOW, 600.0, log).windows
        built, scorers = load_scorers(work)
        fns: dict[str, Callable[[], Any]] = {name: (lambda s=s: s.score(one)) for name, s in scorers.items()}
        from edge_detector.frontend import FrontEndSpec, SincFFTFrontEnd

        specs = {v["frontend"]["pool"]: FrontEndSpec.from_manifest(v["frontend"])
                 for v in built["variants"].values() if v["frontend"]}
        for pool, spec in sorted(specs.items()):
            fe = SincFFTFrontEnd(spec)
            fns[f"numpy-frontend-pool{pool}"] = lambda fe=fe: fe(one)
        times = time_interleaved(fns, warmup=args.warmup, runs=args.runs, block=5, label="latency",
                                 clock=CLOCKS[args.clock])
        (work / "latency.json").write_text(json.dumps({
            "clock": args.clock, "runs": args.runs, "warmup": args.warmup, "block": 5, "threads": 1,
            "load_average_at_end": list(os.getloadavg()), "environment": capture_environment(),
            "samples_ms": {k: [round(float(x), 4) for x in v] for k, v in times.items()}}, indent=1) + "\n")
        return 0
    # report
    built = json.loads((work / "build.json").read_text())
    lat = json.loads((work / "latency.json").read_text())
    label_of: dict[str, int] = {}
    by_id: dict[str, dict[str, float]] = {}  # variant → file id → score (shard files merged by id)
    for f in sorted(work.glob("scores*_*of*.npz")):
        z = np.load(f)
        fids = [str(v) for v in z["ids"]]
        label_of.update(zip(fids, (int(v) for v in z["labels"])))
        for k in z.files:
            if k.startswith("score:"):
                got = by_id.setdefault(k[6:], {})
                if set(fids) & set(got):
                    raise SystemExit(f"{f.name}: {k[6:]} scored twice for some files")
                got.update(zip(fids, (float(v) for v in z[k])))
    ids = [e.file_id for e in entries if e.file_id in by_id.get("official", {})]
    missing = sorted({e.file_id for e in entries} - set(ids))
    for name, got in by_id.items():
        if set(got) != set(ids):
            raise SystemExit(f"{name}: scored on {len(got)} files, official on {len(ids)}: run every shard")
    lab = np.array([label_of[i] for i in ids])
    scores = {k: np.array([got[i] for i in ids]) for k, got in by_id.items()}
    official_ms = float(np.median(lat["samples_ms"]["official"]))
    variants: dict[str, dict[str, Any]] = {}
    for name in list(lat["samples_ms"]) + [n for n in scores if n not in lat["samples_ms"]]:
        # a variant added after the timing run (a distilled one) has its structure's graph and time
        timed = name if name in lat["samples_ms"] else name.split("+")[0]
        samples = lat["samples_ms"][timed]
        rec: dict[str, Any] = {"latency_ms": latency_summary(samples, WINDOW / 16000.0),
                               "speedup_vs_official": official_ms / float(np.median(samples))}
        if timed != name:
            rec["timed_as"] = timed
        if name in built["variants"]:
            rec.update(copy.deepcopy(built["variants"][name]))
            if "distilled" in rec:  # no file list of the corpus in a committed report: the count only
                rec["distilled"]["train_files"] = len(rec["distilled"].pop("train_ids"))
        if name in scores:
            rec.update(fidelity(scores["official"], scores[name], lab))
        variants[name] = rec
    report = {
        "what": f"{built['model']} edge variants: one-thread CPU time per 4.04 s window and fidelity to the official model",
        "commands": "see README.md next to this file (stages build, score in shards, time, report)",
        "subset_rule": f"first {args.count} entries of quantize.static_int8.balanced_order(protocol, seed={args.seed})"
                       + (" without the distilled variants' training files" if args.skip_trained else ""),
        "calibration_rule": f"first {args.calibration} decodable entries after them (int8 ranges, low-rank fits)",
        "n_files": len(ids), "n_bonafide": int(lab.sum()), "not_decodable": missing,
        "threads": 1, "graph_optimization_level": "all",
        **{k: lat[k] for k in ("clock", "runs", "warmup", "block", "load_average_at_end")},
        "variants": variants, "curve": pareto_curve(variants), "environment": lat["environment"],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    for name, v in variants.items():
        fid = (f"spearman {v['spearman']:.4f}  agree {100 * v['agreement_at_official_eer_threshold']:.1f} %  "
               f"EER {100 * v['eer']:.2f} %" if "spearman" in v else "")
        par = f"  parity {v['parity_vs_own_pytorch']:.2g}" if "parity_vs_own_pytorch" in v else ""
        print(f"{name:>22s} p50 {v['latency_ms']['p50_ms']:7.2f} ms  x{v['speedup_vs_official']:.2f}  {fid}{par}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
