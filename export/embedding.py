"""The penultimate embedding as a second ONNX output, and the final layer as numbers in the manifest.

Why: few-shot adaptation on the device (`edge-detect adapt`, :mod:`edge_detector.adaptation`)
refits the final layer in numpy, so the device needs the input of that layer (the
*embedding*) and the layer itself, without onnx or torch.

Which embedding: in an edge graph ``fc1_gru`` and ``fc2_gru`` are fused into one
``hidden → 1`` Gemm (:func:`export.fold.fused_score_head`), so ``fc1``'s output no longer
exists. The embedding is therefore the **GRU's last hidden state** (last layer, last time
step, ``[batch, gru_hidden]``), the input of that Gemm, and the final layer is the affine
map from it::

    score = -softplus(W·e + c) = log sigmoid(weight·e + bias) = log P(bona fide)
    with weight = -W, bias = -c   (W·e + c = logit(spoof) - logit(bona fide))

The graph is exported as before; :func:`add_embedding_output` then finds that Gemm by
walking back from the ``score`` output (through Neg / Squeeze / Softplus), names its input
as the graph output ``embedding`` (an Identity node) and reads ``weight`` and ``bias`` from
its initialisers. :func:`check_embedding` is the parity gate for it: the device path's
embedding must equal PyTorch's GRU state, and the recorded head applied to it must give
the graph's own score, each within the export tolerance. Older bundles without the output
keep working; only `adapt` needs it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edge_detector.errors import EdgeDetectorError
from edge_detector.head import EMBEDDING_OUTPUT, LinearHead, head_manifest

#: Ops between the final Gemm and the ``score`` output that change no value's meaning.
_PASS_THROUGH = ("Neg", "Squeeze", "Unsqueeze", "Reshape", "Flatten", "Identity", "Softplus")


class EmbeddingExportError(EdgeDetectorError):
    """The graph's tail is not ``score = -softplus(Gemm(e))``, or the embedding fails its parity check."""

    kind = "embedding_export_failed"


@dataclass(frozen=True)
class GraphHead:
    """The final Gemm of an exported graph: its input tensor and the head it computes."""

    embedding_tensor: str
    head: LinearHead


def _constant(graph: Any, name: str) -> np.ndarray:
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and name in node.output:
            return numpy_helper.to_array(next(a.t for a in node.attribute if a.name == "value"))
    raise EmbeddingExportError(f"the final Gemm's parameter {name!r} is not a constant of the graph")


def find_graph_head(model: Any, score_output: str = "score") -> GraphHead:
    """Walk back from ``score_output`` to the final Gemm; return its input and the head it computes.

    Raises EmbeddingExportError unless the tail is exactly one Gemm (``[batch, H] → [batch, 1]``,
    transA = 0), one Softplus and an odd number of Neg, joined by shape-only ops.
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    tensor, seen = score_output, []
    while True:
        node = producer.get(tensor)
        if node is None:
            raise EmbeddingExportError(f"no Gemm found before output {score_output!r} (ops seen: {seen})")
        if node.op_type == "Gemm":
            break
        if node.op_type not in _PASS_THROUGH:
            raise EmbeddingExportError(f"unexpected op {node.op_type} between the final layer and {score_output!r}")
        seen.append(node.op_type)
        tensor = node.input[0]
    if seen.count("Softplus") != 1 or seen.count("Neg") % 2 != 1:
        raise EmbeddingExportError(f"the score is not -softplus(final layer) (ops after the Gemm: {seen})")
    attrs = {a.name: (a.i if a.type == a.INT else a.f) for a in node.attribute}
    if int(attrs.get("transA", 0)) != 0:
        raise EmbeddingExportError("the final Gemm transposes its input (transA=1); not a [batch, H] embedding")
    b = _constant(graph, node.input[1]).astype(np.float64)
    w = b.T if int(attrs.get("transB", 0)) else b  # [H, 1]
    c = _constant(graph, node.input[2]).astype(np.float64).reshape(-1) if len(node.input) > 2 and node.input[2] \
        else np.zeros(1)
    if w.ndim != 2 or w.shape[1] != 1 or c.size != 1:
        raise EmbeddingExportError(f"the final Gemm maps to {w.shape[1:]} values, expected one logit difference")
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    return GraphHead(node.input[0], LinearHead(weight=-alpha * w[:, 0], bias=float(-beta * c[0])))


def add_embedding_output(onnx_path: Path, name: str = EMBEDDING_OUTPUT) -> LinearHead:
    """Add graph output ``name`` = the final Gemm's input ``[batch, H]`` (in place); return the head.

    The scores the graph computes are unchanged: one Identity node and one output are added.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(onnx_path))
    if any(o.name == name for o in model.graph.output):
        raise EmbeddingExportError(f"{onnx_path}: the graph already has an output named {name!r}")
    found = find_graph_head(model)
    model.graph.node.append(helper.make_node("Identity", [found.embedding_tensor], [name], name=f"{name}_output"))
    model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", found.head.dim]))
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))
    return found.head


