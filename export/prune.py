"""Structured pruning of RawNet2: smaller tensors, same class, kept weights copied exactly.

Unstructured sparsity buys nothing in onnxruntime (DESIGN.md section 4); only removing
whole channels, filters, hidden units and layers makes the exported tensors smaller and
the per-window MACs fewer. A pruned model is a plain :class:`~export.rawnet2.RawNet2`
with smaller :class:`~export.rawnet2.RawNet2Config` sizes, so it saves, loads, trains
and exports through the same code as any other checkpoint.

Prunable groups (a *group* is a set of indices that must be removed together because
the network ties them):

``stage1``
    The 20 sinc filters, ``first_bn`` and the residual stream of blocks 0-1 (block0 has
    no skip convolution, and the residual adds and the ``x*s + s`` scaling are per
    channel), so stage-1 channel ``c`` *is* sinc filter ``c``. Removing it slices
    first_bn, block0/1 conv1 inputs and conv2 outputs, fc_attention0/1 rows and columns,
    block1/2 ``bn1`` and block2 conv1 / conv_downsample inputs. The kept filters stay the
    original ones (``RawNet2Config.sinc_total`` / ``sinc_keep``).
``stage2``
    The residual stream of blocks 2-5: block2 conv2 / conv_downsample outputs, block3-5
    conv1 inputs and conv2 outputs, fc_attention2-5, ``bn_before_gru`` and the input
    columns of GRU layer 0.
``inner0`` .. ``inner5``
    The conv1 width of each block (conv1 rows, bn2, conv2 input columns): free.
``gru0`` .. ``gru{L-1}``
    Hidden units of each GRU layer. Unit ``k`` of a layer with ``H`` units owns rows
    ``k, H+k, 2H+k`` (r, z, n gates) of its ``weight_ih``/``weight_hh``/biases and column
    ``k`` of its ``weight_hh``; its consumer is the next layer's ``weight_ih`` (columns)
    or ``fc1_gru`` for the last layer. ``nn.GRU`` has one hidden size, so every layer
    keeps the same number of units (which ones may differ per layer).
``fc1``
    ``fc1_gru`` rows and ``fc2_gru`` columns.

GRU *layers* are dropped from the top; ``fc1_gru`` then reads the new last layer. That
changes the function (unlike every width cut, which only removes what the criterion
judged least useful), so :func:`refit_head` re-fits ``fc1_gru`` by least squares to
reproduce the old head's activations before fine-tuning.

Importance criteria, both returning one score per index of every group:

* :func:`taylor_importance` (default, data-driven): each group gets a gate ``m`` (ones)
  multiplied into the *inputs of every layer that mixes channels* (convolutions,
  fc_attention, GRU matrices, fc2). Setting ``m_c = 0`` is then exactly removing index
  ``c`` (the per-channel operations between — residual adds, scaling, BN, pooling, the
  GRU's own ``z*h`` carry — never let a channel reach another one), so the first-order
  estimate of the loss change is ``|dL/dm_c|`` (Molchanov et al., "Importance
  Estimation for Neural Network Pruning", CVPR 2019, with the gate on the group rather
  than on one layer). The derivative is taken per example and its absolute value
  averaged, on a few batches of real training crops with the model in eval mode (the
  mode it is deployed in, BN on running statistics), using the training loss. One
  forward/backward per batch; the GRU is unrolled (about 29 steps per window) so the
  recurrent consumer is gated too. Cheap next to fine-tuning: 4 batches of 16 crops of the
  full model took about 30 s on one (shared) CPU thread.
* :func:`norm_importance` (data-free fallback): group magnitude as in Torch-Pruning's
  group norm (Fang et al., "DepGraph", CVPR 2023): for every tensor slice an index owns
  or feeds (conv/linear/GRU rows and columns, BN effective scale ``|gamma|/sqrt(var+eps)``)
  the L2 norm, divided by that tensor's mean so no layer dominates by its shape, summed
  over the group. Ignores the data, so it cannot see that e.g. a filter's band carries
  no signal; use it when no audio is at hand.
"""
from __future__ import annotations

import json
import math
import shutil
import tempfile
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge_detector.metrics import compute_eer
from edge_detector.sincbank import odd_kernel_size
from edge_detector.windows import WINDOW_SAMPLES

from .dataset import Corpus, random_crop
from .rawnet2 import RawNet2, RawNet2Config, count_parameters, load_checkpoint, save_checkpoint
from .scoring import score_signals
from .train import TrainConfig, Trainer

#: (dim, group, gate_expanded): dimension ``dim`` of a tensor is indexed by ``group``;
#: ``gate_expanded`` means the dimension holds the r/z/n gate blocks of a GRU layer.
Coupling = dict[str, list[tuple[int, str, bool]]]

BN_PARAMS = ("weight", "bias", "running_mean", "running_var")


