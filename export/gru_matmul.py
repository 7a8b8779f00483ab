"""PyTorch's GRU rewritten with MatMul and elementwise ops, so onnxruntime can quantize it.

Why: onnxruntime's quantizer has no GRU kernel (microsoft/onnxruntime issue 9796), and
RawNet2's GRU holds about 92 % of the weights. Written as MatMul + Sigmoid/Tanh/Add/Mul,
the weight products become ordinary MatMul nodes that static QDQ quantization covers.

Shape of the computation (per layer, gate order r, z, n as in ``nn.GRU``)::

    gi   = x @ W_ih^T + b_ih + [b_hr, b_hz, 0]     one MatMul for *all* time steps
    gh_t = h_{t-1} @ W_hh^T                        one MatMul per step (skipped at t=0: h_0 = 0)
    r, z = sigmoid(gi_t[:2H] + gh_t[:2H])
    n    = tanh(gi_t[2H:] + r * (gh_t[2H:] + b_hn))   ("linear_before_reset": PyTorch semantics)
    h_t  = n + z * (h_{t-1} - n)                   (= (1 - z) * n + z * h_{t-1})

The r/z halves of the recurrent bias are added once to the input projection (they are
plain sums); ``b_hn`` must stay inside the reset product. The recurrence is a Python loop,
so tracing unrolls it over the sequence length seen at export (RawNet2: 29 steps, fixed
by the 64 600-sample window). Only the final hidden state of the last layer is returned,
because that is all RawNet2 reads: the last layer's per-step outputs are never stacked.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


class MatMulGRU(nn.Module):
    """Drop-in for ``out, _ = gru(x); out[:, -1, :]`` built from an ``nn.GRU``'s weights.

    ``forward`` returns ``(last, None)`` where ``last`` is ``[batch, 1, hidden]`` for a
    batch-first GRU (``[1, batch, hidden]`` otherwise): the output sequence cut to its
    final step, which is what the caller indexes with ``[:, -1, :]``.
    """

    def __init__(self, gru: nn.GRU) -> None:
        super().__init__()
        if gru.bidirectional:
            raise ValueError("MatMulGRU supports unidirectional GRUs only")
        if getattr(gru, "proj_size", 0):
            raise ValueError("MatMulGRU does not support proj_size")
        if not gru.bias:
            raise ValueError("MatMulGRU expects a GRU with biases (bias=True)")
        self.hidden_size = int(gru.hidden_size)
        self.num_layers = int(gru.num_layers)
        self.batch_first = bool(gru.batch_first)
        h = self.hidden_size
        for layer in range(self.num_layers):
            w_ih = getattr(gru, f"weight_ih_l{layer}").detach().float()
            w_hh = getattr(gru, f"weight_hh_l{layer}").detach().float()
            b_ih = getattr(gru, f"bias_ih_l{layer}").detach().float()
            b_hh = getattr(gru, f"bias_hh_l{layer}").detach().float()
            b_in = b_ih.clone()
            b_in[: 2 * h] += b_hh[: 2 * h]
            # Stored transposed so the exported graph has MatMul(x, W) with W a plain
            # initializer: no Transpose node per step, and one shared weight tensor that
            # the quantizer converts once.
            self.register_buffer(f"w_ih_{layer}", w_ih.t().contiguous())
            self.register_buffer(f"w_hh_{layer}", w_hh.t().contiguous())
            self.register_buffer(f"b_in_{layer}", b_in.contiguous())
            self.register_buffer(f"b_hn_{layer}", b_hh[2 * h :].clone().contiguous())

    def _layer(self, x: torch.Tensor, layer: int, keep_sequence: bool) -> torch.Tensor:
        """Run one layer over ``x`` [batch, time, in]; the sequence, or only the last state.

        Gate slices use ``split``/``unbind`` (one Split node each in ONNX) rather than
        indexing, which the exporter writes as a Slice plus four Constants per use.
        """
        h_size = self.hidden_size
        w_hh = getattr(self, f"w_hh_{layer}")
        b_hn = getattr(self, f"b_hn_{layer}")
        gi = torch.matmul(x, getattr(self, f"w_ih_{layer}")) + getattr(self, f"b_in_{layer}")
        gi_rz, gi_n = torch.split(gi, [2 * h_size, h_size], dim=2)
        steps_rz, steps_n = torch.unbind(gi_rz, dim=1), torch.unbind(gi_n, dim=1)
        outputs: list[torch.Tensor] = []
        h: Optional[torch.Tensor] = None
        for g_rz, g_n in zip(steps_rz, steps_n):
            if h is None:  # h_0 = 0: the recurrent product vanishes, only b_hn remains
                r, z = torch.split(torch.sigmoid(g_rz), [h_size, h_size], dim=1)
                n = torch.tanh(g_n + r * b_hn)
                h = n - z * n
            else:
                gh_rz, gh_n = torch.split(torch.matmul(h, w_hh), [2 * h_size, h_size], dim=1)
                r, z = torch.split(torch.sigmoid(g_rz + gh_rz), [h_size, h_size], dim=1)
                n = torch.tanh(g_n + r * (gh_n + b_hn))
                h = n + z * (h - n)
            if keep_sequence:
                outputs.append(h)
        if h is None:
            raise ValueError("MatMulGRU needs at least one time step")
        return torch.stack(outputs, dim=1) if keep_sequence else h

    def forward(self, x: torch.Tensor, h0: None = None) -> tuple[torch.Tensor, None]:
        if h0 is not None:
            raise ValueError("MatMulGRU starts from a zero state, as RawNet2 does")
        if not self.batch_first:
            x = x.transpose(0, 1)
        if x.shape[1] == 0:
            raise ValueError("MatMulGRU needs at least one time step")
        for layer in range(self.num_layers - 1):
            x = self._layer(x, layer, keep_sequence=True)
        last = self._layer(x, self.num_layers - 1, keep_sequence=False)
        return (last.unsqueeze(1) if self.batch_first else last.unsqueeze(0)), None


def matmul_gru_from(gru: nn.GRU) -> MatMulGRU:
    """Convenience constructor (eval mode): the module FoldedRawNet2 takes as ``recurrent=``."""
    return MatMulGRU(gru).eval()
