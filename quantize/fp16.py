"""fp32 bundle → fp16 bundle (for TensorRT / CUDA on a Jetson), with a parity check.

Why a converter of our own: the graph must keep **float32 input and output** (the
runtime, the manifest and the parity tools all speak float32 waveforms and scores),
so Cast nodes go at the graph's edges and every float tensor inside becomes float16:
initializers, ``Constant`` values, ``ConstantOfShape`` fills and ``Cast(to=float)``.
Ops listed in ``keep_fp32_ops`` stay float32 with Casts around them; initializers used
only by such ops stay float32 (no double rounding).

On a GPU the fp16 graph halves memory traffic and uses tensor cores; on a CPU
onnxruntime runs it too (it wraps fp16 nodes that lack a CPU fp16 kernel in Casts), so
the same bundle still works when a Jetson falls back to the CPU - slower than fp32, but
correct. ``auto_keep_fp32`` adds any op onnxruntime's CPU provider cannot place at all.

The parity check compares the fp16 model with the fp32 bundle it came from, both run by
onnxruntime with the bundle's graph level, on random windows and on synthetic speech-
like windows, and refuses to write a bundle whose scores differ by more than the
tolerance or whose decisions differ. Needs the ``onnx`` package (training side), never
torch.
"""
from __future__ import annotations

import copy
import datetime as _dt
import json
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_detector.bundle import Bundle, load_bundle, publish, write_manifest
from edge_detector.output_dir import check_output_dir, staged_dir
from edge_detector.detector import WindowScorer, decide
from edge_detector.errors import BundleError
from edge_detector.frontend import FrontEndSpec
from edge_detector.session import SessionSettings, make_session

FP16_MAX = float(np.finfo(np.float16).max)  # 65504
#: Default score tolerance, in log-probability units (the score is log P(bona fide)).
#: fp16 has an 11-bit mantissa (relative step 4.9e-4); after ~10 layers and a 64 600-sample
#: input the tiny test models land around 1e-3 and larger ones a few 1e-3, so 0.02 leaves
#: room without hiding a broken conversion (those miss by 0.1-10).
FP16_TOLERANCE = 2e-2
#: Inputs that ONNX requires to stay float32 whatever the data type (op -> input indices).
_FLOAT32_ONLY_INPUTS = {"Resize": (2,), "Upsample": (1,)}


class Fp16ParityError(BundleError):
    """The fp16 model does not reproduce the fp32 bundle within tolerance."""

    kind = "parity_failed"


@dataclass
class ConversionReport:
    """What the converter changed (goes into the manifest's ``quantization`` record)."""

    keep_fp32_ops: list[str]
    initializers_fp16: int = 0
    initializers_fp32: int = 0
    constants_fp16: int = 0
    casts_inserted: int = 0
    values_clipped: int = 0  # |w| > 65504: clipped to the fp16 range
    values_flushed: int = 0  # 0 < |w| < 2**-24: became 0 in fp16

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _to_fp16(arr: np.ndarray, report: ConversionReport) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float32)
    report.values_clipped += int(np.count_nonzero(np.abs(a) > FP16_MAX))
    tiny = (a != 0) & (np.abs(a) < np.finfo(np.float16).smallest_subnormal)
    report.values_flushed += int(np.count_nonzero(tiny))
    return np.clip(a, -FP16_MAX, FP16_MAX).astype(np.float16)