# ----------------------------------------------------------------------------------------
# Groups and their coupling
# ----------------------------------------------------------------------------------------
def group_sizes(cfg: RawNet2Config) -> dict[str, int]:
    """Current size of every prunable group of a model of ``cfg`` sizes."""
    sizes = {"stage1": cfg.stage1_channels, "stage2": cfg.stage2_channels, "fc1": cfg.fc1_dim}
    sizes.update({f"inner{i}": cfg.inner(i) for i in range(6)})
    sizes.update({f"gru{l}": cfg.gru_hidden for l in range(cfg.gru_layers)})
    return sizes


def coupling(cfg: RawNet2Config, include_unused_bn1: bool = True) -> Coupling:
    """Which dimension of which state_dict tensor belongs to which group.

    The single source of truth for slicing (:func:`apply_plan`) and for the norm
    criterion: a tie forgotten here would show up as a shape error on strict loading.
    ``bn1`` of blocks 1-5 is computed-and-unused in the official model; it is sliced
    with its input stage but left out of the norm criterion (it cannot matter).
    """
    c: Coupling = {}

    def add(key: str, dim: int, group: str, gates: bool = False) -> None:
        c.setdefault(key, []).append((dim, group, gates))

    for p in BN_PARAMS:
        add(f"first_bn.{p}", 0, "stage1")
    for i in range(6):
        b = f"block{i}.0"
        gin = "stage1" if i <= 2 else "stage2"
        gout = "stage1" if i <= 1 else "stage2"
        inner = f"inner{i}"
        if i > 0 and include_unused_bn1:
            for p in BN_PARAMS:
                add(f"{b}.bn1.{p}", 0, gin)
        add(f"{b}.conv1.weight", 0, inner)
        add(f"{b}.conv1.weight", 1, gin)
        add(f"{b}.conv1.bias", 0, inner)
        for p in BN_PARAMS:
            add(f"{b}.bn2.{p}", 0, inner)
        add(f"{b}.conv2.weight", 0, gout)
        add(f"{b}.conv2.weight", 1, inner)
        add(f"{b}.conv2.bias", 0, gout)
        if i == 2:
            add(f"{b}.conv_downsample.weight", 0, "stage2")
            add(f"{b}.conv_downsample.weight", 1, "stage1")
            add(f"{b}.conv_downsample.bias", 0, "stage2")
        add(f"fc_attention{i}.0.weight", 0, gout)
        add(f"fc_attention{i}.0.weight", 1, gout)
        add(f"fc_attention{i}.0.bias", 0, gout)
    for p in BN_PARAMS:
        add(f"bn_before_gru.{p}", 0, "stage2")
    for l in range(cfg.gru_layers):
        g = f"gru{l}"
        add(f"gru.weight_ih_l{l}", 0, g, True)
        add(f"gru.weight_ih_l{l}", 1, "stage2" if l == 0 else f"gru{l - 1}")
        add(f"gru.weight_hh_l{l}", 0, g, True)
        add(f"gru.weight_hh_l{l}", 1, g)
        add(f"gru.bias_ih_l{l}", 0, g, True)
        add(f"gru.bias_hh_l{l}", 0, g, True)
    add("fc1_gru.weight", 0, "fc1")
    add("fc1_gru.weight", 1, f"gru{cfg.gru_layers - 1}")
    add("fc1_gru.bias", 0, "fc1")
    add("fc2_gru.weight", 1, "fc1")
    return c


# ----------------------------------------------------------------------------------------
# Plans and slicing
# ----------------------------------------------------------------------------------------
@dataclass
class PrunePlan:
    """Indices to keep in every group (sorted, into the *current* model) and the GRU depth.

    A group missing from ``keep`` is kept whole. GRU layers ``>= gru_layers`` are dropped
    (their ``gru{l}`` entries are ignored); ``None`` keeps them all.
    """

    keep: dict[str, list[int]] = field(default_factory=dict)
    gru_layers: Optional[int] = None

    @classmethod
    def identity(cls, cfg: RawNet2Config) -> "PrunePlan":
        return cls({g: list(range(n)) for g, n in group_sizes(cfg).items()}, cfg.gru_layers)

    def resolved(self, cfg: RawNet2Config) -> tuple[dict[str, list[int]], int]:
        """Full keep lists for every group of the pruned topology, validated."""
        layers = cfg.gru_layers if self.gru_layers is None else int(self.gru_layers)
        if not 1 <= layers <= cfg.gru_layers:
            raise ValueError(f"gru_layers must be in [1, {cfg.gru_layers}], got {layers}")
        sizes = group_sizes(cfg)
        unknown = set(self.keep) - set(sizes)
        if unknown:
            raise ValueError(f"unknown groups in plan: {sorted(unknown)}")
        keep: dict[str, list[int]] = {}
        for g, n in sizes.items():
            if g.startswith("gru") and int(g[3:]) >= layers:
                continue
            idx = [int(i) for i in self.keep.get(g, range(n))]
            if not idx:
                raise ValueError(f"group {g}: must keep at least one index")
            if any(b <= a for a, b in zip(idx, idx[1:])) or idx[0] < 0 or idx[-1] >= n:
                raise ValueError(f"group {g}: keep indices must be strictly increasing in [0, {n}), got {idx}")
            keep[g] = idx
        widths = {len(keep[f"gru{l}"]) for l in range(layers)}
        if len(widths) != 1:
            raise ValueError(f"nn.GRU has one hidden size: every kept layer must keep as many units ({widths})")
        return keep, layers


