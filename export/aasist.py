"""AASIST and AASIST-L (Jung et al., ICASSP 2022, arXiv 2110.01200), one class for both.

Written from the paper and from the facts listed in ``../shared/models/aasist/README.md``
(configurations of clovaai/aasist ``config/AASIST.conf`` / ``AASIST-L.conf``); parameter
names are those of the official state dicts so the published weights load strictly.

Data flow for one 64 600-sample window (shapes for AASIST-L; AASIST differs in widths):

1. **Sinc front end** (fixed, not in the checkpoint): 70 mel-spaced band-pass filters of
   129 taps (config 128, made odd), Hamming window, "valid" cross-correlation
   → ``[B, 70, 64 472]``; the same bank construction as RawNet2's
   (:func:`edge_detector.sincbank.sinc_filters`).
2. Treated as a one-channel 2-D map ``[B, 1, 70, T]``: ``|x|``, max-pool 3×3 (floor)
   → ``[B, 1, 23, 21 490]``, BatchNorm2d(1), SELU.
3. **Encoder**: six 2-D residual blocks (kernels 2×3; the first 2×3 convolution pads the
   frequency axis by one, the second by none, so the height is kept), each ending in a
   1×3 max-pool over time → ``[B, C, 23, 29]``. As in RawNet2, every block but the first
   owns a BatchNorm ``bn1`` whose output the official model computes and never uses (its
   first convolution reads the block input), so ``bn1`` is loaded but does not act.
4. **Graph nodes**: spectral nodes = max over time of ``|x|`` (23 nodes, plus a learned
   positional embedding ``pos_S``), temporal nodes = max over frequency of ``|x|`` (29).
   Each goes through a graph attention layer (GAT) and a graph pooling layer (top-k nodes
   by a sigmoid gate, kept in descending gate order, gated features).
5. **HS-GAL** twice in parallel (two branches, each with its own learned master node):
   a heterogeneous graph attention layer over the union of temporal and spectral nodes,
   graph pooling of each node type, a second heterogeneous layer added residually.
   The two branches are merged by an element-wise maximum ("max graph operation").
6. **Readout**: ``[max |T|, mean T, max |S|, mean S, master]`` → Linear → two logits,
   index 1 = bona fide (the official score is ``logit[1]``).

Attention (paper, eq. 1-4): for nodes ``n_i, n_j`` the pair ``n_i ⊙ n_j`` is projected,
``tanh``, dotted with a learned vector (one vector per node-type pair in the
heterogeneous layer: type1-type1, type2-type2 and one shared by both cross directions),
divided by a temperature, softmax over ``j``; the node update is
``W_att (Σ_j a_ij n_j) + W_res n_i``, BatchNorm, SELU. The master node attends to all
nodes with its own projection (``n_i ⊙ master``) and is updated without BN/activation.
Dropouts of the training recipe are identities at inference and are not modelled.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from edge_detector.sincbank import odd_kernel_size, sinc_filters

#: The published configurations (README of ../shared/models/aasist, from clovaai/aasist config/*.conf).
PRESETS: dict[str, dict[str, Any]] = {
    "AASIST": dict(
        encoder=[[1, 32], [32, 32], [32, 64], [64, 64], [64, 64], [64, 64]],
        gat_dims=[64, 32], pool_ratios=[0.5, 0.7, 0.5, 0.5], temperatures=[2.0, 2.0, 100.0, 100.0],
    ),
    "AASIST-L": dict(
        encoder=[[1, 32], [32, 32], [32, 24], [24, 24], [24, 24], [24, 24]],
        gat_dims=[24, 32], pool_ratios=[0.4, 0.5, 0.7, 0.5], temperatures=[2.0, 2.0, 100.0, 100.0],
    ),
}
#: Where the official weights come from (manifest ``source_checkpoint``).
OFFICIAL_ORIGIN = {"repository": "clovaai/aasist", "commit": "a04c9863f63d44471dde8a6abcb3b082b07cd1d1",
                   "path": "models/weights/", "licence": "MIT", "copyright": "(c) 2021-present NAVER Corp."}
#: sha256 of the published files → preset name (README of ../shared/models/aasist).
OFFICIAL_SHA256 = {
    "51d2d9cf0738172f61e2a384ec50a54a55363240f67c971ed55a92435bc1a1c0": "AASIST",
    "814331d088032bb4c3fa61cc014789eadeed464209dd094ab3a2dd6ffbdce27a": "AASIST-L",
}


@dataclass
class AASISTConfig:
    """Every size of the network. Defaults: AASIST (``AASISTConfig.preset("AASIST-L")`` for the small one).

    ``encoder``: ``[in, out]`` channels of the six residual blocks (first ``in`` must be 1).
    ``gat_dims``: node width after the first GAT layers, and after the heterogeneous layers.
    ``pool_ratios``: kept node fractions of the spectral pool, the temporal pool, and the
    four pools inside the HS-GAL branches (the fourth entry is unused, as in the official
    configuration files). ``temperatures``: spectral GAT, temporal GAT, HS-GAL layers
    (the fourth is unused).
    """

    name: str = "AASIST"
    sinc_filters: int = 70
    sinc_kernel: int = 128
    sample_rate: int = 16000
    window: int = 64600
    encoder: list[list[int]] = field(default_factory=lambda: [list(b) for b in PRESETS["AASIST"]["encoder"]])
    gat_dims: list[int] = field(default_factory=lambda: list(PRESETS["AASIST"]["gat_dims"]))
    pool_ratios: list[float] = field(default_factory=lambda: list(PRESETS["AASIST"]["pool_ratios"]))
    temperatures: list[float] = field(default_factory=lambda: list(PRESETS["AASIST"]["temperatures"]))

    def __post_init__(self) -> None:
        if len(self.encoder) < 1 or int(self.encoder[0][0]) != 1:
            raise ValueError("the encoder's first block must take the one-channel sinc map")
        if any(int(a[1]) != int(b[0]) for a, b in zip(self.encoder, self.encoder[1:])):
            raise ValueError(f"encoder blocks must chain ([in, out] with out = next in), got {self.encoder}")
        if len(self.gat_dims) != 2 or len(self.pool_ratios) < 3 or len(self.temperatures) < 3:
            raise ValueError("gat_dims needs 2 entries, pool_ratios and temperatures at least 3")

    @classmethod
    def preset(cls, name: str) -> "AASISTConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown AASIST preset {name!r}; known: {sorted(PRESETS)}")
        p = PRESETS[name]
        return cls(name=name, encoder=[list(b) for b in p["encoder"]], gat_dims=list(p["gat_dims"]),
                   pool_ratios=list(p["pool_ratios"]), temperatures=list(p["temperatures"]))

    @property
    def channels(self) -> int:
        return int(self.encoder[-1][1])

    @property
    def freq_nodes(self) -> int:
        """Spectral nodes: the 3×3 max-pool leaves ``filters // 3`` rows, kept by the encoder."""
        return int(self.sinc_filters) // 3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AASISTConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def kept_nodes(n: int, ratio: float) -> int:
    """Graph pooling keeps ``max(floor(n * ratio), 1)`` nodes."""
    return max(int(n * ratio), 1)