def _tensor_to_fp16(t: TensorProto, report: ConversionReport) -> TensorProto:
    new = numpy_helper.from_array(_to_fp16(numpy_helper.to_array(t), report), t.name)
    return new


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of every float32 tensor (shape inference fills in the intermediate ones)."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    g = inferred.graph
    names = {v.name for v in list(g.input) + list(g.output) + list(g.value_info)
             if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    names |= {t.name for t in g.initializer if t.data_type == TensorProto.FLOAT}
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                    names.add(node.output[0])
    return names


def convert_model_to_fp16(model: onnx.ModelProto, keep_fp32_ops: Iterable[str] = ()) -> tuple[onnx.ModelProto, ConversionReport]:
    """Return an fp16 copy of ``model`` with float32 graph inputs/outputs, and what changed.

    Subgraphs (If/Loop bodies) are not converted; RawNet2 has none, and a model that does
    is refused rather than half-converted.
    """
    model = copy.deepcopy(model)
    keep = sorted(set(keep_fp32_ops))
    report = ConversionReport(keep_fp32_ops=keep)
    g = model.graph
    for node in g.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise BundleError(f"fp16 conversion does not handle subgraphs (node {node.name} {node.op_type})")
    floats = _float_tensors(model)
    counter = iter(range(1 << 30))
    new_nodes: list[onnx.NodeProto] = []

    def cast(src: str, dst: str, to: int) -> onnx.NodeProto:
        report.casts_inserted += 1
        return helper.make_node("Cast", [src], [dst], to=to, name=f"fp16_cast_{next(counter)}")

    # 1. Graph inputs stay float32: cast them to float16 once, right at the start.
    rename: dict[str, str] = {}
    for inp in g.input:
        if inp.name in floats and inp.name not in {t.name for t in g.initializer}:
            rename[inp.name] = f"{inp.name}__fp16"
            new_nodes.append(cast(inp.name, rename[inp.name], TensorProto.FLOAT16))
    # 2. Graph outputs stay float32: producers write "<name>__fp16", a Cast writes the output.
    out_fix: dict[str, str] = {o.name: f"{o.name}__fp16" for o in g.output if o.name in floats}

    # Initializers only read by kept-fp32 ops (or fp32-only inputs) keep their precision.
    init_names = {t.name for t in g.initializer}
    fp16_readers: set[str] = set()
    for node in g.node:
        fp32_inputs = _FLOAT32_ONLY_INPUTS.get(node.op_type, ())
        if node.op_type in keep:
            continue
        for i, name in enumerate(node.input):
            if name in init_names and i not in fp32_inputs:
                fp16_readers.add(name)
    kept_fp32_inits: set[str] = set()
    new_inits = []
    for t in g.initializer:
        if t.data_type == TensorProto.FLOAT and t.name in fp16_readers:
            new_inits.append(_tensor_to_fp16(t, report))
            report.initializers_fp16 += 1
        else:
            if t.data_type == TensorProto.FLOAT:
                kept_fp32_inits.add(t.name)
                report.initializers_fp32 += 1
            new_inits.append(t)
    # An initializer read by both kinds of node: fp16 copy for fp16 readers is the one above;
    # kept-fp32 readers then get a Cast back (step 3), same as any other fp16 tensor.

    to_fp32_cache: dict[str, str] = {}
    for node in g.node:
        node_inputs = [rename.get(n, n) for n in node.input]
        node_outputs = [out_fix.get(n, n) for n in node.output]
        fp32_inputs = _FLOAT32_ONLY_INPUTS.get(node.op_type, ())
        if node.op_type in keep:
            for i, name in enumerate(node.input):
                if name in rename:  # a graph input: read the original float32 tensor directly
                    node_inputs[i] = name
                elif name and name in floats and name not in kept_fp32_inits:
                    src = node_inputs[i]
                    if src not in to_fp32_cache:
                        to_fp32_cache[src] = f"{src}__fp32_{next(counter)}"
                        new_nodes.append(cast(src, to_fp32_cache[src], TensorProto.FLOAT))
                    node_inputs[i] = to_fp32_cache[src]
            post = []
            for i, name in enumerate(node.output):
                if name and name in floats:
                    tmp = f"{name}__fp32out"
                    post.append(cast(tmp, node_outputs[i], TensorProto.FLOAT16))
                    node_outputs[i] = tmp
            del node.input[:]
            node.input.extend(node_inputs)
            del node.output[:]
            node.output.extend(node_outputs)
            new_nodes.append(node)
            new_nodes.extend(post)
            continue
        for i in fp32_inputs:
            if i < len(node.input) and node.input[i] in floats and node.input[i] not in kept_fp32_inits:
                tmp = f"{node_inputs[i]}__fp32_{next(counter)}"
                new_nodes.append(cast(node_inputs[i], tmp, TensorProto.FLOAT))
                node_inputs[i] = tmp
        for a in node.attribute:
            if node.op_type == "Constant" and a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(_tensor_to_fp16(a.t, report))
                report.constants_fp16 += 1
            elif node.op_type == "ConstantOfShape" and a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(_tensor_to_fp16(a.t, report))
                report.constants_fp16 += 1
            elif node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.FLOAT16
            elif node.op_type in ("EyeLike", "RandomNormal", "RandomUniform", "RandomNormalLike",
                                  "RandomUniformLike", "Multinomial") and a.name == "dtype" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.FLOAT16
        del node.input[:]
        node.input.extend(node_inputs)
        del node.output[:]
        node.output.extend(node_outputs)
        new_nodes.append(node)
    for o in g.output:
        if o.name in out_fix:
            new_nodes.append(cast(out_fix[o.name], o.name, TensorProto.FLOAT))

    del g.node[:]
    g.node.extend(new_nodes)
    del g.initializer[:]
    g.initializer.extend(new_inits)
    del g.value_info[:]  # stale float32 types; onnxruntime re-infers
    onnx.checker.check_model(model)
    return model, report


_NO_KERNEL = re.compile(r"Could not find an implementation for (\w+)\(")


def cpu_session_ops_missing(model: onnx.ModelProto, graph_level: str = "all") -> Optional[str]:
    """The op type onnxruntime's CPU provider cannot place, or None if a session builds."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        onnx.save(model, str(path))
        try:
            make_session(path, SessionSettings(intra_op_threads=1, graph_optimization_level=graph_level))
        except BundleError as exc:
            m = _NO_KERNEL.search(str(exc))
            if m:
                return m.group(1)
            raise
    return None


def convert_for_cpu_fallback(model: onnx.ModelProto, keep_fp32_ops: Iterable[str] = (), auto_keep_fp32: bool = True,
                             graph_level: str = "all") -> tuple[onnx.ModelProto, ConversionReport]:
    """Convert, then (if ``auto_keep_fp32``) keep in fp32 whatever the CPU provider cannot run.

    A Jetson whose GPU providers are missing falls back to the CPU with the same bundle, so
    the fp16 bundle must at least load there.
    """
    keep = set(keep_fp32_ops)
    for _ in range(32):
        converted, report = convert_model_to_fp16(model, keep)
        missing = cpu_session_ops_missing(converted, graph_level) if auto_keep_fp32 else None
        if missing is None:
            return converted, report
        if missing in keep:
            raise BundleError(f"onnxruntime CPU cannot run op {missing} even in float32")
        keep.add(missing)
    raise BundleError("fp16 conversion: too many ops without a CPU kernel")


def synthetic_windows(n: int, window: int, seed: int = 0, sample_rate: int = 16000) -> np.ndarray:
    """Speech-like test windows (harmonics, moving pitch, syllable envelope, noise): numpy only."""
    rng = np.random.default_rng(seed)
    t = np.arange(window) / sample_rate
    out = np.empty((n, window), np.float32)
    for i in range(n):
        f0 = rng.uniform(90, 240)
        pitch = f0 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)))
        phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
        x = sum((1.0 / k) * np.sin(k * phase + rng.uniform(0, 6)) for k in range(1, 20) if k * f0 < sample_rate / 2.2)
        env = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(2, 6) * t + rng.uniform(0, 6))) ** 2
        x = x * env + rng.uniform(0.005, 0.05) * rng.standard_normal(window)
        out[i] = rng.uniform(0.05, 0.9) * x / (np.max(np.abs(x)) + 1e-9)
    return out


@dataclass
class Fp16Parity:
    tolerance: float
    n_random: int
    n_audio: int
    max_abs_diff_random: float
    max_abs_diff_audio: float
    decisions_agree: bool
    graph_optimization_level: str
    reference: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def max_abs_diff(self) -> float:
        return max(self.max_abs_diff_random, self.max_abs_diff_audio)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("extra"))
        return d


def fp16_parity(fp32: Bundle, fp16_model: Path, audio_windows: Optional[np.ndarray] = None, n_random: int = 4,
                n_audio: int = 6, tolerance: float = FP16_TOLERANCE, seed: Optional[int] = None) -> Fp16Parity:
    """Score the same windows with both models on the CPU; compare scores and decisions."""
    m = fp32.manifest
    level = m["onnx"]["graph_optimization_level"]
    window = int(m["windows"]["window"])
    inp, outp = m["onnx"]["input"], m["onnx"]["output"]
    settings = SessionSettings(intra_op_threads=1, graph_optimization_level=level)
    # The device's own scoring path (numpy front end, if the bundle declares one, then the session).
    spec = FrontEndSpec.from_manifest(m.get("frontend"))
    ref = WindowScorer(make_session(fp32.model_path, settings), inp, outp, spec, max_batch=4, where=str(fp32.model_path))
    new = WindowScorer(make_session(fp16_model, settings), inp, outp, spec, max_batch=4, where=str(fp16_model))
    rng = np.random.default_rng(seed)
    rand = (rng.standard_normal((n_random, window)) * rng.uniform(0.01, 0.5, (n_random, 1))).astype(np.float32)
    audio = (np.asarray(audio_windows, np.float32) if audio_windows is not None
             else synthetic_windows(n_audio, window, seed=int(rng.integers(1 << 31)), sample_rate=fp32.sample_rate))

    def scores(scorer: WindowScorer, batch: np.ndarray) -> np.ndarray:
        return scorer.score(batch).astype(np.float64)

    a32, a16 = scores(ref, audio), scores(new, audio)
    r32, r16 = scores(ref, rand), scores(new, rand)
    agree = all(decide(fp32.calibrate(x), fp32.accept_threshold, fp32.reject_threshold)
                == decide(fp32.calibrate(y), fp32.accept_threshold, fp32.reject_threshold)
                for x, y in zip(np.r_[a32, r32], np.r_[a16, r16]))
    if not (np.all(np.isfinite(a16)) and np.all(np.isfinite(r16))):
        raise Fp16ParityError("fp16 model produced non-finite scores (overflow in float16?)")
    return Fp16Parity(tolerance=tolerance, n_random=n_random, n_audio=len(audio),
                      max_abs_diff_random=float(np.max(np.abs(r32 - r16))),
                      max_abs_diff_audio=float(np.max(np.abs(a32 - a16))), decisions_agree=bool(agree),
                      graph_optimization_level=level,
                      reference=f"fp32 bundle {fp32.model_id} (sha256 {fp32.model_sha256[:12]}) via onnxruntime CPU")


def _set_metadata(model: onnx.ModelProto, manifest: dict[str, Any]) -> None:
    """Refresh the edge_detector.* metadata_props so the ONNX file describes itself correctly."""
    keep = [p for p in model.metadata_props if not p.key.startswith("edge_detector.")]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key in ("format", "format_version", "model_id", "model", "audio", "windows", "score", "calibration",
                "thresholds", "source_checkpoint", "quantization", "parity"):
        entry = model.metadata_props.add()
        entry.key = f"edge_detector.{key}"
        entry.value = json.dumps(manifest.get(key))


def convert_bundle(src: Union[str, Path], out: Union[str, Path], tolerance: float = FP16_TOLERANCE,
                   keep_fp32_ops: Iterable[str] = (), auto_keep_fp32: bool = True,
                   audio_windows: Optional[np.ndarray] = None, n_random: int = 4, seed: Optional[int] = None,
                   overwrite: bool = False) -> tuple[Path, dict[str, Any]]:
    """Write the fp16 variant of the fp32 bundle ``src`` into ``out``; return (path, summary).

    Raises BundleError when the source is not an fp32 bundle, OutputRefusedError (exit 2) when
    ``out`` exists and may not be replaced (see edge_detector.output_dir), and
    Fp16ParityError when scores differ by more than ``tolerance`` or any decision differs.
    """
    bundle = load_bundle(src)
    variant = bundle.manifest["model"]["variant"]
    if variant != "fp32":
        raise BundleError(f"{bundle.path}: convert-fp16 needs an fp32 bundle, this one is {variant!r}")
    out = check_output_dir(out, overwrite, inputs=[bundle.path])
    level = bundle.manifest["onnx"]["graph_optimization_level"]
    model = onnx.load(str(bundle.model_path))
    converted, report = convert_for_cpu_fallback(model, keep_fp32_ops, auto_keep_fp32, level)
    with staged_dir(out, prefix=".fp16-") as tmp:
        model_file = bundle.manifest["onnx"]["file"]
        onnx.save(converted, str(tmp / model_file))
        parity = fp16_parity(bundle, tmp / model_file, audio_windows, n_random=n_random, tolerance=tolerance, seed=seed)
        if parity.max_abs_diff > tolerance or not parity.decisions_agree:
            raise Fp16ParityError(
                f"fp16 parity failed: max |score(fp16) - score(fp32)| = {parity.max_abs_diff:.3g} "
                f"(tolerance {tolerance:g}), decisions agree: {parity.decisions_agree}"
            )
        manifest = json.loads(json.dumps(bundle.manifest))
        manifest["model_id"] = f"{bundle.model_id}-fp16"
        manifest["model"]["variant"] = "fp16"
        manifest["quantization"] = {
            "method": "fp16", "tool": "quantize/fp16.py", "io_types": "float32 (Cast at graph input/output)",
            "source_bundle": {"model_id": bundle.model_id, "model_sha256": bundle.model_sha256},
            **report.to_dict(),
        }
        manifest["parity"] = parity.to_dict()
        manifest["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        manifest["files"] = {model_file: {}}
        _set_metadata(converted, manifest)
        onnx.save(converted, str(tmp / model_file))
        write_manifest(tmp, manifest)
        publish(tmp, out)
    result = load_bundle(out)
    summary = {
        "bundle": str(out), "model_id": result.model_id, "variant": "fp16",
        "bytes": result.manifest["files"][result.manifest["onnx"]["file"]]["bytes"],
        "source_bytes": bundle.manifest["files"][bundle.manifest["onnx"]["file"]]["bytes"],
        "parity": result.manifest["parity"], "conversion": report.to_dict(),
    }
    return out, summary