def pruned_config(cfg: RawNet2Config, plan: PrunePlan) -> RawNet2Config:
    """The sizes of ``cfg`` after ``plan``; sinc bands are mapped back to the original grid."""
    keep, layers = plan.resolved(cfg)
    s1 = keep["stage1"]
    if len(s1) == cfg.sinc_filters:
        total, bands = cfg.sinc_total, cfg.sinc_keep  # nothing removed: config unchanged
    elif cfg.sinc_keep is None:
        total, bands = cfg.sinc_filters, list(s1)
    else:
        total, bands = cfg.sinc_total, [cfg.sinc_keep[i] for i in s1]
    s2 = len(keep["stage2"])
    outs = [len(s1), len(s1), s2, s2, s2, s2]
    inner = [len(keep[f"inner{i}"]) for i in range(6)]
    return RawNet2Config(
        sinc_filters=len(s1), sinc_kernel=cfg.sinc_kernel, sample_rate=cfg.sample_rate,
        stage1_channels=len(s1), stage2_channels=s2,
        inner_channels=None if inner == outs else inner,
        gru_hidden=len(keep["gru0"]), gru_layers=layers, fc1_dim=len(keep["fc1"]), n_classes=cfg.n_classes,
        sinc_total=total, sinc_keep=None if bands is None else list(bands),
    )


def _index(idx: Sequence[int], gates: bool, full: int) -> torch.Tensor:
    t = torch.as_tensor(list(idx), dtype=torch.long)
    if gates:  # unit k of a GRU layer with `full` units owns rows k, H+k, 2H+k
        t = torch.cat([t, t + full, t + 2 * full])
    return t


def apply_plan(model: RawNet2, plan: PrunePlan) -> RawNet2:
    """A NEW RawNet2 holding only the kept indices; every kept weight copied bit-exactly.

    The new model is built from :func:`pruned_config` and loaded strictly, so a slicing
    mistake is a shape error, never a silently wrong model. Buffers such as BN
    ``num_batches_tracked`` are copied; the sinc bank is rebuilt from the kept bands.
    """
    cfg = model.config
    keep, layers = plan.resolved(cfg)
    new_cfg = pruned_config(cfg, plan)
    new_model = RawNet2(new_cfg)
    wanted = new_model.state_dict()
    plan_c = coupling(new_cfg)  # topology after layer dropping: fc1 reads gru{layers-1}
    full = cfg.gru_hidden
    old = model.state_dict()
    new_state: dict[str, torch.Tensor] = {}
    for key in wanted:
        t = old[key]
        for dim, group, gates in plan_c.get(key, []):
            t = t.index_select(dim, _index(keep[group], gates, full))
        new_state[key] = t.detach().clone()
    new_model.load_state_dict(new_state, strict=True)
    new_model.train(model.training)
    return new_model


def prune_sinc(model: RawNet2, keep: Sequence[int]) -> RawNet2:
    """Keep sinc filters (= stage-1 channels) ``keep`` (indices into this model's filters)."""
    return apply_plan(model, PrunePlan({"stage1": list(keep)}))


def prune_stage2(model: RawNet2, keep: Sequence[int]) -> RawNet2:
    """Keep residual channels ``keep`` of blocks 2-5 (and bn_before_gru / GRU input columns)."""
    return apply_plan(model, PrunePlan({"stage2": list(keep)}))


def prune_inner(model: RawNet2, block: int, keep: Sequence[int]) -> RawNet2:
    """Keep conv1 output channels ``keep`` of residual block ``block``."""
    return apply_plan(model, PrunePlan({f"inner{block}": list(keep)}))


def prune_gru_units(model: RawNet2, keep_per_layer: Sequence[Sequence[int]]) -> RawNet2:
    """Keep hidden units ``keep_per_layer[l]`` of GRU layer ``l`` (equal counts per layer)."""
    return apply_plan(model, PrunePlan({f"gru{l}": list(k) for l, k in enumerate(keep_per_layer)}))


def prune_gru_layers(model: RawNet2, n_layers: int) -> RawNet2:
    """Drop GRU layers above ``n_layers``; fc1_gru then reads layer ``n_layers - 1``.

    Changes the function: call :func:`refit_head` and/or fine-tune afterwards.
    """
    return apply_plan(model, PrunePlan({}, n_layers))


def prune_fc1(model: RawNet2, keep: Sequence[int]) -> RawNet2:
    """Keep fc1_gru output units ``keep`` (fc1 rows and fc2 columns)."""
    return apply_plan(model, PrunePlan({"fc1": list(keep)}))


