"""The final layer as numbers: the embedding output, the shipped head, and an adapted head file.

A bundle exported with the embedding output (:mod:`export.embedding`) states in its
manifest::

    onnx.embedding_output   "embedding": graph output [batch, H], the input of the final layer
    onnx.embedding_dim      H
    head                    {"weight": [H floats], "bias": float, ...}: the graph's final layer

with ``score = log sigmoid(weight · embedding + bias) = log P(bona fide)``, the same raw
score the graph's ``score`` output gives. A bundle written by `edge-detect adapt` keeps
the model file byte-identical and adds ``adapted_head.npz`` (listed in ``files``, so its
sha256 is verified on load) and ``adapted_head`` in the manifest: the runtime then takes
the embedding output and applies that head in numpy (:func:`with_adapted_head`, called
by the ONNX families' scorer factory), so the ONNX file is never rewritten on the device.
Numpy only.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

import numpy as np

from .errors import BundleError

if TYPE_CHECKING:
    from .bundle import Bundle

EMBEDDING_OUTPUT = "embedding"
ADAPTED_HEAD_FILE = "adapted_head.npz"
FORMULA = "score = log sigmoid(weight . embedding + bias) = log P(bona fide)"


@dataclass(frozen=True)
class LinearHead:
    """``u = weight · e + bias`` (the bona fide logit) and ``score = log sigmoid(u)``.

    ``weight``: ``[H]`` float64; ``bias``: float.
    """

    weight: np.ndarray
    bias: float

    def __post_init__(self) -> None:
        w = np.asarray(self.weight, dtype=np.float64).reshape(-1)
        object.__setattr__(self, "weight", w)
        object.__setattr__(self, "bias", float(self.bias))
        if w.size == 0 or not np.all(np.isfinite(w)) or not np.isfinite(self.bias):
            raise ValueError("a head needs a non-empty, finite weight vector and a finite bias")

    @property
    def dim(self) -> int:
        return int(self.weight.size)

    @property
    def theta(self) -> np.ndarray:
        """``[H + 1]``: weight then bias (the parameter vector the adaptation fits)."""
        return np.append(self.weight, self.bias)

    @classmethod
    def from_theta(cls, theta: np.ndarray) -> "LinearHead":
        theta = np.asarray(theta, dtype=np.float64)
        return cls(theta[:-1], float(theta[-1]))

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        """Bona fide logits ``[n]`` (float64) of ``[n, H]`` embeddings."""
        e = np.asarray(embeddings, dtype=np.float64)
        if e.ndim != 2 or e.shape[1] != self.dim:
            raise ValueError(f"embeddings of shape {e.shape} do not fit a head of dimension {self.dim}")
        return e @ self.weight + self.bias

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """Raw scores ``log sigmoid(u) = -log(1 + exp(-u))`` ``[n]`` float64, computed without overflow."""
        return -np.logaddexp(0.0, -self.logits(embeddings))


def head_manifest(head: LinearHead, embedding_output: str, layer: str) -> dict[str, Any]:
    """The manifest's ``head`` object for ``head`` (weights written as JSON numbers, exact in float64)."""
    return {"input": embedding_output, "dim": head.dim, "weight": [float(v) for v in head.weight],
            "bias": head.bias, "formula": FORMULA, "layer": layer}


def embedding_output(manifest: Mapping[str, Any]) -> Optional[str]:
    """The name of the embedding output, or None for a bundle exported without one."""
    name = manifest.get("onnx", {}).get("embedding_output") if isinstance(manifest.get("onnx"), Mapping) else None
    return name if isinstance(name, str) and name else None


