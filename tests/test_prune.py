"""Structured pruning: exact slicing, criteria, schedule, checkpoints, export and the CLI.

Exactness is checked two ways: (1) make an index dead by zeroing everything it feeds,
prune it, and the output must not change; (2) a gate of 0 on an index in the gated
forward pass must equal the model with that index pruned. Short inputs (16 000
samples) keep the model runs cheap; the export test uses full windows.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from audio_synth import buzzy, speechlike, write  # noqa: E402
from conftest import train_tiny  # noqa: E402

from edge_detector.sincbank import sinc_filters, sinc_filters_for_config, sinc_filters_subset  # noqa: E402
from export.prune import (  # noqa: E402
    PrunePlan,
    Sizes,
    apply_plan,
    choose_plan,
    estimate_macs,
    gated_forward,
    group_sizes,
    make_schedule,
    norm_importance,
    parse_target,
    prune_fc1,
    prune_gru_layers,
    prune_gru_units,
    prune_inner,
    prune_sinc,
    prune_stage2,
    refit_head,
    taylor_importance,
    top_indices,
)
from export.rawnet2 import RawNet2, RawNet2Config, count_parameters, load_checkpoint, save_checkpoint  # noqa: E402

PRUNE_SIZES = dict(sinc_filters=8, stage1_channels=8, stage2_channels=16, inner_channels=[16] * 6,
                   gru_hidden=32, gru_layers=2, fc1_dim=32)
ATOL = 2e-6


@pytest.fixture(scope="module")
def model() -> RawNet2:
    """A tiny model that has seen a few batches, with BN statistics made far from identity
    so that a slicing mistake in any BN tensor shows in the output."""
    m = train_tiny(steps=1, seed=3, sizes=PRUNE_SIZES)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                n = mod.num_features
                mod.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(n, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return m.eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    xs = [speechlike(1.0, seed=1), buzzy(1.0, seed=2), speechlike(1.0, seed=3, f0=200.0)]
    return torch.from_numpy(np.stack(xs).astype(np.float32))


def clone(m: RawNet2) -> RawNet2:
    c = RawNet2(m.config)
    c.load_state_dict(m.state_dict())
    return c.eval()


def run(m: RawNet2, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return m.eval()(x)


# -- identity and gated forward ------------------------------------------------------------
def test_pruning_nothing_is_the_original(model, x):
    same = apply_plan(model, PrunePlan.identity(model.config))
    assert same is not model
    assert same.config == model.config
    a, b = model.state_dict(), same.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(run(model, x), run(same, x))


def test_gated_forward_equals_model(model, x):
    with torch.no_grad():
        assert torch.allclose(gated_forward(model, x), model(x), atol=ATOL)


@pytest.mark.parametrize("groups", [["stage1"], ["stage2"], ["inner0"], ["inner2"], ["inner5"], ["fc1"],
                                    ["gru0", "gru1"], ["stage1", "stage2", "gru0", "gru1", "fc1"]])
def test_zero_gate_equals_pruned_model(model, x, groups):
    sizes = group_sizes(model.config)
    gates, keep = {}, {}
    for i, g in enumerate(groups):
        n = sizes[g]
        drop = {(3 + 5 * i) % n, (4 + 5 * i + n // 2) % n}
        gates[g] = torch.ones(len(x), n)
        gates[g][:, sorted(drop)] = 0.0
        keep[g] = [j for j in range(n) if j not in drop]
    pruned = apply_plan(model, PrunePlan(keep))
    with torch.no_grad():
        assert torch.allclose(gated_forward(model, x, gates), pruned(x), atol=ATOL)


# -- dead indices are removed without changing the output -----------------------------------
def test_dead_gru_units_prune_exactly(model, x):
    m = clone(model)
    k0, k1 = 5, 17
    with torch.no_grad():
        m.gru.weight_hh_l0[:, k0] = 0
        m.gru.weight_ih_l1[:, k0] = 0
        m.gru.weight_hh_l1[:, k1] = 0
        m.fc1_gru.weight[:, k1] = 0
    keep0 = [i for i in range(32) if i != k0]
    keep1 = [i for i in range(32) if i != k1]
    pruned = prune_gru_units(m, [keep0, keep1])
    assert pruned.config.gru_hidden == 31
    assert torch.allclose(run(m, x), run(pruned, x), atol=ATOL)
    # the Taylor criterion sees exactly zero for a unit nothing reads
    imp = taylor_importance(m, [(x, torch.tensor([1, 0, 1]))])
    assert float(imp["gru0"][k0]) == 0.0 and float(imp["gru1"][k1]) == 0.0
    assert k0 not in top_indices(imp["gru0"], 31) and k1 not in top_indices(imp["gru1"], 31)


def test_dead_stage2_channel_prunes_exactly(model, x):
    m = clone(model)
    c = 6
    with torch.no_grad():
        for i in range(2, 6):
            m.attentions()[i].weight[:, c] = 0
        for i in range(3, 6):
            m.blocks()[i].conv1.weight[:, c] = 0
        m.gru.weight_ih_l0[:, c] = 0
    pruned = prune_stage2(m, [i for i in range(16) if i != c])
    assert pruned.config.stage2_channels == 15
    assert torch.allclose(run(m, x), run(pruned, x), atol=ATOL)


def test_dead_sinc_filter_prunes_exactly(model, x):
    m = clone(model)
    c = 3
    with torch.no_grad():
        for i in range(2):
            m.attentions()[i].weight[:, c] = 0
        for i in range(3):
            m.blocks()[i].conv1.weight[:, c] = 0
        m.blocks()[2].conv_downsample.weight[:, c] = 0
    keep = [i for i in range(8) if i != c]
    pruned = prune_sinc(m, keep)
    assert pruned.config.sinc_filters == pruned.config.stage1_channels == 7
    assert pruned.config.sinc_total == 8 and pruned.config.sinc_keep == keep
    assert torch.equal(pruned.sinc.filters[:, 0], model.sinc.filters[keep, 0])
    assert torch.allclose(run(m, x), run(pruned, x), atol=ATOL)


def test_dead_inner_channel_and_fc1_unit_prune_exactly(model, x):
    m = clone(model)
    with torch.no_grad():
        m.blocks()[4].conv2.weight[:, 9] = 0
        m.fc2_gru.weight[:, 11] = 0
    pruned = prune_fc1(prune_inner(m, 4, [i for i in range(16) if i != 9]), [i for i in range(32) if i != 11])
    assert pruned.config.inner(4) == 15 and pruned.config.fc1_dim == 31
    assert torch.allclose(run(m, x), run(pruned, x), atol=ATOL)


# -- sizes, shapes, checkpoints -----------------------------------------------------------
def test_pruned_shapes_and_parameter_count(model):
    cfg = model.config
    imp = norm_importance(model)
    sizes = Sizes(sinc=5, stage2=10, inner=[4, 5, 6, 7, 8, 9], gru_hidden=12, gru_layers=1, fc1=7)
    pruned = apply_plan(model, choose_plan(model, imp, sizes))
    expect = RawNet2Config(sinc_filters=5, stage1_channels=5, stage2_channels=10, inner_channels=[4, 5, 6, 7, 8, 9],
                           gru_hidden=12, gru_layers=1, fc1_dim=7, sinc_total=8,
                           sinc_keep=pruned.config.sinc_keep)
    assert pruned.config == expect
    ref = RawNet2(expect).state_dict()
    got = pruned.state_dict()
    assert {k: tuple(v.shape) for k, v in got.items()} == {k: tuple(v.shape) for k, v in ref.items()}
    # closed form: blocks + attention + BNs + GRU(1 layer) + head
    s1, s2, inner = 5, 10, [4, 5, 6, 7, 8, 9]
    io = [(s1, s1), (s1, s1), (s1, s2), (s2, s2), (s2, s2), (s2, s2)]
    n = 2 * s1  # first_bn
    for i, (a, b) in enumerate(io):
        n += inner[i] * a * 3 + inner[i] + 2 * inner[i] + b * inner[i] * 3 + b + b * b + b
        n += 2 * a if i > 0 else 0  # bn1 (unused but stored)
        n += b * a + b if a != b else 0
    n += 2 * s2 + 3 * 12 * (s2 + 12) + 6 * 12 + 12 * 7 + 7 + 7 * 2 + 2
    assert count_parameters(pruned) == n
    assert count_parameters(pruned) < count_parameters(model)


def test_pruned_checkpoint_round_trip(model, x, tmp_path):
    pruned = apply_plan(model, PrunePlan({"stage1": [0, 2, 5, 7], "gru0": list(range(0, 32, 2)),
                                          "gru1": list(range(1, 32, 2))}, gru_layers=2))
    again = prune_sinc(pruned, [1, 2, 3])  # a second sinc prune maps back to the original bands
    assert again.config.sinc_keep == [2, 5, 7] and again.config.sinc_total == 8
    path = tmp_path / "p.pt"
    save_checkpoint(again, str(path), meta={"k": 1})
    loaded, meta = load_checkpoint(str(path))
    assert meta == {"k": 1} and loaded.config == again.config
    assert torch.equal(run(loaded, x), run(again, x))
    assert torch.equal(loaded.sinc.filters, model.sinc.filters[[2, 5, 7]])


def test_sinc_subset_rows_equal_original():
    full = sinc_filters(20, 1024, 16000)
    keep = [0, 3, 4, 11, 19]
    sub = sinc_filters_subset(20, keep, 1024, 16000)
    assert np.array_equal(sub, full[keep]) and not sub.flags.writeable
    cfg = RawNet2Config(sinc_filters=5, stage1_channels=5, sinc_total=20, sinc_keep=keep)
    assert np.array_equal(sinc_filters_for_config(cfg.to_dict()), full[keep])
    assert np.array_equal(sinc_filters_for_config(RawNet2Config().to_dict()), full)
    for bad in ([3, 1], [0, 20], [], [2, 2]):
        with pytest.raises(ValueError):
            sinc_filters_subset(20, bad)
    with pytest.raises(ValueError):
        RawNet2Config(sinc_filters=5, stage1_channels=5, sinc_keep=keep)  # sinc_total missing


def test_layer_drop_and_head_refit(model, x):
    dropped = prune_gru_layers(model, 1)
    assert dropped.config.gru_layers == 1 and "gru.weight_ih_l1" not in dropped.state_dict()
    assert torch.equal(dropped.gru.weight_hh_l0, model.gru.weight_hh_l0)
    batches = [(x, torch.tensor([1, 0, 1]))]
    with torch.no_grad():
        target = model.fc1_gru(model.gru(model.encode(model.front(x)))[0])
        before = (dropped.fc1_gru(dropped.gru(dropped.encode(dropped.front(x)))[0]) - target).norm()
    rel = refit_head(model, dropped, batches)
    with torch.no_grad():
        after = (dropped.fc1_gru(dropped.gru(dropped.encode(dropped.front(x)))[0]) - target).norm()
    assert after < before and rel == pytest.approx(float(after / target.norm()), rel=1e-3)


def test_target_schedule_and_macs():
    cfg = RawNet2Config()
    t = parse_target("sinc=12,stage2=64,gru_hidden=256,gru_layers=1,fc1=256", cfg)
    assert t.inner == [12, 12, 64, 64, 64, 64]
    sched = make_schedule(Sizes.of(cfg), t, 3)
    assert [s.gru_layers for s in sched] == [2, 1, 1]
    assert [s.gru_hidden for s in sched] == [645, 406, 256]
    assert sched[-1] == t
    with pytest.raises(ValueError):
        parse_target("gru_hidden=2048", cfg)
    with pytest.raises(ValueError):
        parse_target("bogus=1", cfg)
    macs = estimate_macs(cfg)  # DESIGN.md: about 2.1 GMAC, 1.3 in the sinc, 0.47 GRU, 0.32 blocks
    assert macs["gru_steps"] == 29
    assert round(macs["total"] / 1e9, 1) == 2.1 and round(macs["sinc"] / 1e9, 1) == 1.3
    assert round(macs["gru"] / 1e9, 2) == 0.47 and round(macs["blocks"] / 1e9, 2) == 0.32


# -- export --------------------------------------------------------------------------------
@pytest.mark.slow
def test_build_bundle_on_pruned_model(model, tmp_path):
    from edge_detector.bundle import load_bundle
    from export.onnx_export import build_bundle

    pruned = apply_plan(model, PrunePlan({"stage1": [0, 1, 4, 6, 7], "stage2": list(range(0, 16, 2)),
                                          "inner3": [0, 5, 9], "fc1": list(range(10))}, gru_layers=1))
    audio = np.stack([speechlike(4.0375, seed=11)[:64600], buzzy(4.0375, seed=11)[:64600]])
    ckpt = tmp_path / "p.pt"
    save_checkpoint(pruned, str(ckpt))
    out = build_bundle(pruned, tmp_path / "bundle", checkpoint_path=str(ckpt), audio_windows=audio, n_random=2,
                       parity_seed=0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parity"]["max_abs_diff_random"] <= manifest["parity"]["tolerance"]
    assert manifest["model"]["config"]["sinc_keep"] == [0, 1, 4, 6, 7]
    assert manifest["model"]["config"]["sinc_total"] == 8
    load_bundle(out)


# -- CLI -------------------------------------------------------------------------------------
@pytest.mark.slow
def _prune_corpus(tmp_path):
    """A 12-file protocol (4 held-out files of source HOLD) and a tiny random-init source model."""
    audio = tmp_path / "audio"
    audio.mkdir()
    lines = []
    for i in range(12):
        spk = "HOLD_a" if i >= 8 else f"SYN_{i % 2}"
        fid = f"F{i:03d}"
        if i % 2 == 0:
            write(audio / f"{fid}.wav", speechlike(1.5 + 0.2 * i, seed=i, f0=100.0 + 10 * i))
            lines.append(f"{spk} {fid} - - bonafide")
        else:
            write(audio / f"{fid}.wav", buzzy(1.5 + 0.2 * i, seed=i))
            lines.append(f"{spk} {fid} - vocoder_x spoof")
    protocol = tmp_path / "protocol.txt"
    protocol.write_text("\n".join(lines) + "\n")
    ckpt = tmp_path / "src.pt"
    torch.manual_seed(0)
    src = RawNet2(RawNet2Config(sinc_filters=4, stage1_channels=4, stage2_channels=8, gru_hidden=16, gru_layers=2,
                                fc1_dim=16))
    save_checkpoint(src, str(ckpt), meta={"val_eer": 0.5})
    return protocol, audio, ckpt


def test_prune_cli_end_to_end(tmp_path):
    """Split, decode (cached), Taylor scoring, layer drop + head re-fit, fine-tuning, logs.

    Uses its own even smaller random-init source model: the point is the plumbing,
    and every full-window forward pass is paid for by the whole suite."""
    from click.testing import CliRunner

    from edge_detector.cli import main

    protocol, audio, ckpt = _prune_corpus(tmp_path)
    out = tmp_path / "pruned"
    args = ["prune", str(ckpt), "--protocol", str(protocol), "--audio-dir", str(audio), "--out", str(out),
            "--holdout-sources", "HOLD", "--val-fraction", "0.25", "--target",
            "sinc=2,stage2=5,gru_hidden=8,gru_layers=1,fc1=8", "--steps", "2", "--finetune-epochs", "1",
            "--importance-batches", "1", "--batch-size", "4", "--no-augment", "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    log = json.loads((out / "prune_log.json").read_text())
    steps = log["steps"]
    assert [s["step"] for s in steps] == [0, 1, 2]
    assert steps[-1]["sizes"]["sinc"] == 2 and steps[-1]["config"]["gru_layers"] == 1
    assert steps[1]["gru_layers_dropped"] == [2, 1] and "head_refit_rel_error" in steps[1]
    assert steps[0]["parameters"] > steps[1]["parameters"] > steps[2]["parameters"]
    for s in steps:
        assert s["val_eer"] is not None and s["heldout_eer"] is not None
    assert log["files"] == {"train": 6, "val": 2, "heldout": 4}
    final, meta = load_checkpoint(str(out / "final.pt"))
    assert final.config.stage2_channels == 5 and final.config.sinc_total == 4 and len(final.config.sinc_keep) == 2
    assert set(final.config.sinc_keep) <= set(steps[1]["sinc_keep"])  # a later step keeps a subset
    assert meta["prune_step"] == 2
    assert (out / "step_1.pt").exists() and not (out / "work").exists()


def test_prune_with_a_teacher_selects_by_fidelity(tmp_path):
    """`prune --distill-from`: each step's fine-tuning learns the teacher and keeps the
    epoch (or the untuned weights) whose validation scores rank most like it."""
    from click.testing import CliRunner

    from edge_detector.cli import main

    protocol, audio, ckpt = _prune_corpus(tmp_path)
    out = tmp_path / "pruned"
    args = ["prune", str(ckpt), "--protocol", str(protocol), "--audio-dir", str(audio), "--out", str(out),
            "--holdout-sources", "HOLD", "--val-fraction", "0.25", "--target", "sinc=3,stage2=6,gru_hidden=12",
            "--steps", "1", "--finetune-epochs", "1", "--importance-batches", "1", "--batch-size", "4",
            "--no-augment", "--distill-from", str(ckpt), "--distill-alpha", "1", "--distill-loss", "margin-mse",
            "--select-by", "fidelity"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    log = json.loads((out / "prune_log.json").read_text())
    assert log["finetune_config"]["select_by"] == "fidelity" and log["finetune_config"]["distill_alpha"] == 1.0
    step = log["steps"][1]
    assert -1.0 <= step["val_spearman_teacher_pruned"] <= 1.0
    assert "val_spearman_teacher" in step["finetune"][0]

    bad = CliRunner().invoke(main, args[:-8] + ["--select-by", "fidelity"])  # fidelity without a teacher
    assert bad.exit_code == 2 and "--distill-from" in bad.output