# ----------------------------------------------------------------------------------------
# Gated forward pass (the Taylor criterion and the exactness tests use it)
# ----------------------------------------------------------------------------------------
def _gate(x: torch.Tensor, m: Optional[torch.Tensor]) -> torch.Tensor:
    """Multiply channel dim 1 of ``x`` ([B, C, T] or [B, C]) by per-example gates [B, C]."""
    if m is None:
        return x
    return x * (m.unsqueeze(-1) if x.dim() == 3 else m)


def gated_forward(model: RawNet2, x: torch.Tensor, gates: Optional[dict[str, torch.Tensor]] = None) -> torch.Tensor:
    """RawNet2's forward with optional per-example gates ``[B, group size]`` per group.

    Each group's gate multiplies the input of every layer that mixes that group's
    indices with others — and nothing else — so a gate of 0 at index ``c`` computes
    exactly what the model with ``c`` pruned away computes (tested). The GRU is unrolled
    with PyTorch's equations (``linear_before_reset``) so that its recurrent input can be
    gated. With no gates it equals ``model(x)`` up to float rounding (tested).
    """
    g = gates or {}
    h = model.selu(model.first_bn(F.max_pool1d(torch.abs(model.front(x)), 3)))
    for i, (block, att) in enumerate(zip(model.blocks(), model.attentions())):
        gin = g.get("stage1" if i <= 2 else "stage2")
        gout = g.get("stage1" if i <= 1 else "stage2")
        xin = _gate(h, gin)  # what conv1 / conv_downsample see
        out = block.lrelu(block.bn2(block.conv1(xin)))
        out = block.conv2(_gate(out, g.get(f"inner{i}")))
        identity = block.conv_downsample(xin) if block.downsample else h  # the add is per channel
        y = block.mp(out + identity)
        s = torch.sigmoid(att(_gate(y.mean(dim=-1), gout))).unsqueeze(-1)
        h = y * s + s
    seq = _gate(model.selu(model.bn_before_gru(h)), g.get("stage2")).transpose(1, 2)
    gru = model.gru
    inp = seq
    for l in range(gru.num_layers):
        w_ih, w_hh = getattr(gru, f"weight_ih_l{l}"), getattr(gru, f"weight_hh_l{l}")
        b_ih, b_hh = getattr(gru, f"bias_ih_l{l}"), getattr(gru, f"bias_hh_l{l}")
        m = g.get(f"gru{l}")
        gi_all = F.linear(inp, w_ih, b_ih)  # input projections of all steps at once
        hcur = inp.new_zeros(inp.shape[0], gru.hidden_size)
        outs = []
        for t in range(inp.shape[1]):
            gi_r, gi_z, gi_n = gi_all[:, t].chunk(3, dim=1)
            gh_r, gh_z, gh_n = F.linear(_gate(hcur, m), w_hh, b_hh).chunk(3, dim=1)
            r = torch.sigmoid(gi_r + gh_r)
            z = torch.sigmoid(gi_z + gh_z)
            n = torch.tanh(gi_n + r * gh_n)
            hcur = (1 - z) * n + z * hcur  # the carry is the unit's own: not gated
            outs.append(hcur)
        inp = _gate(torch.stack(outs, dim=1).transpose(1, 2), m).transpose(1, 2)
    last = inp[:, -1, :]
    f1 = _gate(model.fc1_gru(last), g.get("fc1"))
    return F.log_softmax(model.fc2_gru(f1), dim=1)


# ----------------------------------------------------------------------------------------
# Importance
# ----------------------------------------------------------------------------------------
Importance = dict[str, torch.Tensor]


