"""RawNet2 (export/rawnet2.py) against the ASVspoof 2021 LA baseline's checkpoint layout.

The official key set and shapes are written out here by hand from DESIGN.md section 2
(not taken from the module under test), saved as a bare state_dict like the official
``.pth`` and loaded strictly.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export.rawnet2 import (  # noqa: E402
    RawNet2,
    RawNet2Config,
    bonafide_score,
    count_parameters,
    load_checkpoint,
    official_key_shapes,
    save_checkpoint,
)

TINY = dict(sinc_filters=8, stage1_channels=8, stage2_channels=16, gru_hidden=32, gru_layers=1, fc1_dim=32)


def bn_keys(prefix: str, n: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (n,), f"{prefix}.bias": (n,), f"{prefix}.running_mean": (n,),
            f"{prefix}.running_var": (n,), f"{prefix}.num_batches_tracked": ()}


def conv_keys(prefix: str, cout: int, cin: int, k: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (cout, cin, k), f"{prefix}.bias": (cout,)}


def linear_keys(prefix: str, nout: int, nin: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (nout, nin), f"{prefix}.bias": (nout,)}


def official_keys_by_hand(filters=20, c2=128, hidden=1024, layers=3, fc1=1024) -> dict[str, tuple[int, ...]]:
    """The official checkpoint's keys: filts [20, [20, 20], [20, 128], [128, 128]], GRU 1024 x 3."""
    keys: dict[str, tuple[int, ...]] = {}
    keys.update(bn_keys("first_bn", filters))
    # block0: first block, no bn1
    keys.update(conv_keys("block0.0.conv1", filters, filters, 3))
    keys.update(bn_keys("block0.0.bn2", filters))
    keys.update(conv_keys("block0.0.conv2", filters, filters, 3))
    io = {1: (filters, filters), 2: (filters, c2), 3: (c2, c2), 4: (c2, c2), 5: (c2, c2)}
    for i, (cin, cout) in io.items():
        keys.update(bn_keys(f"block{i}.0.bn1", cin))
        keys.update(conv_keys(f"block{i}.0.conv1", cout, cin, 3))
        keys.update(bn_keys(f"block{i}.0.bn2", cout))
        keys.update(conv_keys(f"block{i}.0.conv2", cout, cout, 3))
    keys.update(conv_keys("block2.0.conv_downsample", c2, filters, 1))
    for i in range(6):
        n = filters if i < 2 else c2
        keys.update(linear_keys(f"fc_attention{i}.0", n, n))
    keys.update(bn_keys("bn_before_gru", c2))
    for layer in range(layers):
        nin = c2 if layer == 0 else hidden
        keys[f"gru.weight_ih_l{layer}"] = (3 * hidden, nin)
        keys[f"gru.weight_hh_l{layer}"] = (3 * hidden, hidden)
        keys[f"gru.bias_ih_l{layer}"] = (3 * hidden,)
        keys[f"gru.bias_hh_l{layer}"] = (3 * hidden,)
    keys.update(linear_keys("fc1_gru", fc1, hidden))
    keys.update(linear_keys("fc2_gru", 2, fc1))
    return keys


def random_state(keys: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, "torch.Tensor"]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in keys.items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(7, dtype=torch.long)
        elif k.endswith("running_var"):
            state[k] = torch.rand(shape, generator=g) + 0.5
        else:
            state[k] = torch.randn(shape, generator=g) * 0.05
    return state


def is_trainable_key(k: str) -> bool:
    return not (k.endswith("running_mean") or k.endswith("running_var") or k.endswith("num_batches_tracked"))


def test_default_config_has_17_621_410_trainable_parameters():
    model = RawNet2()
    assert count_parameters(model) == 17_621_410
    # ... and so do the hand-written official shapes
    hand = official_keys_by_hand()
    assert sum(int(np.prod(s)) for k, s in hand.items() if is_trainable_key(k)) == 17_621_410
    # the sinc filters are fixed: not a parameter, not in the state_dict
    assert not any("sinc" in name for name, _ in model.named_parameters())
    assert tuple(model.sinc.filters.shape) == (20, 1, 1025)


def test_state_dict_matches_the_official_key_set():
    assert {k: tuple(v.shape) for k, v in RawNet2().state_dict().items()} == official_keys_by_hand()
    assert official_key_shapes() == official_keys_by_hand()


@pytest.fixture(scope="module")
def official_pth(tmp_path_factory):
    keys = official_keys_by_hand()
    state = random_state(keys, seed=3)
    path = tmp_path_factory.mktemp("official") / "pre_trained_DF_RawNet2.pth"
    torch.save(state, str(path))  # a bare state_dict, as the baseline ships it
    return path, state


