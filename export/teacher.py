"""Teachers for distillation (`train` / `prune` ``--distill-from``): RawNet2 or AASIST checkpoints.

A teacher is any module mapping waveforms ``[batch, samples]`` to two class outputs
``[batch, 2]`` (index 1 = bona fide) whose difference is the teacher's logit margin:

- RawNet2 returns log-softmax, whose class difference *is* the logit margin
  (``log p1 - log p0 = z1 - z0``) and whose softmax at any temperature equals the logits';
- AASIST / AASIST-L (:mod:`export.aasist`) return the logits themselves.

So both distillation losses of :class:`export.train.Trainer` (``margin-mse`` on
``out[:, 1] - out[:, 0]`` and ``kl`` on ``log_softmax(out / T)``) read either the same way,
and ``out[:, 1]`` ranks like each family's own score (RawNet2's log P(bona fide) up to a
monotone map of the margin; AASIST's official ``logit[1]``) for fidelity selection.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from .aasist import is_aasist_checkpoint, load_aasist
from .rawnet2 import load_checkpoint


def load_teacher(path: str | Path) -> tuple[nn.Module, str]:
    """``(model in eval mode, family name)`` for a RawNet2 or AASIST checkpoint (official or ours).

    The family is read from the parameter names (AASIST's graph layers, else RawNet2); loading
    is strict, so a checkpoint of neither family raises what the RawNet2 loader raises.
    """
    if is_aasist_checkpoint(path):
        model, _ = load_aasist(path)
        return model.eval(), ("AASIST-L" if model.config.name == "AASIST-L" else "AASIST")
    model, _ = load_checkpoint(str(path))
    return model.eval(), "RawNet2"