def crop_batches(
    corpus: Corpus, n_batches: int, batch_size: int, seed: int = 0, window: int = WINDOW_SAMPLES
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n_batches`` class-balanced batches of random training crops (the importance data).

    Balanced so that the ranking does not depend on the corpus's class mix (ASVspoof LA
    train is about 9:1 spoof, the dev corpus about even): each class gets half the crops,
    and the training loss weights then apply as in training.
    """
    rng = np.random.default_rng(seed)
    labels = corpus.labels
    by_class = [np.flatnonzero(labels == c) for c in (0, 1)]
    by_class = [c for c in by_class if len(c)]
    nc = len(by_class)
    counts = [batch_size // nc + (1 if k < batch_size % nc else 0) for k in range(nc)]
    out = []
    for _ in range(n_batches):
        rows = np.concatenate([rng.choice(c, m, replace=len(c) < m) for c, m in zip(by_class, counts)])
        x = np.stack([random_crop(corpus.signals[i], rng, window) for i in rows]).astype(np.float32)
        out.append((torch.from_numpy(x), torch.from_numpy(labels[rows])))
    return out


def taylor_importance(
    model: RawNet2,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    class_weights: Sequence[float] = (0.1, 0.9),
) -> Importance:
    """Mean over examples of ``|dL_n/dm_c|`` for every group gate (see the module doc)."""
    was_training = model.training
    model.eval()
    cfg = model.config
    sizes = group_sizes(cfg)
    w = torch.tensor(list(class_weights), dtype=torch.float32)
    acc = {gname: torch.zeros(n, dtype=torch.float64) for gname, n in sizes.items()}
    count = 0
    try:
        for xb, yb in batches:
            gates = {gname: torch.ones(len(xb), n, requires_grad=True) for gname, n in sizes.items()}
            logp = gated_forward(model, xb, gates)
            # per-example losses summed: in eval mode the examples do not interact, so
            # the gate gradient of row n is dL_n/dm exactly
            loss = (F.nll_loss(logp, yb, reduction="none") * w[yb]).sum()
            names = list(gates)
            grads = torch.autograd.grad(loss, [gates[k] for k in names])
            for k, gr in zip(names, grads):
                acc[k] += gr.detach().abs().sum(dim=0).double()
            count += len(xb)
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("taylor_importance needs at least one batch")
    return {k: (v / count).float() for k, v in acc.items()}


def norm_importance(model: RawNet2) -> Importance:
    """Group magnitude: per-tensor-normalised L2 norms of every slice an index owns or feeds."""
    cfg = model.config
    sizes = group_sizes(cfg)
    state = model.state_dict()
    scores = {gname: torch.zeros(n, dtype=torch.float64) for gname, n in sizes.items()}
    for key, entries in coupling(cfg, include_unused_bn1=False).items():
        if key.endswith((".bias", "running_mean", "running_var")) or "bias_" in key:
            continue
        t = state[key].detach().double()
        if key.endswith(".weight") and t.dim() == 1:  # BatchNorm: the effective scale
            prefix = key[: -len("weight")]
            t = t.abs() / torch.sqrt(state[prefix + "running_var"].double() + 1e-5)
        for dim, gname, gates in entries:
            n = sizes[gname]
            moved = t.movedim(dim, 0)
            if gates:
                per = moved.reshape(3, n, -1).permute(1, 0, 2).reshape(n, -1).norm(dim=1)
            else:
                per = moved.reshape(n, -1).norm(dim=1)
            scores[gname] += per / (per.mean() + 1e-12)
    return {k: v.float() for k, v in scores.items()}


def top_indices(scores: torch.Tensor, k: int) -> list[int]:
    """The ``k`` highest-scoring indices, ascending (ties broken by lower index)."""
    s = scores.detach().cpu().numpy().astype(np.float64)
    order = np.lexsort((np.arange(len(s)), -s))
    return sorted(int(i) for i in order[:k])


def choose_plan(model: RawNet2, importance: Importance, sizes: "Sizes") -> PrunePlan:
    """Keep the top-scoring indices of every group down to ``sizes``.

    When layers are dropped, the units of the new top layer are ranked by the scores
    they had while feeding the dropped layer: the best estimate available before the
    head is re-fitted.
    """
    cfg = model.config
    target = sizes.as_groups(cfg)
    keep = {}
    for gname, n in target.items():
        if gname.startswith("gru") and int(gname[3:]) >= sizes.gru_layers:
            continue
        keep[gname] = top_indices(importance[gname], n)
    return PrunePlan(keep, sizes.gru_layers)


# ----------------------------------------------------------------------------------------
# Re-fitting the head after dropping GRU layers
# ----------------------------------------------------------------------------------------
@torch.no_grad()
def _gru_sequence(model: RawNet2, x: torch.Tensor) -> torch.Tensor:
    out, _ = model.gru(model.encode(model.front(x)))
    return out


@torch.no_grad()
def refit_head(
    old: RawNet2, new: RawNet2, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    fc1_keep: Optional[Sequence[int]] = None, ridge: float = 1e-3,
) -> float:
    """Least-squares ``fc1_gru`` of ``new`` so it reproduces ``old``'s fc1 activations.

    After the top GRU layers are dropped, fc1 reads a layer it was never trained on: its
    output is arbitrary and fine-tuning starts from a broken head. fc1 and fc2 are
    linear with nothing in between, so matching old fc1 activations (rows ``fc1_keep``)
    from the new last-layer states is a ridge regression (as in channel-pruning
    reconstruction, He et al. ICCV 2017). Every time step's state is a sample (about 29
    per window), which makes the system well determined with a few batches. Returns the
    relative reconstruction error of the fit.
    """
    old.eval()
    new.eval()
    feats, targets = [], []
    for xb, _ in batches:
        h_new = _gru_sequence(new, xb)
        t_old = old.fc1_gru(_gru_sequence(old, xb))
        if fc1_keep is not None:
            t_old = t_old[..., list(fc1_keep)]
        feats.append(h_new.reshape(-1, h_new.shape[-1]).double())
        targets.append(t_old.reshape(-1, t_old.shape[-1]).double())
    X = torch.cat(feats)
    Y = torch.cat(targets)
    Xa = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], dim=1)
    gram = Xa.T @ Xa
    lam = ridge * torch.trace(gram) / gram.shape[0]
    reg = torch.eye(gram.shape[0], dtype=X.dtype) * lam
    reg[-1, -1] = 0.0  # do not shrink the bias
    sol = torch.linalg.solve(gram + reg, Xa.T @ Y)  # [H+1, F]
    new.fc1_gru.weight.copy_(sol[:-1].T.float())
    new.fc1_gru.bias.copy_(sol[-1].float())
    resid = Y - Xa @ sol
    return float(resid.norm() / (Y.norm() + 1e-12))


# ----------------------------------------------------------------------------------------
# Sizes, cost and schedules
# ----------------------------------------------------------------------------------------
TARGET_KEYS = ("sinc", "stage2", "inner1", "inner2", "gru_hidden", "gru_layers", "fc1")


@dataclass
class Sizes:
    """Target sizes of one pruning step (``inner`` = conv1 width of each of the 6 blocks)."""

    sinc: int
    stage2: int
    inner: list[int]
    gru_hidden: int
    gru_layers: int
    fc1: int

    @classmethod
    def of(cls, cfg: RawNet2Config) -> "Sizes":
        return cls(cfg.stage1_channels, cfg.stage2_channels, [cfg.inner(i) for i in range(6)],
                   cfg.gru_hidden, cfg.gru_layers, cfg.fc1_dim)

    def as_groups(self, cfg: RawNet2Config) -> dict[str, int]:
        g = {"stage1": self.sinc, "stage2": self.stage2, "fc1": self.fc1}
        g.update({f"inner{i}": self.inner[i] for i in range(6)})
        g.update({f"gru{l}": self.gru_hidden for l in range(cfg.gru_layers)})
        return g

    def to_dict(self) -> dict[str, Any]:
        return {"sinc": self.sinc, "stage2": self.stage2, "inner": list(self.inner),
                "gru_hidden": self.gru_hidden, "gru_layers": self.gru_layers, "fc1": self.fc1}


def parse_target(text: str, cfg: RawNet2Config) -> Sizes:
    """``sinc=12,stage2=64,gru_hidden=256,gru_layers=1,fc1=256`` → final Sizes.

    Missing keys stay as they are. ``inner1`` / ``inner2`` set the conv1 width of blocks
    0-1 / 2-5; when not given, each block's conv1 width shrinks by the same ratio as its
    stage (keeping the shape of the original design, where inner = stage width).
    """
    now = Sizes.of(cfg)
    vals: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if "=" not in part:
            raise ValueError(f"--target entries look like key=value, got {part!r}")
        k, v = (s.strip() for s in part.split("=", 1))
        if k not in TARGET_KEYS:
            raise ValueError(f"unknown target key {k!r} (known: {', '.join(TARGET_KEYS)})")
        try:
            vals[k] = int(v)
        except ValueError:
            raise ValueError(f"--target {k} needs an integer, got {v!r}") from None
    sinc = vals.get("sinc", now.sinc)
    stage2 = vals.get("stage2", now.stage2)
    inner = []
    for i in range(6):
        key, stage_new, stage_old = ("inner1", sinc, now.sinc) if i < 2 else ("inner2", stage2, now.stage2)
        inner.append(vals[key] if key in vals else max(1, round(now.inner[i] * stage_new / stage_old)))
    out = Sizes(sinc, stage2, inner, vals.get("gru_hidden", now.gru_hidden), vals.get("gru_layers", now.gru_layers),
                vals.get("fc1", now.fc1))
    for name, a, b in _pairs(out, now):
        if not 1 <= a <= b:
            raise ValueError(f"target {name}={a} must be between 1 and the current size {b}")
    return out


def _pairs(a: Sizes, b: Sizes) -> list[tuple[str, int, int]]:
    rows = [("sinc", a.sinc, b.sinc), ("stage2", a.stage2, b.stage2), ("gru_hidden", a.gru_hidden, b.gru_hidden),
            ("gru_layers", a.gru_layers, b.gru_layers), ("fc1", a.fc1, b.fc1)]
    rows += [(f"inner[{i}]", a.inner[i], b.inner[i]) for i in range(6)]
    return rows


def make_schedule(start: Sizes, target: Sizes, steps: int) -> list[Sizes]:
    """``steps`` intermediate sizes from ``start`` to ``target`` (the last one is ``target``).

    Widths shrink geometrically (the same *fraction* removed per step, so no step is far
    more destructive than another); GRU layers drop linearly, at the earliest steps
    (a dropped layer is the largest single change, so it gets the most fine-tuning
    after it).
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")

    def geo(a: int, b: int, k: int) -> int:
        return b if k == steps else max(b, min(a, int(round(a * (b / a) ** (k / steps)))))

    out = []
    for k in range(1, steps + 1):
        layers = max(target.gru_layers, start.gru_layers - math.ceil((start.gru_layers - target.gru_layers) * k / steps))
        out.append(Sizes(geo(start.sinc, target.sinc, k), geo(start.stage2, target.stage2, k),
                         [geo(a, b, k) for a, b in zip(start.inner, target.inner)],
                         geo(start.gru_hidden, target.gru_hidden, k), layers, geo(start.fc1, target.fc1, k)))
    return out


