"""Cheaper, approximate AASIST / AASIST-L encoders for the edge trade-off curve (training side, torch).

Every function returns a *copy* of the model with its encoder's first two residual blocks made
cheaper; none of them is exact, the benchmark (:mod:`aasist_edge`) measures what each costs in
fidelity to the official model. Why blocks 0-1: on one thread they run on the two widest maps
(``[32, 23, 21 490]`` and ``[32, 23, 7 163]`` for AASIST-L) and take about 70 % of a window
(``benchmarks/results/aasist/profile_aasist-l_fp32.json``).

- :func:`low_rank`: the widest convolutions as a rank-``r`` convolution + 1×1 convolution,
  fitted to their outputs on calibration windows (PCA of the output channels).
- :func:`prune_channels`: structured channel pruning by L1 norm (Li et al., "Pruning Filters for
  Efficient ConvNets", ICLR 2017): the inner channels of blocks 0-1 (``conv1`` → ``bn2`` →
  ``conv2``) and, optionally, the residual channels the two blocks share (block 0's output =
  block 1's input and output, read by block 2).
- :func:`coarse_time`: the 1×3 time max-pools that end blocks 0 .. K-1 (K = 1..3) moved in front
  of block 0, so block i < K runs on a time axis 3^(K-i) times shorter. The sinc map is then
  pooled 3·3^K (9, 27, 81) in time by the numpy front end instead of 3; ``|x|``, the first BatchNorm (one
  channel, positive scale in the published weights) and SELU are monotonic, so the move
  past them is exact and only the move past the block's convolutions approximates.
  The later blocks, the graph and the output see maps of exactly the original shapes.
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from export.aasist import AASIST, ResBlock2d

#: Block 0's second and block 1's two convolutions: ≈ 45 % of the one-thread time (profile).
LOW_RANK_LAYERS = (("encoder.0.0", "conv2"), ("encoder.1.0", "conv1"), ("encoder.1.0", "conv2"))


def _block(model: AASIST, i: int) -> ResBlock2d:
    return model.encoder[i][0]


def low_rank(model: AASIST, calib: np.ndarray, rank: int) -> AASIST:
    """A copy of ``model`` whose :data:`LOW_RANK_LAYERS` are rank-``rank`` factorisations fitted to
    their outputs on the ``[n, window]`` float32 ``calib`` windows (no training).

    With ``U`` the top ``rank`` principal directions of a layer's output channels (mean ``mu``),
    ``y ≈ mu + U Uᵀ (W*x + b - mu)``: a convolution to ``rank`` channels followed by a 1×1
    convolution back (cost ``rank / C`` of the original plus the 1×1).
    """
    m = copy.deepcopy(model).eval()
    convs = {f"{b}.{c}": getattr(m.get_submodule(b), c) for b, c in LOW_RANK_LAYERS}
    stats: dict[str, list[Any]] = {}

    def hook(name: str) -> Callable[..., None]:
        def collect(_mod: Any, _inp: Any, out: torch.Tensor) -> None:
            y = out.detach().transpose(0, 1).reshape(out.shape[1], -1).double()
            s = stats.setdefault(name, [0, 0.0, 0.0])
            s[0] += y.shape[1]
            s[1] = s[1] + y.sum(1)
            s[2] = s[2] + y @ y.T
        return collect

    handles = [conv.register_forward_hook(hook(name)) for name, conv in convs.items()]
    with torch.no_grad():
        for row in calib:
            m(torch.from_numpy(np.ascontiguousarray(row[None], dtype=np.float32)))  # the hooks collect
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


def _l1_keep(weights: list[torch.Tensor], dim: int, keep: int) -> torch.Tensor:
    """Indices (ascending) of the ``keep`` channels along ``dim`` with the largest summed L1 norm."""
    score = sum(w.detach().abs().transpose(0, dim).reshape(w.shape[dim], -1).sum(1) for w in weights)
    return torch.sort(torch.topk(score, keep).indices).values


def _slice_conv(conv: nn.Conv2d, out_idx: torch.Tensor | None, in_idx: torch.Tensor | None) -> nn.Conv2d:
    w, b = conv.weight.detach(), conv.bias.detach()
    if out_idx is not None:
        w, b = w[out_idx], b[out_idx]
    if in_idx is not None:
        w = w[:, in_idx]
    new = nn.Conv2d(w.shape[1], w.shape[0], conv.kernel_size, padding=conv.padding)
    with torch.no_grad():
        new.weight.copy_(w)
        new.bias.copy_(b)
    return new


def _slice_bn(bn: nn.BatchNorm2d, idx: torch.Tensor) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(len(idx), eps=bn.eps, momentum=bn.momentum)
    with torch.no_grad():
        new.weight.copy_(bn.weight.detach()[idx])
        new.bias.copy_(bn.bias.detach()[idx])
        new.running_mean.copy_(bn.running_mean[idx])
        new.running_var.copy_(bn.running_var[idx])
    return new.eval()


def prune_channels(model: AASIST, inner: int, residual: int | None = None) -> AASIST:
    """A copy of ``model`` with blocks 0-1 narrowed by L1 norm (no training).

    ``inner``: channels kept between ``conv1`` and ``conv2`` of blocks 0 and 1 (ranked by the L1
    norm of ``conv1``'s filters, Li et al. 2017). ``residual``: channels kept in the stream the two
    blocks share (block 0's ``conv2`` / ``conv_downsample`` outputs, block 1's input, identity skip
    and output, block 2's ``conv1`` / ``conv_downsample`` inputs), ranked by the L1 norm of the
    weights that read them (block 1's ``conv1``, block 2's ``conv1`` and ``conv_downsample``);
    None keeps all. Raises ValueError when block 1 is not an identity-skip block of block 0's width.
    """
    m = copy.deepcopy(model).eval()
    b0, b1, b2 = _block(m, 0), _block(m, 1), _block(m, 2)
    if hasattr(b1, "conv_downsample") or b1.conv1.in_channels != b0.conv2.out_channels:
        raise ValueError("prune_channels expects block 1 to keep block 0's width (identity skip)")
    res = None
    if residual is not None:
        readers = [b1.conv1.weight, b2.conv1.weight] + ([b2.conv_downsample.weight]
                                                         if hasattr(b2, "conv_downsample") else [])
        res = _l1_keep(readers, 1, residual)
    for blk, first in ((b0, True), (b1, False)):
        mid = _l1_keep([blk.conv1.weight], 0, inner)
        blk.conv1 = _slice_conv(blk.conv1, mid, None if first else res)
        blk.bn2 = _slice_bn(blk.bn2, mid)
        blk.conv2 = _slice_conv(blk.conv2, res, mid)
        if first:
            blk.conv_downsample = _slice_conv(blk.conv_downsample, res, None)
        elif res is not None:
            blk.bn1 = nn.BatchNorm2d(len(res)).eval()  # computed by no one (see ResBlock2d); kept for shape only
    if res is not None:
        b2.conv1 = _slice_conv(b2.conv1, None, res)
        if hasattr(b2, "conv_downsample"):
            b2.conv_downsample = _slice_conv(b2.conv_downsample, None, res)
    return m


class _PoolFirst(nn.Module):
    """A residual block whose trailing 1×3 time max-pool has been moved in front of it (the
    pooling happens earlier, in the numpy front end); computes the block without pooling."""

    def __init__(self, block: ResBlock2d) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        y = b.conv2(b.selu(b.bn2(b.conv1(x))))
        return y + (b.conv_downsample(x) if hasattr(b, "conv_downsample") else x)


def coarse_time(model: AASIST, blocks: int) -> tuple[AASIST, int]:
    """A copy of ``model`` whose first ``blocks`` (1 to 3) encoder blocks skip their time pool, and
    the time pool factor the numpy front end must then use (``3 · 3**blocks``).

    The front end's pooled map is then exactly as long as the original's after those blocks
    (``floor(64 472 / 9) = floor(floor(64 472 / 3) / 3)``; likewise for 27 and 81), so every
    later shape is the original one. Raises ValueError for ``blocks`` outside 1..3 or when the first
    BatchNorm's scale is not positive (the move past it would then not be exact).
    """
    if blocks not in (1, 2, 3):
        raise ValueError("coarse_time moves the pools of the first 1 to 3 blocks")
    if float(model.first_bn.weight.detach().min()) <= 0:
        raise ValueError("first BatchNorm has a non-positive scale: max-pool does not commute with it")
    m = copy.deepcopy(model).eval()
    for i in range(blocks):
        m.encoder[i][0] = _PoolFirst(m.encoder[i][0])
    return m, 3 * 3 ** blocks


def encoder_macs(model: AASIST, features_time: int, freq: int = 23) -> int:
    """Multiply-accumulates of the encoder's convolutions for one window (for the curve's x-axis
    companion): traced with forward hooks on a zero input of the body's pooled-map shape."""
    total = [0]

    def hook(mod: nn.Conv2d, _inp: Any, out: torch.Tensor) -> None:
        k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
        total[0] += int(out.numel()) * k

    hs = [mod.register_forward_hook(hook) for mod in model.encoder.modules() if isinstance(mod, nn.Conv2d)]
    with torch.no_grad():
        model.encoder(torch.zeros(1, 1, freq, features_time))
    for h in hs:
        h.remove()
    return total[0]


__all__ = ["LOW_RANK_LAYERS", "low_rank", "prune_channels", "coarse_time", "encoder_macs"]