def reference_embeddings(model: Any, windows: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """PyTorch's embedding of ``[n, samples]`` windows: the last GRU layer's state at the last step, ``[n, H]``."""
    import torch

    out = []
    model = model.eval()
    with torch.no_grad():
        for i in range(0, len(windows), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(windows[i : i + batch_size], dtype=np.float32))
            seq, _ = model.gru(model.encode(model.front(x)))
            out.append(seq[:, -1, :].float().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.gru_hidden), np.float32)


def check_embedding(model: Any, onnx_path: Path, head: LinearHead, audio_windows: Optional[np.ndarray],
                    frontend: Any, tolerance: float, window: int, n_random: int = 4,
                    graph_level: str = "all", seed: Optional[int] = None) -> dict[str, Any]:
    """Parity gate for the embedding output; returns the manifest's ``parity.embedding`` record.

    On random windows (``seed``; None = fresh ones) and on ``audio_windows`` (``[n, window]`` float32): max |Δ| of
    the device path's embedding against :func:`reference_embeddings`, and of ``head``
    applied to it against the graph's own ``score`` output. Raises EmbeddingExportError
    when either exceeds ``tolerance``.
    """
    from edge_detector.detector import WindowScorer
    from edge_detector.head import EmbeddingScorer
    from edge_detector.session import SessionSettings, make_session

    sess = make_session(onnx_path, SessionSettings(graph_optimization_level=graph_level))
    base = WindowScorer(sess, "features" if frontend is not None else "waveform", "score", frontend, max_batch=8,
                        where=str(onnx_path))
    runner = EmbeddingScorer(base, EMBEDDING_OUTPUT)
    rng = np.random.default_rng(seed)
    batch = (rng.standard_normal((n_random, window)) * rng.uniform(0.01, 0.5, (n_random, 1))).astype(np.float32)
    if audio_windows is not None and len(audio_windows):
        batch = np.concatenate([batch, np.asarray(audio_windows, dtype=np.float32)])
    graph_score, emb = runner.outputs(batch)
    d_emb = float(np.max(np.abs(emb - reference_embeddings(model, batch))))
    d_head = float(np.max(np.abs(head.score(emb) - graph_score)))
    if max(d_emb, d_head) > tolerance:
        raise EmbeddingExportError(
            f"embedding parity failed: max |embedding(onnxruntime) - embedding(PyTorch)| = {d_emb:.3g}, "
            f"max |head(embedding) - score| = {d_head:.3g}, tolerance {tolerance:g}")
    return {"n": int(len(batch)), "max_abs_diff_embedding": d_emb, "max_abs_diff_head_score": d_head,
            "reference": "PyTorch RawNet2 GRU state (last layer, last step)"}