def estimate_macs(cfg: RawNet2Config, window: int = WINDOW_SAMPLES) -> dict[str, int]:
    """Multiply-accumulates per window, by part (direct-convolution sinc front end).

    Counts conv/linear/GRU matrix products only (pooling, BN, activations are cheap
    elementwise work). The sinc figure is for the 1025-tap direct convolution; an FFT
    front end costs far less but still scales with the number of filters.
    """
    k = odd_kernel_size(cfg.sinc_kernel)
    length = window - k + 1
    macs = {"sinc": cfg.sinc_filters * k * length}
    t = length // 3
    blocks = att = 0
    for i, (cin, cout) in enumerate(cfg.block_io):
        inner = cfg.inner(i)
        per_t = inner * cin * 3 + cout * inner * 3 + (cout * cin if cin != cout else 0)
        blocks += per_t * t
        att += cout * cout
        t //= 3
    h, layers = cfg.gru_hidden, cfg.gru_layers
    gru = t * sum(3 * h * ((cfg.stage2_channels if l == 0 else h) + h) for l in range(layers))
    macs.update({"blocks": blocks, "attention": att, "gru": gru, "head": h * cfg.fc1_dim + cfg.fc1_dim * cfg.n_classes,
                 "gru_steps": t})
    macs["total"] = macs["sinc"] + blocks + att + gru + macs["head"]
    macs["total_without_sinc"] = macs["total"] - macs["sinc"]
    return macs


