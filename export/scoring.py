"""Scoring with the PyTorch model: the reference the edge bundle is compared against."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from edge_detector.windows import WINDOW_SAMPLES, first_window

from .rawnet2 import RawNet2, bonafide_score


@torch.no_grad()
def score_windows(model: RawNet2, windows: np.ndarray, batch_size: int = 16, device: str = "cpu") -> np.ndarray:
    """Bona fide log-probability for each row of a ``[n, samples]`` float32 array."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(windows), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(windows[i : i + batch_size])).to(device)
        out.append(bonafide_score(model(x)).float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def score_signals(
    model: RawNet2, signals: Sequence[np.ndarray], batch_size: int = 16, window: int = WINDOW_SAMPLES, device: str = "cpu"
) -> np.ndarray:
    """Official first-window score for each decoded 16 kHz signal."""
    windows = np.stack([first_window(s, window) for s in signals]) if len(signals) else np.zeros((0, window), np.float32)
    return score_windows(model, windows, batch_size=batch_size, device=device)