def add_embedding(model: Any, onnx_path: Path, audio_windows: Optional[np.ndarray], frontend: Any,
                  tolerance: float, window: int, seed: Optional[int] = None) -> dict[str, Any]:
    """:func:`add_embedding_output` then :func:`check_embedding`; returns the manifest additions.

    The result has ``onnx`` (``embedding_output``, ``embedding_dim``: merged into the
    manifest's ``onnx``), ``head`` (the final layer, see :func:`edge_detector.head.head_manifest`)
    and ``parity`` (merged into ``parity.embedding``); apply it with :func:`record_embedding`.
    """
    head = add_embedding_output(onnx_path)
    parity = check_embedding(model, onnx_path, head, audio_windows, frontend, tolerance, window, seed=seed)
    return {"onnx": {"embedding_output": EMBEDDING_OUTPUT, "embedding_dim": head.dim},
            "head": head_manifest(head, EMBEDDING_OUTPUT,
                                  "RawNet2 fc1_gru and fc2_gru fused (export/fold.py): the graph's final Gemm"),
            "parity": parity}


def record_embedding(manifest: dict[str, Any], added: dict[str, Any]) -> None:
    """Merge :func:`add_embedding`'s result into a bundle manifest (in place)."""
    manifest["onnx"].update(added["onnx"])
    manifest["head"] = added["head"]
    manifest["parity"]["embedding"] = added["parity"]


def upgrade_bundle(src: Path, out: Path, overwrite: bool = False) -> Path:
    """Copy a bundle exported without the embedding output and add it (training side: needs onnx).

    For bundles whose checkpoint is not at hand: the graph gets the ``embedding`` output
    (:func:`add_embedding_output`; its scores are unchanged, its weights identical, so the
    model id stays), the manifest gets ``onnx.embedding_output``/``embedding_dim`` and
    ``head``. Without PyTorch to compare with, ``parity.embedding`` records only how well
    the recorded head reproduces the graph's score on random windows (raises
    EmbeddingExportError above the manifest's parity tolerance).
    """
    import copy
    import shutil
    import tempfile

    from edge_detector.bundle import load_bundle
    from edge_detector.commands.calibrate import _write_copy
    from edge_detector.detector import WindowScorer
    from edge_detector.head import EmbeddingScorer
    from edge_detector.output_dir import check_output_dir
    from edge_detector.session import make_session

    from .onnx_meta import add_onnx_metadata

    bundle = load_bundle(src)
    out = check_output_dir(out, overwrite, inputs=[bundle.path])
    m = copy.deepcopy(bundle.manifest)
    with tempfile.TemporaryDirectory(prefix="upgrade-") as tmp:
        model_path = Path(tmp) / m["onnx"]["file"]
        shutil.copy2(bundle.model_path, model_path)
        head = add_embedding_output(model_path)
        base = WindowScorer(make_session(model_path), m["onnx"]["input"], m["onnx"]["output"], bundle.frontend,
                            max_batch=8, where=str(model_path))
        rng = np.random.default_rng(0)
        window = int(m["windows"]["window"])
        batch = (rng.standard_normal((6, window)) * rng.uniform(0.01, 0.5, (6, 1))).astype(np.float32)
        score, emb = EmbeddingScorer(base, EMBEDDING_OUTPUT).outputs(batch)
        d_head = float(np.max(np.abs(head.score(emb) - score)))
        if d_head > float(m["parity"]["tolerance"]):
            raise EmbeddingExportError(f"{src}: the head read from the graph misses its score by {d_head:.3g}")
        record_embedding(m, {"onnx": {"embedding_output": EMBEDDING_OUTPUT, "embedding_dim": head.dim},
                             "head": head_manifest(head, EMBEDDING_OUTPUT, "the graph's final Gemm (added to an "
                                                   "existing bundle by export.embedding.upgrade_bundle)"),
                             "parity": {"n": 6, "max_abs_diff_head_score": d_head, "max_abs_diff_embedding": None,
                                        "reference": "none (no checkpoint): head vs the graph's own score only"}})
        add_onnx_metadata(model_path, m)
        _write_copy(bundle, m, str(out), extra={model_path.name: model_path.read_bytes()}, prefix=".upgrade-")
    return out