def size_report(model: RawNet2) -> dict[str, Any]:
    """Parameters (the fixed sinc bank is a buffer, not counted, not stored) and cost."""
    params = count_parameters(model)
    gru = sum(p.numel() for p in model.gru.parameters())
    return {"parameters": params, "gru_parameters": gru, "fp32_mb": round(params * 4 / 1e6, 3),
            "int8_mb_estimate": round(params / 1e6, 3), "macs": estimate_macs(model.config)}


# ----------------------------------------------------------------------------------------
# The schedule: prune, re-fit, fine-tune, evaluate, save
# ----------------------------------------------------------------------------------------
def _has_both_classes(corpus: Optional[Corpus]) -> bool:
    if corpus is None or not corpus.entries:
        return False
    labels = corpus.labels
    return bool(labels.min() != labels.max())


def corpus_eer(model: RawNet2, corpus: Optional[Corpus]) -> Optional[float]:
    """Official first-window EER on ``corpus`` (None when it lacks one of the classes)."""
    return scores_eer(score_signals(model, corpus.signals), corpus) if _has_both_classes(corpus) else None


def scores_eer(scores: np.ndarray, corpus: Optional[Corpus]) -> Optional[float]:
    """EER of ``scores`` given for ``corpus`` (None when it lacks one of the classes)."""
    if not _has_both_classes(corpus):
        return None
    labels = corpus.labels
    eer, _ = compute_eer(scores[labels == 1], scores[labels == 0])
    return float(eer)


def prune_step(
    model: RawNet2, sizes: Sizes, criterion: str, batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    class_weights: Sequence[float] = (0.1, 0.9), refit: bool = True,
) -> tuple[RawNet2, dict[str, Any]]:
    """Score, choose, slice (and re-fit the head when GRU layers go). No fine-tuning here."""
    if criterion == "taylor":
        importance = taylor_importance(model, batches, class_weights)
    elif criterion == "norm":
        importance = norm_importance(model)
    else:
        raise ValueError(f"criterion must be 'taylor' or 'norm', got {criterion!r}")
    plan = choose_plan(model, importance, sizes)
    new = apply_plan(model, plan)
    info: dict[str, Any] = {"criterion": criterion}
    keep, _ = plan.resolved(model.config)
    removed = {g: sorted(set(range(n)) - set(keep.get(g, []))) for g, n in group_sizes(model.config).items()
               if g in keep and len(keep[g]) < n}
    info["removed_counts"] = {g: len(v) for g, v in removed.items()}
    if new.config.gru_layers != model.config.gru_layers:
        info["gru_layers_dropped"] = [model.config.gru_layers, new.config.gru_layers]
    if new.config.sinc_keep is not None:
        info["sinc_keep"] = list(new.config.sinc_keep)
    if refit and new.config.gru_layers < model.config.gru_layers and batches:
        info["head_refit_rel_error"] = refit_head(model, new, batches, fc1_keep=keep["fc1"])
    return new, info


