"""RawNet2 as the ASVspoof 2021 LA baseline defines it, with every size a constructor argument.

Function and parameter names follow the official baseline so its checkpoints load
strictly (``first_bn``, ``block0.0.conv1``, ``fc_attention0.0``, ``gru``, ``fc1_gru``,
``fc2_gru`` ...). Sizes are arguments so that a structurally pruned model is the same
class with smaller numbers, saved and loaded like any checkpoint (the sizes travel in
the checkpoint as ``config``).

Quirk kept on purpose: in every residual block but the first, the official code
computes BN+LeakyReLU of the input and then applies ``conv1`` to the *raw* input, so
``bn1`` exists in checkpoints but cannot change the output. We keep ``bn1`` (for strict
loading) and the same data flow (for identical outputs).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edge_detector.sincbank import check_sinc_keep, odd_kernel_size, sinc_filters, sinc_filters_subset


@dataclass
class RawNet2Config:
    """Every size of the network. Defaults are the official baseline (17 621 410 parameters)."""

    sinc_filters: int = 20
    sinc_kernel: int = 1024
    sample_rate: int = 16000
    stage1_channels: int = 20  # blocks 0-1 (tied to the sinc filters by the residual adds)
    stage2_channels: int = 128  # blocks 2-5
    inner_channels: Optional[list[int]] = None  # conv1 width per block; default = block output
    gru_hidden: int = 1024
    gru_layers: int = 3
    fc1_dim: int = 1024
    n_classes: int = 2
    # Pruned sinc front end: the band edges come from the *original* band count, so a
    # model that lost some filters records that count and which bands it kept (strictly
    # increasing indices into the original grid). Both None = the plain sinc_filters bank.
    sinc_total: Optional[int] = None
    sinc_keep: Optional[list[int]] = None

    def __post_init__(self) -> None:
        if self.sinc_filters != self.stage1_channels:
            raise ValueError(
                "block0 has no skip convolution, so stage1_channels must equal sinc_filters "
                f"({self.stage1_channels} != {self.sinc_filters})"
            )
        if self.inner_channels is not None and len(self.inner_channels) != 6:
            raise ValueError("inner_channels needs one width per residual block (6)")
        if (self.sinc_keep is None) != (self.sinc_total is None):
            raise ValueError("sinc_keep and sinc_total go together (kept band indices of the original grid)")
        if self.sinc_keep is not None:
            self.sinc_keep = list(check_sinc_keep(self.sinc_keep, int(self.sinc_total)))
            if len(self.sinc_keep) != self.sinc_filters:
                raise ValueError(f"sinc_keep has {len(self.sinc_keep)} bands but sinc_filters is {self.sinc_filters}")

    @property
    def block_io(self) -> list[tuple[int, int]]:
        s1, s2 = self.stage1_channels, self.stage2_channels
        return [(s1, s1), (s1, s1), (s1, s2), (s2, s2), (s2, s2), (s2, s2)]

    def inner(self, i: int) -> int:
        return self.block_io[i][1] if self.inner_channels is None else int(self.inner_channels[i])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RawNet2Config":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class SincFrontEnd(nn.Module):
    """Fixed sinc band-pass bank (a buffer, not a parameter: it is absent from checkpoints).

    ``keep``/``n_total`` select rows of the ``n_total``-band bank (a sinc-pruned model):
    the kept filters stay bit-identical to the ones the model was trained with.
    """

    def __init__(
        self,
        n_filters: int,
        kernel_size: int,
        sample_rate: int,
        keep: Optional[Sequence[int]] = None,
        n_total: Optional[int] = None,
    ) -> None:
        super().__init__()
        if keep is None:
            bank_np = sinc_filters(n_filters, kernel_size, sample_rate)
        else:
            if n_total is None or len(keep) != n_filters:
                raise ValueError("a sinc subset needs n_total and len(keep) == n_filters")
            bank_np = sinc_filters_subset(n_total, keep, kernel_size, sample_rate)
        bank = torch.from_numpy(bank_np.copy())
        self.register_buffer("filters", bank.unsqueeze(1), persistent=False)
        self.kernel_size = odd_kernel_size(kernel_size)
        self.use_fft = False  # training speed-up; export and parity tests use the direct convolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [batch, 1, samples]
        if self.use_fft:
            return fft_valid_conv(x, self.filters)
        return F.conv1d(x, self.filters)


def fft_valid_conv(x: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """``F.conv1d(x, filters)`` (valid cross-correlation) computed with one FFT per signal.

    x: [batch, 1, n]; filters: [f, 1, k]; returns [batch, f, n - k + 1]. Equal to the direct
    convolution up to float rounding (≈5e-6 on unit-scale audio); O(n log n) instead of
    O(n·k) per filter, which makes the 1025-tap sinc bank cheap to train through.
    """
    n, k = x.shape[-1], filters.shape[-1]
    size = 1 << (n + k - 2).bit_length()
    spec = torch.fft.rfft(x, size) * torch.fft.rfft(filters.flip(-1).squeeze(1), size).unsqueeze(0)
    return torch.fft.irfft(spec, size)[..., k - 1 : n]


class ResidualBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, inner_ch: int, first: bool) -> None:
        super().__init__()
        self.first = first
        if not first:
            self.bn1 = nn.BatchNorm1d(in_ch)  # computed-and-unused in the official model
        self.lrelu = nn.LeakyReLU(negative_slope=0.3)
        self.conv1 = nn.Conv1d(in_ch, inner_ch, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm1d(inner_ch)
        self.conv2 = nn.Conv1d(inner_ch, out_ch, kernel_size=3, padding=1)
        self.downsample = in_ch != out_ch
        if self.downsample:
            self.conv_downsample = nn.Conv1d(in_ch, out_ch, kernel_size=1)
        self.mp = nn.MaxPool1d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)  # the official code feeds the raw input, not bn1(x)
        out = self.lrelu(self.bn2(out))
        out = self.conv2(out)
        identity = self.conv_downsample(x) if self.downsample else x
        return self.mp(out + identity)


class RawNet2(nn.Module):
    """Raw-waveform anti-spoofing network. Output: log-softmax [batch, 2]; index 1 = bona fide."""

    def __init__(self, config: Optional[RawNet2Config] = None) -> None:
        super().__init__()
        self.config = cfg = config or RawNet2Config()
        self.sinc = SincFrontEnd(cfg.sinc_filters, cfg.sinc_kernel, cfg.sample_rate, cfg.sinc_keep, cfg.sinc_total)
        self.first_bn = nn.BatchNorm1d(cfg.sinc_filters)
        self.selu = nn.SELU()
        for i, (cin, cout) in enumerate(cfg.block_io):
            block = ResidualBlock(cin, cout, cfg.inner(i), first=(i == 0))
            setattr(self, f"block{i}", nn.Sequential(block))
            setattr(self, f"fc_attention{i}", nn.Sequential(nn.Linear(cout, cout)))
        self.bn_before_gru = nn.BatchNorm1d(cfg.stage2_channels)
        self.gru = nn.GRU(cfg.stage2_channels, cfg.gru_hidden, num_layers=cfg.gru_layers, batch_first=True)
        self.fc1_gru = nn.Linear(cfg.gru_hidden, cfg.fc1_dim)
        self.fc2_gru = nn.Linear(cfg.fc1_dim, cfg.n_classes)

    def blocks(self) -> list[ResidualBlock]:
        return [getattr(self, f"block{i}")[0] for i in range(6)]

    def attentions(self) -> list[nn.Linear]:
        return [getattr(self, f"fc_attention{i}")[0] for i in range(6)]

    def front(self, x: torch.Tensor) -> torch.Tensor:
        """Waveform [batch, samples] → sinc filter outputs [batch, filters, samples - k + 1]."""
        return self.sinc(x.unsqueeze(1))

    def encode(self, filtered: torch.Tensor) -> torch.Tensor:
        """Sinc outputs → GRU input sequence [batch, time, channels]."""
        x = self.selu(self.first_bn(F.max_pool1d(torch.abs(filtered), 3)))
        for block, att in zip(self.blocks(), self.attentions()):
            x = block(x)
            s = torch.sigmoid(att(x.mean(dim=-1))).unsqueeze(-1)
            x = x * s + s
        x = self.selu(self.bn_before_gru(x))
        return x.transpose(1, 2)

    def head(self, seq: torch.Tensor) -> torch.Tensor:
        return self.head_with_embedding(seq)[0]

    def head_with_embedding(self, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """GRU input sequence → (log-softmax [batch, 2], utterance embedding [batch, gru_hidden]).

        The embedding is the GRU's output at the last time step, the input of the two fused
        Linear layers (used by contrastive training).
        """
        out, _ = self.gru(seq)
        last = out[:, -1, :]
        return F.log_softmax(self.fc2_gru(self.fc1_gru(last)), dim=1), last

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [batch, samples]
        return self.head(self.encode(self.front(x)))


def bonafide_score(log_probs: torch.Tensor) -> torch.Tensor:
    """The ASVspoof score: log-probability of class 1 (bona fide); higher = more bona fide."""
    return log_probs[:, 1]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def official_key_shapes(cfg: Optional[RawNet2Config] = None) -> dict[str, tuple[int, ...]]:
    """The state_dict key set and shapes of the official checkpoint (for strict-load tests)."""
    return {k: tuple(v.shape) for k, v in RawNet2(cfg or RawNet2Config()).state_dict().items()}


def load_checkpoint(path: str, map_location: str = "cpu") -> tuple[RawNet2, dict[str, Any]]:
    """Load either an official baseline ``.pth`` (a bare state_dict) or one of ours.

    Ours is a dict with ``state_dict`` and ``config`` (sizes) and optional ``meta``;
    loading is strict in both cases, so a missing or unexpected key is an error.
    """
    obj = torch.load(path, map_location=map_location, weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj:
        cfg = RawNet2Config.from_dict(obj.get("config", {}))
        state, meta = obj["state_dict"], obj.get("meta", {})
    else:
        cfg, state, meta = RawNet2Config(), obj, {"origin": "official-state-dict"}
    model = RawNet2(cfg)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, meta


def save_checkpoint(model: RawNet2, path: str, meta: Optional[dict[str, Any]] = None) -> None:
    torch.save({"state_dict": model.state_dict(), "config": model.config.to_dict(), "meta": meta or {}}, path)