class SincConv(nn.Module):
    """Fixed sinc band-pass bank as a valid cross-correlation (a non-persistent buffer)."""

    def __init__(self, n_filters: int, kernel: int, sample_rate: int) -> None:
        super().__init__()
        bank = torch.from_numpy(sinc_filters(n_filters, kernel, sample_rate).copy())
        self.register_buffer("filters", bank.unsqueeze(1), persistent=False)
        self.kernel_size = odd_kernel_size(kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, samples] -> [B, filters, samples - k + 1]
        return F.conv1d(x.unsqueeze(1), self.filters)


class ResBlock2d(nn.Module):
    """2-D residual block: conv 2×3 (pad 1,1) → BN → SELU → conv 2×3 (pad 0,1), skip (1×3 conv
    when widths differ), max-pool 1×3. ``bn1`` (all but the first block) is kept for strict
    loading and, as in the official model, does not act on the output."""

    def __init__(self, cin: int, cout: int, first: bool) -> None:
        super().__init__()
        if not first:
            self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, kernel_size=(2, 3), padding=(1, 1))
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, kernel_size=(2, 3), padding=(0, 1))
        if cin != cout:
            self.conv_downsample = nn.Conv2d(cin, cout, kernel_size=(1, 3), padding=(0, 1))
        self.selu: Callable[[torch.Tensor], torch.Tensor] = F.selu  # see AASIST.use_selu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.selu(self.bn2(self.conv1(x))))
        skip = self.conv_downsample(x) if hasattr(self, "conv_downsample") else x
        return F.max_pool2d(y + skip, (1, 3))