def shipped_head(manifest: Mapping[str, Any], where: str = "bundle") -> LinearHead:
    """The graph's own final layer as recorded in the manifest. Raises BundleError (exit 7) when absent.

    A bundle exported before the embedding output existed has neither; re-export its
    checkpoint with `edge-detect export` to get both.
    """
    entry = manifest.get("head")
    if embedding_output(manifest) is None or not isinstance(entry, Mapping):
        raise BundleError(f"{where}: this bundle has no embedding output and final-layer record "
                          "(onnx.embedding_output, head): it was exported before adaptation existed. Re-export its "
                          "checkpoint with `edge-detect export` (training side) to adapt it; it still scores as before")
    try:
        head = LinearHead(np.asarray(entry["weight"], dtype=np.float64), float(entry["bias"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{where}: manifest field 'head' is malformed ({exc})") from None
    dim = manifest["onnx"].get("embedding_dim")
    if dim is not None and dim != head.dim:
        raise BundleError(f"{where}: head has {head.dim} weights but onnx.embedding_dim is {dim}")
    return head


def head_to_bytes(head: LinearHead) -> bytes:
    """``.npz`` bytes holding ``weight`` [H] and ``bias`` [1] (float64), for :data:`ADAPTED_HEAD_FILE`."""
    buf = io.BytesIO()
    np.savez(buf, weight=head.weight, bias=np.array([head.bias]))
    return buf.getvalue()


def load_head_file(path: Path) -> LinearHead:
    """Read a head written by :func:`head_to_bytes`. Raises BundleError when unreadable or malformed."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return LinearHead(data["weight"], float(np.asarray(data["bias"]).reshape(-1)[0]))
    except (OSError, KeyError, ValueError, IndexError) as exc:
        raise BundleError(f"{path}: not a readable head file ({exc})") from None


def adapted_head(bundle: "Bundle") -> Optional[LinearHead]:
    """The head `edge-detect adapt` stored in ``bundle`` (None when the bundle has none).

    Raises BundleError when the manifest names a head file that ``files`` does not list
    (so its sha256 would go unchecked), that is malformed, or whose size does not match
    the embedding output.
    """
    entry = bundle.manifest.get("adapted_head")
    if entry is None:
        return None
    where = str(bundle.path)
    if not isinstance(entry, Mapping) or not isinstance(entry.get("file"), str):
        raise BundleError(f"{where}: manifest field 'adapted_head' needs a 'file'")
    if entry["file"] not in bundle.manifest["files"]:
        raise BundleError(f"{where}: the adapted head {entry['file']!r} has no entry in 'files' (unverified)")
    if embedding_output(bundle.manifest) is None:
        raise BundleError(f"{where}: an adapted head needs onnx.embedding_output")
    head = load_head_file(bundle.path / entry["file"])
    dim = bundle.manifest["onnx"].get("embedding_dim")
    if dim is not None and dim != head.dim:
        raise BundleError(f"{where}: adapted head has {head.dim} weights but onnx.embedding_dim is {dim}")
    return head


class EmbeddingScorer:
    """A :class:`~edge_detector.detector.WindowScorer`'s session run for the embedding output.

    ``outputs(batch)`` gives the graph's own scores and the embeddings; ``score(batch)``
    (the family Scorer interface) gives ``head.score(embedding)`` when a head is set, else
    the graph's scores. ``max_batch`` bounds the windows per session call.
    """

    def __init__(self, base: Any, embedding: str, head: Optional[LinearHead] = None) -> None:
        self.base = base
        self.embedding = embedding
        self.head = head
        self.session = base.session
        self.max_batch = base.max_batch
        names = [o.name for o in self.session.get_outputs()]
        if embedding not in names:
            raise BundleError(f"model has outputs {names}; the manifest's embedding output {embedding!r} is not one")

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[n, window]`` raw windows → (graph scores ``[n]`` float32, embeddings ``[n, H]`` float32)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        scores, embs = [], []
        step = max(1, int(self.max_batch))
        for i in range(0, len(batch), step):
            feed = {self.base.input_name: self.base.model_inputs(batch[i : i + step])}
            s, e = self.session.run([self.base.output_name, self.embedding], feed)
            scores.append(np.asarray(s, dtype=np.float32).reshape(-1))
            embs.append(np.asarray(e, dtype=np.float32).reshape(len(scores[-1]), -1))
        if not scores:
            return np.zeros(0, np.float32), np.zeros((0, 0), np.float32)
        return np.concatenate(scores), np.concatenate(embs)

    def score(self, batch: np.ndarray) -> np.ndarray:
        graph_scores, emb = self.outputs(batch)
        if self.head is None:
            return graph_scores
        return self.head.score(emb).astype(np.float32)


def with_adapted_head(bundle: "Bundle", scorer: Any) -> Any:
    """``scorer`` itself, or (for a bundle written by `adapt`) one that scores through its adapted head."""
    head = adapted_head(bundle)
    if head is None:
        return scorer
    return EmbeddingScorer(scorer, embedding_output(bundle.manifest) or EMBEDDING_OUTPUT, head)
