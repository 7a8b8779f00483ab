"""Inference-only rewrites of a trained RawNet2 that change no output.

- BN after ``conv1`` in each residual block folds into that convolution.
- SELU on the stage-1 feature map (the widest tensor in the graph) is written as
  Relu + Exp (see :func:`selu_vectorised`).
- ``fc1_gru`` and ``fc2_gru`` have no nonlinearity between them, so they fuse into one
  Linear; and since the score is log-softmax index 1 of two logits,
  ``score = -softplus(l0 - l1)`` needs only their difference: the head becomes one
  ``hidden → 1`` Linear followed by ``-softplus``.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .rawnet2 import RawNet2


SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def selu_vectorised(x: torch.Tensor) -> torch.Tensor:
    """``selu(x) = scale * relu(x) + scale * alpha * (exp(min(x, 0)) - 1)``, the same function.

    Why: onnxruntime's CPU ``Selu`` kernel evaluates the exponential element by element;
    its ``Exp`` and ``Relu`` kernels are vectorised. On the ``[8, 21 192]`` map after the
    first BN a one-off comparison here (x86, one thread, the two forms as single-op graphs)
    gave 0.35 ms for ``Selu`` against about 0.2 ms for the written-out form, a few per cent
    of the edge model's whole window. ``min(x, 0)``
    keeps ``exp`` from overflowing where ``x`` is large; the result equals ``F.selu``
    within a few float32 ulps (parity-tested at export).
    """
    negative = torch.clamp(x, max=0.0)
    return SELU_SCALE * torch.relu(x) + (SELU_SCALE * SELU_ALPHA) * (torch.exp(negative) - 1.0)


def fold_bn_into_conv(conv: nn.Conv1d, bn: nn.BatchNorm1d) -> nn.Conv1d:
    """Return a Conv1d equal to ``bn(conv(x))`` in eval mode."""
    fused = copy.deepcopy(conv)
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.weight = nn.Parameter(conv.weight.detach() * scale[:, None, None])
    fused.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias.detach())
    return fused


def fused_score_head(model: RawNet2) -> nn.Linear:
    """One Linear(hidden → 1) giving ``l0 - l1`` of the original two FC layers."""
    w1, b1 = model.fc1_gru.weight.detach(), model.fc1_gru.bias.detach()
    w2, b2 = model.fc2_gru.weight.detach(), model.fc2_gru.bias.detach()
    w = w2 @ w1  # [2, hidden]
    b = w2 @ b1 + b2
    head = nn.Linear(w.shape[1], 1)
    head.weight = nn.Parameter((w[0] - w[1]).unsqueeze(0).clone())
    head.bias = nn.Parameter((b[0] - b[1]).reshape(1).clone())
    return head


class FoldedBlock(nn.Module):
    def __init__(self, block) -> None:
        super().__init__()
        self.conv1 = fold_bn_into_conv(block.conv1, block.bn2)
        self.conv2 = copy.deepcopy(block.conv2)
        self.skip = copy.deepcopy(block.conv_downsample) if block.downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.leaky_relu(self.conv1(x), 0.3))
        identity = self.skip(x) if self.skip is not None else x
        return F.max_pool1d(out + identity, 3)


class FoldedRawNet2(nn.Module):
    """Same function as :class:`RawNet2` (eval mode), outputting the bona fide score [batch]."""

    def __init__(self, model: RawNet2, recurrent: nn.Module | None = None) -> None:
        super().__init__()
        model = model.eval()
        self.config = model.config
        self.sinc = copy.deepcopy(model.sinc)
        self.first_bn = copy.deepcopy(model.first_bn)
        self.blocks = nn.ModuleList(FoldedBlock(b) for b in model.blocks())
        self.attentions = nn.ModuleList(copy.deepcopy(a) for a in model.attentions())
        self.bn_before_gru = copy.deepcopy(model.bn_before_gru)
        self.gru = recurrent if recurrent is not None else copy.deepcopy(model.gru)
        self.head = fused_score_head(model)
        self.eval()

    def front(self, waveform: torch.Tensor) -> torch.Tensor:
        """Waveform [batch, samples] → pooled |sinc| features [batch, filters, (samples - k + 1) // 3]."""
        return F.max_pool1d(torch.abs(self.sinc(waveform.unsqueeze(1))), 3)

    def body(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled sinc features → bona fide score: the graph when the front end runs in numpy."""
        x = selu_vectorised(self.first_bn(features))
        for block, att in zip(self.blocks, self.attentions):
            x = block(x)
            s = torch.sigmoid(att(x.mean(dim=-1))).unsqueeze(-1)
            x = x * s + s
        x = F.selu(self.bn_before_gru(x)).transpose(1, 2)
        out, _ = self.gru(x)
        return -F.softplus(self.head(out[:, -1, :])).squeeze(-1)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.body(self.front(waveform))


class FoldedBody(nn.Module):
    """The graph after the front end (input: pooled sinc features), for a numpy front end.

    Exported alone when the device computes the sinc stage with an FFT
    (:mod:`edge_detector.frontend`): the ONNX model then starts at ``first_bn``.
    """

    def __init__(self, folded: FoldedRawNet2) -> None:
        super().__init__()
        self.folded = folded.eval()
        self.config = folded.config
        self.eval()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.folded.body(features)