def run_schedule(
    model: RawNet2,
    target: Sizes,
    steps: int,
    out_dir: str | Path,
    train: Corpus,
    val: Corpus,
    heldout: Optional[Corpus] = None,
    finetune: Optional[TrainConfig] = None,
    criterion: str = "taylor",
    importance_batches: int = 4,
    importance_batch_size: int = 16,
    refit: bool = True,
    augment_fn: Optional[Callable[[np.ndarray], np.ndarray]] = None,
    source: Optional[str] = None,
    keep_work: bool = False,
    seed: int = 1234,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
    teacher: Optional[nn.Module] = None,
) -> list[dict[str, Any]]:
    """Prune to ``target`` in ``steps`` steps, fine-tuning with :class:`export.train.Trainer`
    after each (``finetune`` is its TrainConfig; ``epochs=0`` skips it).

    Writes OUT/step_{k}.pt (best fine-tuning epoch by validation EER), OUT/final.pt and
    OUT/prune_log.json (rewritten after every step, so an interrupted run keeps its log).
    Returns the log records (step 0 = the starting model).

    With a ``teacher`` (normally the full model the pruned one came from) each step's
    fine-tuning learns the teacher's outputs as ``finetune`` says (distill_* fields), and
    ``finetune.select_by='fidelity'`` keeps the epoch that ranks validation files most
    like the teacher, so the pruned model drifts as little as possible from it.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Fine-tuning scratch: OUT/work when it is kept, else a new hidden folder that is removed at
    # the end (never a fixed name: OUT may be an existing folder with a "work" of the user's in it).
    work_root = out / "work" if keep_work else Path(tempfile.mkdtemp(prefix=".prune-work-", dir=str(out)))
    ft = finetune or TrainConfig(epochs=1)
    schedule = make_schedule(Sizes.of(model.config), target, steps)
    records: list[dict[str, Any]] = []

    def write_log() -> None:
        (out / "prune_log.json").write_text(json.dumps({"source": source, "criterion": criterion,
                                                        "target": target.to_dict(), "steps": records}, indent=2))

    rec0 = {"step": 0, "sizes": Sizes.of(model.config).to_dict(), "config": model.config.to_dict(),
            **size_report(model), "val_eer": corpus_eer(model, val), "heldout_eer": corpus_eer(model, heldout)}
    records.append(rec0)
    log(json.dumps({k: rec0[k] for k in ("step", "parameters", "val_eer", "heldout_eer")}))
    write_log()
    current = model.eval()
    for k, sizes in enumerate(schedule, start=1):
        t0 = time.time()
        batches = crop_batches(train, importance_batches, importance_batch_size, seed=seed + k) \
            if (criterion == "taylor" or refit) else []
        pruned, info = prune_step(current, sizes, criterion, batches, ft.class_weights, refit)
        val_scores = score_signals(pruned, val.signals)
        rec: dict[str, Any] = {"step": k, "sizes": sizes.to_dict(), "config": pruned.config.to_dict(), **info,
                               **size_report(pruned), "val_eer_pruned": scores_eer(val_scores, val)}
        if ft.epochs > 0:
            work = work_root / f"step_{k}"
            cfg_k = TrainConfig(**{**ft.__dict__, "seed": ft.seed + k})
            trainer = Trainer(pruned, train, val, work, cfg_k, augment_fn=augment_fn, log=log, teacher=teacher)
            # Fine-tuning must earn its place: the pruned-but-untuned weights are the
            # checkpoint to beat (on a small validation set fine-tuning can make it worse).
            val0 = trainer.validate(val_scores)
            save_checkpoint(pruned, str(work / "best.pt"), meta={"epoch": 0, **val0})
            trainer.best_eer, trainer.best_key = val0["val_eer"], trainer.selection_key(val0)
            if "val_spearman_teacher" in val0:
                rec["val_spearman_teacher_pruned"] = val0["val_spearman_teacher"]
            result = trainer.fit()
            pruned, _ = load_checkpoint(str(work / "best.pt"))
            rec["finetune"] = [{kk: h[kk] for kk in ("epoch", "loss", "val_eer", "val_spearman_teacher") if kk in h}
                               for h in result["history"]]
            if not keep_work:
                shutil.rmtree(work, ignore_errors=True)
        rec["val_eer"] = corpus_eer(pruned, val)
        rec["heldout_eer"] = corpus_eer(pruned, heldout)
        rec["seconds"] = round(time.time() - t0, 1)
        meta = {"pruned_from": source, "prune_step": k, "criterion": criterion, "val_eer": rec["val_eer"],
                "heldout_eer": rec["heldout_eer"]}
        save_checkpoint(pruned, str(out / f"step_{k}.pt"), meta=meta)
        rec["checkpoint"] = f"step_{k}.pt"
        records.append(rec)
        write_log()
        log(json.dumps({kk: rec.get(kk) for kk in ("step", "parameters", "val_eer_pruned", "val_eer", "heldout_eer",
                                                    "seconds")}))
        current = pruned.eval()
    save_checkpoint(current, str(out / "final.pt"), meta={"pruned_from": source, "prune_step": len(schedule),
                                                         "criterion": criterion, "val_eer": records[-1]["val_eer"],
                                                         "heldout_eer": records[-1]["heldout_eer"]})
    if not keep_work:
        shutil.rmtree(work_root, ignore_errors=True)
    return records