def test_official_state_dict_loads_strictly(official_pth):
    path, state = official_pth
    model, meta = load_checkpoint(str(path))
    assert isinstance(model, RawNet2) and not model.training
    assert meta == {"origin": "official-state-dict"}
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k


@pytest.mark.parametrize("drop", ["block1.0.bn1.running_var", "gru.bias_hh_l2"])
def test_missing_key_fails(tmp_path, official_pth, drop):
    _, state = official_pth
    bad = {k: v for k, v in state.items() if k != drop}
    path = tmp_path / "missing.pth"
    torch.save(bad, str(path))
    with pytest.raises(RuntimeError, match="Missing key"):
        load_checkpoint(str(path))


@pytest.mark.parametrize("extra", ["block0.0.bn1.weight", "gru.weight_ih_l3"])
def test_extra_key_fails(tmp_path, official_pth, extra):
    _, state = official_pth
    bad = dict(state)
    bad[extra] = torch.zeros(3)
    path = tmp_path / "extra.pth"
    torch.save(bad, str(path))
    with pytest.raises(RuntimeError, match="Unexpected key"):
        load_checkpoint(str(path))


def test_wrong_shape_fails(tmp_path, official_pth):
    _, state = official_pth
    bad = dict(state)
    bad["fc2_gru.weight"] = torch.zeros(3, 1024)
    path = tmp_path / "shape.pth"
    torch.save(bad, str(path))
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_checkpoint(str(path))


def _tiny(seed=0, **over) -> RawNet2:
    torch.manual_seed(seed)
    model = RawNet2(RawNet2Config(**{**TINY, **over}))
    # give every BN non-trivial statistics so eval mode is not the identity
    g = torch.Generator().manual_seed(seed + 100)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def _x(n=2, length=16000, seed=0):
    """Short inputs keep these tests fast; the network takes any length above ~3.2k samples."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy((rng.standard_normal((n, length)) * 0.1).astype(np.float32))


def test_bn1_does_not_affect_the_output():
    model = _tiny()
    x = _x()
    with torch.no_grad():
        before = model(x)
        for i in range(1, 6):
            bn1 = getattr(model, f"block{i}")[0].bn1
            bn1.weight.mul_(-3.0).add_(1.0)
            bn1.bias.add_(5.0)
            bn1.running_mean.add_(2.0)
            bn1.running_var.mul_(10.0)
        after = model(x)
        assert torch.equal(before, after)
        # control: the same change to bn2 does change the output
        bn2 = model.block3[0].bn2
        bn2.weight.mul_(-3.0).add_(1.0)
        bn2.bias.add_(5.0)
        changed = model(x)
    assert not torch.allclose(before, changed)


def test_output_is_log_softmax_and_score_is_index_1():
    model = _tiny()
    with torch.no_grad():
        out = model(_x(3))
    assert out.shape == (3, 2)
    assert torch.all(out <= 0)
    torch.testing.assert_close(out.exp().sum(dim=1), torch.ones(3), atol=1e-6, rtol=0)
    assert torch.equal(bonafide_score(out), out[:, 1])


def test_pruned_sizes_are_the_same_class_and_round_trip(tmp_path):
    sizes = dict(sinc_filters=12, stage1_channels=12, stage2_channels=24, gru_hidden=40, gru_layers=2, fc1_dim=16,
                 inner_channels=[6, 7, 8, 9, 10, 11])
    model = _tiny(seed=5, **sizes)
    assert type(model) is RawNet2
    sd = model.state_dict()
    # same key names as the official model (one GRU layer fewer), smaller tensors
    official = official_keys_by_hand(filters=12, c2=24, hidden=40, layers=2, fc1=16)
    assert set(sd) == set(official)
    assert tuple(sd["block3.0.conv1.weight"].shape) == (9, 24, 3)
    assert tuple(sd["block3.0.conv2.weight"].shape) == (24, 9, 3)
    assert tuple(sd["gru.weight_hh_l1"].shape) == (120, 40)
    path = tmp_path / "pruned.pt"
    save_checkpoint(model, str(path), meta={"pruned": True})
    loaded, meta = load_checkpoint(str(path))
    assert type(loaded) is RawNet2
    assert meta == {"pruned": True}
    assert loaded.config == model.config
    for k, v in sd.items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x = _x(2, seed=4)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_config_rejects_inconsistent_sizes():
    with pytest.raises(ValueError):
        RawNet2Config(sinc_filters=20, stage1_channels=16)
    with pytest.raises(ValueError):
        RawNet2Config(inner_channels=[1, 2, 3])
