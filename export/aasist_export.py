"""AASIST / AASIST-L as exportable score graphs: the whole model, or its body after a numpy front end.

Both modules return the official score, ``logit[:, 1]`` (clovaai/aasist writes it as the
score; higher = more bona fide), ``[batch]`` float32.

The body graph starts after the sinc stage. AASIST's front end is ``max_pool2d(|sinc|,
3×3)`` over the ``[filters, time]`` map; a 3×3 floor max-pool is a max over time in groups
of 3 followed by a max over filters in groups of 3, and with 70 filters the 70th falls
outside every group (floor), so its output is never used. The device therefore computes
rows 0..68 of the 70-band bank with the existing numpy FFT front end
(:class:`edge_detector.frontend.SincFFTFrontEnd`: filtering, ``|x|``, max-pool 3 over
time — exactly RawNet2's stage) and the graph takes the max over each group of three
filters. Both forms are the same function; the parity gate checks it.
"""
from __future__ import annotations

import torch
from torch import nn

from edge_detector.frontend import FrontEndSpec

from .aasist import AASIST


def frontend_spec_for(model: AASIST) -> FrontEndSpec:
    """The numpy front end whose output the body graph takes: the first ``3 * freq_nodes`` bands
    of the model's sinc bank (band edges from the full bank), ``|x|``, max-pool 3 over time."""
    cfg = model.config
    used = 3 * cfg.freq_nodes
    keep = None if used == cfg.sinc_filters else tuple(range(used))
    return FrontEndSpec(filters=used, kernel=int(cfg.sinc_kernel), sample_rate=int(cfg.sample_rate), pool=3,
                        keep=keep, total=None if keep is None else int(cfg.sinc_filters))


class AASISTScore(nn.Module):
    """``waveform [B, window]`` → official score ``[B]`` (the whole model, sinc stage included)."""

    def __init__(self, model: AASIST) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.model(waveform)[:, 1]


class AASISTBody(nn.Module):
    """``features [B, 3·F, T]`` (numpy front end output) → official score ``[B]``."""

    def __init__(self, model: AASIST) -> None:
        super().__init__()
        self.model = model.eval()
        self.freq_nodes = model.config.freq_nodes

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        b, _, t = features.shape
        pooled = features.reshape(b, self.freq_nodes, 3, t).amax(dim=2).unsqueeze(1)  # [B, 1, F, T]
        m = self.model
        return m.back(m.encode(pooled))[:, 1]
