"""Static int8 (QDQ) quantization of a bundle, calibrated on real decoded audio.

Recipe, and why:

- ``quant_pre_process`` first (shape inference + onnxruntime's basic graph optimisation,
  which folds BatchNorm into convolutions): the quantizer can only place QDQ on tensors
  whose shapes it knows, and a BN left between a Conv and its QDQ pair would stop the
  int8 fusion.
- ``quantize_static`` in QDQ format, per-channel weights, S8S8 (int8 activations and
  weights) by default. Never ``quantize_dynamic`` for this model: it turns Conv into
  ConvInteger, which the CPU execution provider cannot run.
- ``--symmetric`` also makes activations symmetric (``ActivationSymmetric``), as
  TensorRT requires; weights are symmetric in every variant (``WeightSymmetric``).
- Only Conv / MatMul / Gemm are quantized by default: they carry the multiply-accumulates
  and the weights. Elementwise ops in the unrolled MatMul GRU (sigmoid, tanh, gate
  products) stay fp32, where int8 would only add rounding and Q/DQ overhead. Gemm
  outputs stay fp32 (QGemm with float output): they feed sigmoid / softplus, and a
  quantized score head would round the score itself to 256 levels.
- Speed recipe of the shipped int8 sibling (``benchmarks/export_edge_variant.sh``): only
  Conv (``--op-types Conv``), and only convolutions with >= 16 input channels
  (``min_conv_channels``; the 8-channel stage-1 ones are slower as QLinearConv than in
  fp32 on x86 VNNI); the GRU stays onnxruntime's single fp32 GRU op with its weights
  stored int8 (``gru_weights="int8"``), instead of the unrolled MatMul GRU whose ~500
  small QDQ nodes made int8 slower than fp32 (numbers: benchmarks/results/int8_speed.json).
- After quantization, :func:`quantize.qdq_graph.dedicate_qdq` gives each quantized node
  its own Q→DQ pair and hands residual adds / GRU elementwise ops the fp32 tensor: on
  x86 onnxruntime otherwise leaves fanned-out S8 groups in fp32.
- Calibration data is REAL audio listed by a protocol, decoded and windowed by the same
  code the device runs (:func:`edge_detector.audio.load_audio`,
  :func:`edge_detector.windows.first_window`) and passed through the same numpy front
  end (:class:`edge_detector.detector.WindowScorer`), so activation ranges are those the
  device will see. Classes are interleaved so a small calibration set sees both.
- Per-layer sensitivity: each weight group (a Conv, a Gemm, or one recurrent weight
  shared by all unrolled GRU steps) is left in fp32 in turn; EER and |Δscore| against
  the fp32 bundle show which layers int8 hurts. ``max_eer_increase`` then excludes the
  most sensitive groups greedily until the EER is within budget. The calibration ranges
  are computed once and cached, so each variant costs one quantizer pass.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from edge_detector.audio import load_audio
from edge_detector.bundle import Bundle, load_bundle, publish, write_manifest
from edge_detector.output_dir import check_output_dir, staged_dir
from edge_detector.detector import Detector, WindowScorer, decide
from edge_detector.errors import AudioError, EdgeDetectorError
from edge_detector.metrics import compute_eer
from edge_detector.protocol import ProtocolEntry, find_audio, read_protocol
from edge_detector.session import SessionSettings, make_session
from edge_detector.windows import first_window

from .qdq_graph import (
    DEFAULT_OP_TYPES,
    NodeGroup,
    conv_input_channels,
    count_ops,
    dedicate_qdq,
    int8_weights_only,
    name_unnamed_nodes,
    narrow_conv_groups,
    quantizable_groups,
    resolve_exclusions,
    weight_only_groups,
)

SENSITIVITY_FILE = "sensitivity.json"
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
#: How an ONNX GRU op's weights are stored: "fp32" (untouched) or "int8" (weight-only, see
#: :func:`quantize.qdq_graph.int8_weights_only`).
GRU_WEIGHT_MODES = ("fp32", "int8")
#: Up to this many calibration file ids are listed in the manifest; beyond, a hash.
_MAX_LISTED_IDS = 256

Log = Callable[[str], None]


class QuantizationError(EdgeDetectorError):
    """Quantization could not produce a bundle that meets the request."""

    kind = "quantization_failed"


# --------------------------------------------------------------------------- data


@dataclass
class AudioSet:
    """Decoded first windows of protocol entries, with labels (1 = bona fide)."""

    file_ids: list[str]
    labels: np.ndarray
    windows: np.ndarray  # [n, window] float32

    def __len__(self) -> int:
        return len(self.file_ids)

    @property
    def has_both_classes(self) -> bool:
        return bool(np.any(self.labels == 1) and np.any(self.labels == 0))


def balanced_order(entries: Sequence[ProtocolEntry], seed: int) -> list[ProtocolEntry]:
    """Shuffle (seeded) and interleave bona fide and spoof, so any prefix is roughly balanced."""
    rng = random.Random(seed)
    bona = [e for e in entries if e.is_bonafide]
    spoof = [e for e in entries if not e.is_bonafide]
    rng.shuffle(bona)
    rng.shuffle(spoof)
    out: list[ProtocolEntry] = []
    for i in range(max(len(bona), len(spoof))):
        if i < len(bona):
            out.append(bona[i])
        if i < len(spoof):
            out.append(spoof[i])
    return out


def load_set(entries: Sequence[ProtocolEntry], audio_dir: str | Path, count: int, sample_rate: int, window: int,
             max_seconds: float, log: Log, exclude_ids: frozenset[str] = frozenset()) -> AudioSet:
    """Decode up to ``count`` entries (undecodable files are skipped with a log line)."""
    ids: list[str] = []
    labels: list[int] = []
    rows: list[np.ndarray] = []
    for entry in entries:
        if len(ids) >= count:
            break
        if entry.file_id in exclude_ids:
            continue
        try:
            path = find_audio(audio_dir, entry.file_id)
            decoded = load_audio(path, sample_rate, max_seconds=max_seconds)
        except (AudioError, EdgeDetectorError) as exc:
            log(f"quantize: skipping {entry.file_id}: {exc}")
            continue
        ids.append(entry.file_id)
        labels.append(entry.target)
        rows.append(first_window(decoded.samples, window))
    windows = np.stack(rows).astype(np.float32) if rows else np.zeros((0, window), np.float32)
    return AudioSet(ids, np.asarray(labels, dtype=np.int64), windows)


class FeatureReader:
    """onnxruntime CalibrationDataReader over precomputed model inputs (rewindable)."""

    def __init__(self, input_name: str, inputs: np.ndarray, batch_size: int = 4) -> None:
        self.input_name = input_name
        self.inputs = inputs
        self.batch_size = max(1, int(batch_size))
        self._iter: Optional[Iterator[dict[str, np.ndarray]]] = None
        self.rewind()

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(0, len(self.inputs), self.batch_size):
            yield {self.input_name: np.ascontiguousarray(self.inputs[i : i + self.batch_size])}

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        assert self._iter is not None
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = self._batches()

    def __len__(self) -> int:
        return -(-len(self.inputs) // self.batch_size)


# --------------------------------------------------------------------------- evaluation


@dataclass
class VariantResult:
    """How one quantized variant scores the evaluation set, compared with the fp32 bundle."""

    label: str
    excluded_groups: list[str]
    eer: Optional[float]
    max_abs_diff: float
    mean_abs_diff: float
    decision_agreement: float
    scores: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def to_dict(self, eer_fp32: Optional[float]) -> dict[str, Any]:
        inc = None if self.eer is None or eer_fp32 is None else self.eer - eer_fp32
        return {"label": self.label, "excluded_groups": list(self.excluded_groups), "eer": self.eer,
                "eer_increase": inc, "max_abs_diff": self.max_abs_diff, "mean_abs_diff": self.mean_abs_diff,
                "decision_agreement": self.decision_agreement}


def eer_of(scores: np.ndarray, labels: np.ndarray) -> Optional[float]:
    if not (np.any(labels == 1) and np.any(labels == 0)):
        return None
    return float(compute_eer(scores[labels == 1], scores[labels == 0])[0])


def decisions(bundle: Bundle, scores: np.ndarray) -> list[str]:
    return [decide(bundle.calibrate(float(s)), bundle.accept_threshold, bundle.reject_threshold) for s in scores]


# --------------------------------------------------------------------------- quantizer


@dataclass
class QuantOptions:
    per_channel: bool = True
    symmetric: bool = False
    calibrate_method: str = "minmax"
    op_types: tuple[str, ...] = DEFAULT_OP_TYPES
    dedicated_qdq: bool = True
    #: Ops whose *output* stays fp32. Every Gemm here feeds an fp32 op (sigmoid of the
    #: attention, softplus of the score head), so quantizing its output buys no speed and
    #: would round the final score to 256 levels of the calibrated logit range.
    float_output_ops: tuple[str, ...] = ("Gemm",)

    def method(self) -> Any:
        from onnxruntime.quantization import CalibrationMethod

        return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                "percentile": CalibrationMethod.Percentile}[self.calibrate_method]

    def extra_options(self) -> dict[str, Any]:
        return {"ActivationSymmetric": bool(self.symmetric), "WeightSymmetric": True,
                "OpTypesToExcludeOutputQuantization": list(self.float_output_ops)}


class Quantizer:
    """One pre-processed model, one calibration cache, many ``nodes_to_exclude`` variants."""

    def __init__(self, pre_model: Path, work: Path, reader: FeatureReader, options: QuantOptions,
                 weight_only_nodes: Sequence[str] = ()) -> None:
        self.pre_model = pre_model
        self.work = work
        self.reader = reader
        self.options = options
        #: GRU nodes whose weights are stored int8 unless a variant excludes them.
        self.weight_only_nodes = list(weight_only_nodes)
        self.cache = work / "calibration_cache.json"
        self.qdq_stats: dict[str, int] = {}
        self.weight_only_stats: dict[str, Any] = {}

    def quantize(self, out_path: Path, exclude_nodes: Sequence[str]) -> Path:
        import onnx
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        self.reader.rewind()
        quantize_static(
            str(self.pre_model), str(out_path), self.reader, quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(self.options.op_types), per_channel=self.options.per_channel,
            reduce_range=False, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude_nodes), calibrate_method=self.options.method(),
            extra_options=self.options.extra_options(), calibration_cache_path=str(self.cache),
        )
        weight_only = [n for n in self.weight_only_nodes if n not in set(exclude_nodes)]
        if self.options.dedicated_qdq or weight_only:
            model = onnx.load(str(out_path))
            if self.options.dedicated_qdq:
                self.qdq_stats = dedicate_qdq(model, self.options.op_types)
            self.weight_only_stats = int8_weights_only(model, weight_only)
            onnx.save(model, str(out_path))
        return out_path


def _quiet_ort_logging() -> None:
    """The quantizer logs a warning per call through the root logger; keep stderr readable."""
    import logging

    logging.getLogger().setLevel(logging.ERROR)


def runtime_kernels(model_path: Path, level: str) -> dict[str, int]:
    """Which int8 kernels onnxruntime actually forms from the QDQ graph on *this* machine.

    QDQ is a request, not a guarantee: the CPU provider fuses DQ→op→Q into QLinearConv /
    QLinearMatMul / QGemm only for patterns it supports, and runs the rest in fp32.
    """
    import onnx
    import onnxruntime as ort

    from edge_detector.session import _LEVELS

    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.graph_optimization_level = _LEVELS[level]
        so.optimized_model_filepath = str(Path(d) / "opt.onnx")
        so.log_severity_level = 3
        so.intra_op_num_threads = 1
        ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
        ops = count_ops(onnx.load(str(Path(d) / "opt.onnx")))
    keys = ("QLinearConv", "QLinearMatMul", "QGemm", "MatMulIntegerToFloat", "Conv", "FusedConv", "NchwcConv",
            "MatMul", "FusedMatMul", "Gemm", "FusedGemm")
    return {k: ops[k] for k in keys if k in ops}


# --------------------------------------------------------------------------- driver


@dataclass
class QuantizeResult:
    bundle: Path
    manifest: dict[str, Any]
    sensitivity: Optional[dict[str, Any]]


def _protocol_digest(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def quantize_bundle(
    bundle_path: str | Path,
    out_dir: str | Path,
    protocol: str | Path,
    audio_dir: str | Path,
    calib_count: int = 64,
    eval_count: int = 0,
    exclude: Sequence[str] = (),
    sensitivity: bool = False,
    max_eer_increase: Optional[float] = None,
    per_channel: bool = True,
    symmetric: bool = False,
    calibrate_method: str = "minmax",
    op_types: Sequence[str] = DEFAULT_OP_TYPES,
    dedicated_qdq: bool = True,
    min_conv_channels: int = 0,
    gru_weights: str = "fp32",
    seed: int = 0,
    threads: int = 1,
    overwrite: bool = False,
    log: Log = lambda _m: None,
) -> QuantizeResult:
    """Quantize the fp32 bundle at ``bundle_path`` into a new int8 bundle at ``out_dir``.

    Evaluation (EER, |Δscore|, decision agreement against the fp32 bundle) runs on
    ``eval_count`` protocol files not used for calibration, or on the calibration files
    themselves when ``eval_count`` is 0 (optimistic; say so in the report).

    ``min_conv_channels``: convolutions with fewer input channels (per group) stay fp32
    for speed, whatever the accuracy budget says (see
    :func:`quantize.qdq_graph.narrow_conv_groups`); they are not sensitivity candidates.
    ``gru_weights="int8"``: an ONNX GRU op's W and R are stored int8 (weight-only,
    :func:`quantize.qdq_graph.int8_weights_only`); each such GRU is a sensitivity group
    like a Conv, so the accuracy budget can send it back to fp32.
    Raises :class:`QuantizationError` (bad option, no audio, nothing to quantize, budget not met).
    """
    _quiet_ort_logging()
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import quant_pre_process

    out = check_output_dir(out_dir, overwrite, inputs=[bundle_path])
    if calibrate_method not in CALIBRATION_METHODS:
        raise QuantizationError(f"unknown calibration method {calibrate_method!r}; use one of {CALIBRATION_METHODS}")
    if gru_weights not in GRU_WEIGHT_MODES:
        raise QuantizationError(f"unknown GRU weight mode {gru_weights!r}; use one of {GRU_WEIGHT_MODES}")
    if min_conv_channels < 0:
        raise QuantizationError(f"min_conv_channels must be >= 0, got {min_conv_channels}")
    src = load_bundle(bundle_path)
    if src.manifest.get("quantization"):
        raise QuantizationError(f"{src.path}: bundle is already quantized ({src.manifest['model']['variant']}); "
                                "quantize the fp32 bundle")
    rule = src.window_rule
    level = src.manifest["onnx"]["graph_optimization_level"]
    settings = SessionSettings(intra_op_threads=int(threads), graph_optimization_level=level)
    frontend = src.frontend
    input_name, output_name = src.manifest["onnx"]["input"], src.manifest["onnx"]["output"]

    def scorer_for(path: Path) -> WindowScorer:
        return WindowScorer(make_session(path, settings), input_name, output_name, frontend, where=str(path))

    # ---- data: the device's own preprocessing
    entries = balanced_order(read_protocol(protocol), seed)
    calib = load_set(entries, audio_dir, calib_count, src.sample_rate, rule.window, src.max_seconds, log)
    if len(calib) == 0:
        raise QuantizationError(f"no decodable calibration audio from {protocol} in {audio_dir}")
    evalset = calib
    if eval_count > 0:
        evalset = load_set(entries, audio_dir, eval_count, src.sample_rate, rule.window, src.max_seconds, log,
                           exclude_ids=frozenset(calib.file_ids))
        if len(evalset) == 0:
            log("quantize: no protocol files left for evaluation; evaluating on the calibration files")
            evalset = calib
    eval_is_calib = evalset is calib
    log(f"quantize: {len(calib)} calibration files, {len(evalset)} evaluation files"
        + (" (the calibration files)" if eval_is_calib else ""))

    fp32 = scorer_for(src.model_path)
    calib_inputs = np.concatenate([fp32.model_inputs(calib.windows[i : i + 8]) for i in range(0, len(calib), 8)])
    ref_scores = fp32.score(evalset.windows)
    eer_fp32 = eer_of(ref_scores, evalset.labels)
    ref_decisions = decisions(src, ref_scores)

    with staged_dir(out, prefix=".quantize-") as work:  # scratch files; removed on leaving
        pre = work / "pre.onnx"
        quant_pre_process(str(src.model_path), str(pre))
        pre_model = onnx.load(str(pre))
        if name_unnamed_nodes(pre_model):
            onnx.save(pre_model, str(pre))
        all_groups = quantizable_groups(pre_model, op_types)
        gru_groups = weight_only_groups(pre_model) if gru_weights == "int8" else []
        all_groups += gru_groups
        narrow = narrow_conv_groups(pre_model, all_groups, min_conv_channels)
        groups = [g for g in all_groups if g not in narrow]  # the candidates for int8
        if not groups:
            raise QuantizationError(f"{src.model_path}: no {list(op_types)} nodes to quantize"
                                    + (f" with >= {min_conv_channels} input channels" if narrow else ""))
        speed_nodes = [n for g in narrow for n in g.nodes]
        if narrow:
            log(f"quantize: {len(narrow)} convolution(s) with < {min_conv_channels} input channels stay fp32 (speed): "
                + ", ".join(g.name for g in narrow))
        all_nodes = [n.name for n in pre_model.graph.node]
        has_gru = any(n.op_type == "GRU" for n in pre_model.graph.node)
        if has_gru and not gru_groups:
            log("quantize: the model has an ONNX GRU op, which onnxruntime cannot quantize; it stays fp32 "
                "(--gru-weights int8 stores its weights in int8; export with --gru matmul for int8 MatMuls)")
        try:
            user_nodes = list(dict.fromkeys(resolve_exclusions(exclude, all_groups, all_nodes) + speed_nodes))
        except ValueError as exc:
            raise QuantizationError(str(exc)) from None
        group_of_node = {n: g.name for g in all_groups for n in g.nodes}
        options = QuantOptions(per_channel=per_channel, symmetric=symmetric, calibrate_method=calibrate_method,
                               op_types=tuple(op_types), dedicated_qdq=dedicated_qdq)
        quantizer = Quantizer(pre, work, FeatureReader(input_name, calib_inputs), options,
                              weight_only_nodes=[g.nodes[0] for g in gru_groups])
        counter = iter(range(1_000_000))

        def evaluate(excluded_nodes: Sequence[str], label: str) -> VariantResult:
            path = quantizer.quantize(work / f"variant{next(counter)}.onnx", excluded_nodes)
            scores = scorer_for(path).score(evalset.windows)
            path.unlink()  # a full-size variant is ~17 MB; a sensitivity run makes dozens
            diff = np.abs(scores.astype(np.float64) - ref_scores)
            agree = float(np.mean([a == b for a, b in zip(decisions(src, scores), ref_decisions)])) if len(scores) else 1.0
            excluded_groups = sorted({group_of_node.get(n, n) for n in excluded_nodes})
            return VariantResult(label, excluded_groups, eer_of(scores, evalset.labels), float(diff.max(initial=0.0)),
                                 float(diff.mean()) if diff.size else 0.0, agree, scores)

        user_only = [n for n in user_nodes if n not in speed_nodes]
        base = evaluate(user_nodes, "int8 (requested exclusions)" if user_only else "all-int8")
        log(f"quantize: {base.label}: EER {base.eer}, max |Δ| {base.max_abs_diff:.4g}, "
            f"agreement {base.decision_agreement:.3f} (fp32 EER {eer_fp32})")

        report: Optional[dict[str, Any]] = None
        chosen_nodes = list(user_nodes)
        final = base
        budget: Optional[dict[str, Any]] = None
        if sensitivity or max_eer_increase is not None:
            all_int8 = base if not user_only else evaluate(speed_nodes, "all-int8")
            per_group: list[tuple[NodeGroup, VariantResult]] = []
            for g in groups:
                res = evaluate(speed_nodes + g.nodes, f"fp32:{g.name}")
                per_group.append((g, res))
                log(f"quantize: sensitivity {g.name}: EER {res.eer}, max |Δ| {res.max_abs_diff:.4g}, "
                    f"mean |Δ| {res.mean_abs_diff:.4g}")
            # Most sensitive first: leaving it in fp32 lowers the EER most; ties by mean |Δscore|.
            ranked = sorted(per_group, key=lambda gr: (gr[1].eer if gr[1].eer is not None else 0.0,
                                                      gr[1].mean_abs_diff))
            report = {
                "bundle": src.path.name, "model_id": src.model_id,  # the folder name: no machine path in a shipped file
                "evaluation_set": {"protocol": Path(protocol).name, "files": len(evalset),
                                   "bonafide": int(np.sum(evalset.labels == 1)),
                                   "spoof": int(np.sum(evalset.labels == 0)),
                                   "is_calibration_set": eval_is_calib},
                "reference": {
                    "all-fp32": {"eer": eer_fp32, "max_abs_diff": 0.0, "mean_abs_diff": 0.0, "decision_agreement": 1.0},
                    "all-int8": all_int8.to_dict(eer_fp32),
                },
                "groups": [dict(g.to_dict(), **{k: v for k, v in r.to_dict(eer_fp32).items()
                                                if k not in ("label", "excluded_groups")})
                           for g, r in per_group],
                "ranking": [g.name for g, _ in ranked],
                "fp32_for_speed": {"min_conv_channels": int(min_conv_channels), "groups": [g.name for g in narrow]},
            }
            if max_eer_increase is not None:
                if eer_fp32 is None:
                    raise QuantizationError("--max-eer-increase needs bona fide and spoof files in the evaluation set")
                steps = []
                excluded_groups: list[str] = []
                current = base
                for g, _res in ranked:
                    if current.eer is not None and current.eer - eer_fp32 <= max_eer_increase:
                        break
                    if all(n in chosen_nodes for n in g.nodes):
                        continue
                    chosen_nodes = list(dict.fromkeys(chosen_nodes + g.nodes))
                    excluded_groups.append(g.name)
                    current = evaluate(chosen_nodes, f"greedy+{g.name}")
                    steps.append(current.to_dict(eer_fp32))
                    log(f"quantize: greedy: excluded {g.name}: EER {current.eer} (fp32 {eer_fp32})")
                final = current
                met = final.eer is not None and final.eer - eer_fp32 <= max_eer_increase
                budget = {"max_eer_increase": max_eer_increase, "met": met, "eer_fp32": eer_fp32,
                          "eer_int8": final.eer, "greedy_excluded_groups": excluded_groups, "steps": steps}
                report["greedy"] = budget
                if not met:
                    raise QuantizationError(
                        f"accuracy budget not met: EER {final.eer} vs fp32 {eer_fp32} "
                        f"(> +{max_eer_increase}) even with every group in fp32")

        # ---- final model (the last evaluated variant is re-made deterministically)
        final_path = quantizer.quantize(work / "model.onnx", chosen_nodes)
        qmodel = onnx.load(str(final_path))
        ops = count_ops(qmodel)
        kernels = runtime_kernels(final_path, level)
        variant = "int8-symmetric" if symmetric else "int8"
        excluded_groups_final = sorted({group_of_node.get(n, n) for n in chosen_nodes})
        ids = calib.file_ids
        recipe: dict[str, Any] = {
            "method": "static",
            "tool": "onnxruntime.quantization.quantize_static",
            "versions": {"onnxruntime": ort.__version__, "onnx": onnx.__version__},
            "pre_process": "onnxruntime.quantization.quant_pre_process (shape inference, basic optimisation incl. BN folding)",
            "format": "QDQ",
            "per_channel": bool(per_channel),
            "activation_type": "int8",
            "weight_type": "int8",
            "activation_symmetric": bool(symmetric),
            "weight_symmetric": True,
            "reduce_range": False,
            "op_types": list(op_types),
            "float_output_op_types": list(options.float_output_ops),
            "dedicated_qdq": dict(quantizer.qdq_stats, enabled=bool(dedicated_qdq)),
            "min_conv_channels": int(min_conv_channels),
            "fp32_for_speed_groups": [g.name for g in narrow],
            "gru_weights": dict(quantizer.weight_only_stats, mode=gru_weights,
                                storage="int8 per-row symmetric -> DequantizeLinear -> fp32 GRU op")
            if gru_groups else {"mode": "fp32"},
            "calibration": {
                "method": {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}[calibrate_method],
                "protocol": Path(protocol).name,
                "files": len(calib),
                "bonafide": int(np.sum(calib.labels == 1)),
                "spoof": int(np.sum(calib.labels == 0)),
                "seed": int(seed),
                "window": "first (edge_detector.windows.first_window)",
                "preprocessing": "edge_detector.audio.load_audio"
                                 + (f" + numpy front end {frontend.type}" if frontend is not None else ""),
                "file_ids": ids if len(ids) <= _MAX_LISTED_IDS else None,
                "file_ids_sha256": _protocol_digest(ids),
            },
            "groups": len(all_groups),
            "quantized_groups": len(all_groups) - len({group_of_node[n] for n in chosen_nodes if n in group_of_node}),
            "excluded_nodes": list(chosen_nodes),
            "excluded_groups": excluded_groups_final,
            "onnx_gru_left_fp32": has_gru,  # the op computes in fp32 (its weights may be stored int8: gru_weights)
            "node_counts": {k: ops.get(k, 0) for k in ("QuantizeLinear", "DequantizeLinear", "Conv", "MatMul", "Gemm", "GRU")},
            "runtime_kernels": {"host": f"{platform.machine()} CPUExecutionProvider, graph level {level}", **kernels},
            "source_bundle": {"model_id": src.model_id, "model_sha256": src.model_sha256,
                              "variant": src.manifest["model"]["variant"]},
            "parity_vs_fp32": {
                "set": "calibration files" if eval_is_calib else "held-out protocol files",
                "files": len(evalset), "max_abs_diff": final.max_abs_diff, "mean_abs_diff": final.mean_abs_diff,
                "decision_agreement": final.decision_agreement, "eer_fp32": eer_fp32, "eer_int8": final.eer,
            },
            "budget": budget,
            "sensitivity_report": SENSITIVITY_FILE if report is not None else None,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        manifest = json.loads(json.dumps(src.manifest))
        manifest["model"]["variant"] = variant
        manifest["model_id"] = f"{src.model_id}-{'int8s' if symmetric else 'int8'}"
        manifest["quantization"] = recipe
        manifest["files"] = {manifest["onnx"]["file"]: {}}

        with staged_dir(out) as stage:
            shutil.copyfile(final_path, stage / manifest["onnx"]["file"])
            from export.onnx_meta import add_onnx_metadata

            add_onnx_metadata(stage / manifest["onnx"]["file"], manifest)
            if report is not None:
                report["final"] = final.to_dict(eer_fp32)
                report["recipe"] = {k: recipe[k] for k in ("format", "per_channel", "activation_symmetric", "op_types")}
                (stage / SENSITIVITY_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
                manifest["files"][SENSITIVITY_FILE] = {}
            write_manifest(stage, manifest)
            # The bundle must load and score on the device path, and agree with what was evaluated.
            det = Detector(stage, SessionSettings(intra_op_threads=int(threads)))
            probe = det.score_windows(evalset.windows[:1])
            if len(probe) and abs(float(probe[0]) - float(final.scores[0])) > 1e-5:
                raise QuantizationError("the written bundle does not reproduce the evaluated int8 scores")
            del det
            publish(stage, out)
    final_bundle = load_bundle(out)
    return QuantizeResult(out, final_bundle.manifest, report)