def _pair_products(x: torch.Tensor) -> torch.Tensor:
    """``[B, N, D]`` → ``[B, N, N, D]`` with entry ``(i, j) = x_i ⊙ x_j``."""
    return x.unsqueeze(2) * x.unsqueeze(1)


def _bn_nodes(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm over the feature axis of ``[B, N, D]`` node tensors."""
    b, n, d = x.shape
    return bn(x.reshape(b * n, d)).reshape(b, n, d)


class GraphAttention(nn.Module):
    """Homogeneous graph attention layer (paper eq. 1-2) over ``[B, N, in]`` → ``[B, N, out]``."""

    def __init__(self, din: int, dout: int, temperature: float) -> None:
        super().__init__()
        self.att_proj = nn.Linear(din, dout)
        self.att_weight = nn.Parameter(torch.empty(dout, 1))
        self.proj_with_att = nn.Linear(din, dout)
        self.proj_without_att = nn.Linear(din, dout)
        self.bn = nn.BatchNorm1d(dout)
        self.temperature = float(temperature)
        nn.init.xavier_normal_(self.att_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.matmul(torch.tanh(self.att_proj(_pair_products(x))), self.att_weight).squeeze(-1)
        att = torch.softmax(logits / self.temperature, dim=-1)  # [B, N, N], normalised over j
        y = self.proj_with_att(torch.matmul(att, x)) + self.proj_without_att(x)
        return F.selu(_bn_nodes(self.bn, y))


class HeteroGraphAttention(nn.Module):
    """Heterogeneous (spectro-temporal) graph attention layer with a master node (paper section 2.3).

    Inputs ``x1 [B, N1, in]`` (temporal nodes), ``x2 [B, N2, in]`` (spectral nodes), master
    ``[B or 1, 1, in]``; returns the updated ``(x1, x2, master)`` with width ``out``.
    """

    def __init__(self, din: int, dout: int, temperature: float) -> None:
        super().__init__()
        self.proj_type1 = nn.Linear(din, din)
        self.proj_type2 = nn.Linear(din, din)
        self.att_proj = nn.Linear(din, dout)
        self.att_projM = nn.Linear(din, dout)
        self.att_weight11 = nn.Parameter(torch.empty(dout, 1))
        self.att_weight22 = nn.Parameter(torch.empty(dout, 1))
        self.att_weight12 = nn.Parameter(torch.empty(dout, 1))
        self.att_weightM = nn.Parameter(torch.empty(dout, 1))
        self.proj_with_att = nn.Linear(din, dout)
        self.proj_without_att = nn.Linear(din, dout)
        self.proj_with_attM = nn.Linear(din, dout)
        self.proj_without_attM = nn.Linear(din, dout)
        self.bn = nn.BatchNorm1d(dout)
        self.temperature = float(temperature)
        for w in (self.att_weight11, self.att_weight22, self.att_weight12, self.att_weightM):
            nn.init.xavier_normal_(w)

    def _pair_logits(self, nodes: torch.Tensor, n1: int) -> torch.Tensor:
        """Attention logits ``[B, N, N]``: the vector for each pair is chosen by the two node types."""
        h = torch.tanh(self.att_proj(_pair_products(nodes)))  # [B, N, N, out]
        per_type = torch.matmul(h, torch.cat([self.att_weight11, self.att_weight22, self.att_weight12], dim=1))
        n = nodes.shape[1]
        t = torch.arange(n, device=nodes.device) >= n1  # False: type 1, True: type 2
        same1 = (~t).unsqueeze(1) & (~t).unsqueeze(0)
        same2 = t.unsqueeze(1) & t.unsqueeze(0)
        choice = torch.stack([same1, same2, ~(same1 | same2)], dim=-1).to(per_type.dtype)  # one-hot [N, N, 3]
        return (per_type * choice).sum(-1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, master: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n1 = x1.shape[1]
        nodes = torch.cat([self.proj_type1(x1), self.proj_type2(x2)], dim=1)  # [B, N, in]
        # master node: attention over all nodes, no BN / activation
        m_logits = torch.matmul(torch.tanh(self.att_projM(nodes * master)), self.att_weightM)  # [B, N, 1]
        m_att = torch.softmax(m_logits / self.temperature, dim=1)
        master = self.proj_with_attM(torch.matmul(m_att.transpose(1, 2), nodes)) + self.proj_without_attM(master)
        att = torch.softmax(self._pair_logits(nodes, n1) / self.temperature, dim=-1)
        y = self.proj_with_att(torch.matmul(att, nodes)) + self.proj_without_att(nodes)
        y = F.selu(_bn_nodes(self.bn, y))
        return y[:, :n1], y[:, n1:], master


class GraphPool(nn.Module):
    """Graph pooling (Gao & Ji's gPool as used by AASIST): a sigmoid gate per node, the
    ``kept_nodes(N, ratio)`` highest-gated nodes in descending gate order, features × gate."""

    def __init__(self, ratio: float, dim: int) -> None:
        super().__init__()
        self.ratio = float(ratio)
        self.proj = nn.Linear(dim, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [B, N, D] -> [B, k, D]
        gate = torch.sigmoid(self.proj(h))  # [B, N, 1]
        k = kept_nodes(h.shape[1], self.ratio)
        _, idx = torch.topk(gate, k, dim=1)  # sorted, descending
        return torch.gather(h * gate, 1, idx.expand(-1, -1, h.shape[2]))


class AASIST(nn.Module):
    """AASIST / AASIST-L. ``forward(waveform [B, window])`` → logits ``[B, 2]`` (index 1 = bona fide)."""

    def __init__(self, config: Optional[AASISTConfig] = None) -> None:
        super().__init__()
        self.config = cfg = config or AASISTConfig()
        c, (g1, g2) = cfg.channels, (int(d) for d in cfg.gat_dims)
        pr, tp = cfg.pool_ratios, cfg.temperatures
        self.sinc = SincConv(cfg.sinc_filters, cfg.sinc_kernel, cfg.sample_rate)
        self.first_bn = nn.BatchNorm2d(1)
        self.encoder = nn.Sequential(*[nn.Sequential(ResBlock2d(int(a), int(b), first=(i == 0)))
                                       for i, (a, b) in enumerate(cfg.encoder)])
        self.pos_S = nn.Parameter(torch.randn(1, cfg.freq_nodes, c))
        self.master1 = nn.Parameter(torch.randn(1, 1, g1))
        self.master2 = nn.Parameter(torch.randn(1, 1, g1))
        self.GAT_layer_S = GraphAttention(c, g1, tp[0])
        self.GAT_layer_T = GraphAttention(c, g1, tp[1])
        self.HtrgGAT_layer_ST11 = HeteroGraphAttention(g1, g2, tp[2])
        self.HtrgGAT_layer_ST12 = HeteroGraphAttention(g2, g2, tp[2])
        self.HtrgGAT_layer_ST21 = HeteroGraphAttention(g1, g2, tp[2])
        self.HtrgGAT_layer_ST22 = HeteroGraphAttention(g2, g2, tp[2])
        self.pool_S = GraphPool(pr[0], g1)
        self.pool_T = GraphPool(pr[1], g1)
        self.pool_hS1 = GraphPool(pr[2], g2)
        self.pool_hT1 = GraphPool(pr[2], g2)
        self.pool_hS2 = GraphPool(pr[2], g2)
        self.pool_hT2 = GraphPool(pr[2], g2)
        self.out_layer = nn.Linear(5 * g2, 2)
        self.selu: Callable[[torch.Tensor], torch.Tensor] = F.selu

    def use_selu(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "AASIST":
        """Compute the SELUs of the front and the encoder (the large maps) with ``fn``, which must
        be the same function written differently (an export writes it as ops onnxruntime
        vectorises); returns self."""
        self.selu = fn
        for block in self.encoder:
            block[0].selu = fn
        return self

    # --- stages (separate so that an edge export can start after the front end) ---
    def front(self, waveform: torch.Tensor) -> torch.Tensor:
        """``[B, window]`` → pooled sinc map ``[B, 1, filters // 3, (window - k + 1) // 3]``."""
        return F.max_pool2d(torch.abs(self.sinc(waveform)).unsqueeze(1), (3, 3))

    def encode(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled sinc map → encoder output ``[B, C, freq_nodes, time]``."""
        return self.encoder(self.selu(self.first_bn(pooled)))

    def _branch(self, t: torch.Tensor, s: torch.Tensor, master: torch.Tensor, i: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        first, second = getattr(self, f"HtrgGAT_layer_ST{i}1"), getattr(self, f"HtrgGAT_layer_ST{i}2")
        t, s, master = first(t, s, master)
        t, s = getattr(self, f"pool_hT{i}")(t), getattr(self, f"pool_hS{i}")(s)
        dt, ds, dm = second(t, s, master)
        return t + dt, s + ds, master + dm

    def back(self, feats: torch.Tensor) -> torch.Tensor:
        """Encoder output ``[B, C, F, T]`` → logits ``[B, 2]``."""
        mag = torch.abs(feats)
        spectral = mag.amax(dim=3).transpose(1, 2) + self.pos_S  # [B, F, C]
        temporal = mag.amax(dim=2).transpose(1, 2)  # [B, T, C]
        s = self.pool_S(self.GAT_layer_S(spectral))
        t = self.pool_T(self.GAT_layer_T(temporal))
        t1, s1, m1 = self._branch(t, s, self.master1, 1)
        t2, s2, m2 = self._branch(t, s, self.master2, 2)
        t, s, m = torch.maximum(t1, t2), torch.maximum(s1, s2), torch.maximum(m1, m2)
        m = m.expand(t.shape[0], -1, -1)
        hidden = torch.cat([t.abs().amax(1), t.mean(1), s.abs().amax(1), s.mean(1), m.squeeze(1)], dim=1)
        return self.out_layer(hidden)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.back(self.encode(self.front(waveform)))


def bonafide_logit(logits: torch.Tensor) -> torch.Tensor:
    """The official AASIST score: ``logit[:, 1]`` (clovaai/aasist writes it as the score)."""
    return logits[:, 1]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _shape_config(state: Mapping[str, torch.Tensor]) -> Optional[AASISTConfig]:
    """The preset whose parameter shapes the state dict has (None when none fits)."""
    for name in PRESETS:
        cfg = AASISTConfig.preset(name)
        want = {k: tuple(v.shape) for k, v in AASIST(cfg).state_dict().items()}
        if set(want) == set(state) and all(tuple(state[k].shape) == s for k, s in want.items()):
            return cfg
    return None


def is_aasist_state(state: Mapping[str, Any]) -> bool:
    """Whether a state dict has AASIST's parameter names (the heterogeneous graph layers)."""
    return any(str(k).startswith("HtrgGAT_layer_ST11.") for k in state)


def is_aasist_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` holds AASIST weights (a bare official state dict or ours); False for any other
    checkpoint, and False for an unreadable file (the caller's loader then reports it)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any unreadable file is "not AASIST"; the RawNet2 loader says why
        return False
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    return isinstance(state, dict) and is_aasist_state(state)


def load_aasist(path: str | Path, map_location: str = "cpu") -> tuple[AASIST, dict[str, Any]]:
    """Load an official ``.pth`` (a bare state dict: the configuration is the preset whose
    shapes it has) or ours (``{"state_dict", "config", "meta"}``); strict in both cases.

    Raises ``ValueError`` when the file is no AASIST checkpoint or fits no known preset,
    and ``RuntimeError`` (from PyTorch) on missing / unexpected keys or wrong shapes.
    ``meta`` records the file's sha256 and, for a published file, its origin and licence.
    """
    raw = Path(path).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    obj = torch.load(path, map_location=map_location, weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj:
        cfg = AASISTConfig.from_dict(obj.get("config", {}))
        state, meta = obj["state_dict"], dict(obj.get("meta", {}))
    elif isinstance(obj, dict) and is_aasist_state(obj):
        cfg = _shape_config(obj)
        if cfg is None:
            raise ValueError(f"{path}: AASIST parameter names, but the shapes fit neither {sorted(PRESETS)}")
        state, meta = obj, {"origin": "official-state-dict"}
        if digest in OFFICIAL_SHA256:
            meta.update(OFFICIAL_ORIGIN, file=OFFICIAL_SHA256[digest] + ".pth")
    else:
        raise ValueError(f"{path}: not an AASIST checkpoint")
    meta["sha256"] = digest
    model = AASIST(cfg)
    model.load_state_dict(state, strict=True)
    return model.eval(), meta


def save_aasist(model: AASIST, path: str | Path, meta: Optional[dict[str, Any]] = None) -> None:
    """Our checkpoint format: ``{"state_dict", "config", "meta"}`` (what :func:`load_aasist` reads)."""
    torch.save({"state_dict": model.state_dict(), "config": model.config.to_dict(), "meta": meta or {}}, str(path))
