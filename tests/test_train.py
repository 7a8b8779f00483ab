"""Training (export/train.py and `edge-detect train`) on a synthetic ASVspoof-style corpus.

12 files from two sources (speaker prefixes SRCA and SRCB), tiny RawNet2 sizes, two
epochs. SRCB is held out and evaluated once at the end.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from audio_synth import buzzy, speechlike, write  # noqa: E402
from edge_detector.cli import main  # noqa: E402
from edge_detector.protocol import ProtocolEntry  # noqa: E402
from export.dataset import Corpus  # noqa: E402
from export.rawnet2 import RawNet2, RawNet2Config, load_checkpoint  # noqa: E402
from export.train import (  # noqa: E402
    TrainConfig,
    Trainer,
    apply_freeze,
    freeze_groups,
    trainable_groups_at,
)

TINY_ARGS = ["--sinc-filters", "8", "--stage2-channels", "16", "--gru-hidden", "32", "--gru-layers", "1",
             "--fc1-dim", "32", "--batch-size", "4"]


def make_corpus(root: Path) -> tuple[Path, Path]:
    """12 files: 2 sources x (3 bona fide speech-like + 3 spoof buzzy), wav and flac mixed."""
    audio = root / "audio"
    audio.mkdir(parents=True)
    lines = []
    n = 0
    for src in ("SRCA", "SRCB"):
        for k in range(3):
            n += 1
            fid = f"{src}_B{k}"
            ext = ".flac" if k % 2 else ".wav"
            write(audio / f"{fid}{ext}", speechlike(1.5 + 0.5 * k, seed=n, f0=100 + 30 * k))
            lines.append(f"{src}_spk{k} {fid} - - bonafide")
            fid = f"{src}_S{k}"
            write(audio / f"{fid}{ext}", buzzy(1.5 + 0.5 * k, seed=100 + n))
            lines.append(f"{src}_spk{k} {fid} - tts{k} spoof")
    protocol = root / "protocol.txt"
    protocol.write_text("\n".join(lines) + "\n")
    return protocol, audio


def run_train(protocol: Path, audio: Path, out: Path, *extra: str):
    args = ["train", "--protocol", str(protocol), "--audio-dir", str(audio), "--out", str(out),
            "--holdout-sources", "SRCB", *TINY_ARGS, *extra]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def history(out: Path) -> list[dict]:
    """Per-epoch records without the wall-clock field."""
    return [{k: v for k, v in rec.items() if k != "seconds"} for rec in json.loads((out / "history.json").read_text())]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def run_two_epochs(corpus, tmp_path_factory):
    protocol, audio = corpus
    out = tmp_path_factory.mktemp("train") / "run_a"
    result = run_train(protocol, audio, out, "--epochs", "2", "--seed", "11")
    return out, result


def test_train_writes_checkpoints_history_and_report(run_two_epochs, corpus):
    out, result = run_two_epochs
    for name in ("best.pt", "last.pt", "last_state.pt", "history.json", "report.json"):
        assert (out / name).is_file(), name
    hist = history(out)
    assert [h["epoch"] for h in hist] == [1, 2]
    assert all(np.isfinite(h["loss"]) and 0.0 <= h["val_eer"] <= 1.0 for h in hist)
    report = json.loads((out / "report.json").read_text())
    assert report["epochs"] == 2
    assert report["train_files"] == 4 and report["val_files"] == 2  # 6 of SRCA: 2 for validation
    held = report["heldout"]
    assert held["sources"] == ["SRCB"] and held["files"] == 6
    assert held["bonafide"] == 3 and held["spoof"] == 3
    # the reported held-out EER is the best checkpoint's, recomputed here from its own scores
    from edge_detector.audio import load_audio
    from edge_detector.metrics import compute_eer
    from edge_detector.protocol import read_protocol, resolve_audio
    from export.rawnet2 import load_checkpoint
    from export.scoring import score_signals

    protocol, audio = corpus
    entries = [e for e in read_protocol(protocol) if e.source == "SRCB"]
    paths = resolve_audio(entries, audio)
    best, _ = load_checkpoint(str(out / "best.pt"))
    scores = score_signals(best, [load_audio(paths[e.file_id]).samples for e in entries])
    labels = np.array([e.target for e in entries])
    assert held["eer"] == pytest.approx(compute_eer(scores[labels == 1], scores[labels == 0])[0], abs=1e-9)
    assert report["best_val_eer"] == min(h["val_eer"] for h in hist)
    assert report["model_config"]["gru_hidden"] == 32
    assert "held-out EER" in result.stderr


def test_checkpoints_load_with_the_tiny_sizes(run_two_epochs):
    out, _ = run_two_epochs
    for name in ("best.pt", "last.pt"):
        model, meta = load_checkpoint(str(out / name))
        cfg = model.config
        assert (cfg.sinc_filters, cfg.stage2_channels, cfg.gru_hidden, cfg.gru_layers, cfg.fc1_dim) == (8, 16, 32, 1, 32)
        assert "epoch" in meta
    assert load_checkpoint(str(out / "last.pt"))[1]["epoch"] == 2


def test_same_seed_same_history_and_resume_continues(run_two_epochs, corpus, tmp_path):
    """One epoch with the same seed reproduces epoch 1; resuming it reproduces epoch 2."""
    protocol, audio = corpus
    full, _ = run_two_epochs
    out = tmp_path / "run_b"
    run_train(protocol, audio, out, "--epochs", "1", "--seed", "11")
    assert history(out) == history(full)[:1]

    state = out / "last_state.pt"
    result = run_train(protocol, audio, out, "--epochs", "2", "--seed", "11", "--resume", str(state))
    assert "resumed from" in result.stderr and "at epoch 1" in result.stderr
    assert [h["epoch"] for h in history(out)] == [1, 2]
    assert history(out) == history(full)
    assert_same_weights(out / "last.pt", full / "last.pt")


def assert_same_weights(a: Path, b: Path) -> None:
    """The two checkpoints hold bit-identical tensors."""
    wa, wb = load_checkpoint(str(a))[0].state_dict(), load_checkpoint(str(b))[0].state_dict()
    assert wa.keys() == wb.keys()
    for k, v in wa.items():
        assert torch.equal(v, wb[k]), k


def test_another_seed_gives_another_history(run_two_epochs, corpus, tmp_path):
    protocol, audio = corpus
    full, _ = run_two_epochs
    out = tmp_path / "run_c"
    run_train(protocol, audio, out, "--epochs", "1", "--seed", "12")
    assert history(out)[0]["loss"] != history(full)[0]["loss"]


# --------------------------------------------------------------------------- freezing


def test_trainable_groups_schedule():
    assert trainable_groups_at(0, TrainConfig(freeze_epochs=0)) is None
    cfg = TrainConfig(freeze_epochs=2, unfreeze_every=1)
    assert [trainable_groups_at(e, cfg) for e in range(6)] == [1, 1, 2, 3, 4, 5]
    cfg = TrainConfig(freeze_epochs=1, unfreeze_every=2)
    assert [trainable_groups_at(e, cfg) for e in range(6)] == [1, 2, 2, 3, 3, 4]
    model = RawNet2(RawNet2Config(sinc_filters=8, stage1_channels=8, stage2_channels=16, gru_hidden=32,
                                  gru_layers=1, fc1_dim=32))
    groups = freeze_groups(model)
    assert len(groups) == 8
    assert groups[0] == [model.bn_before_gru, model.gru, model.fc1_gru, model.fc2_gru]
    assert groups[1] == [model.block5, model.fc_attention5]
    assert groups[-1] == [model.first_bn]
    apply_freeze(model, 2)
    assert all(p.requires_grad for p in model.block5.parameters())
    assert not any(p.requires_grad for p in model.block4.parameters())
    apply_freeze(model, None)
    assert all(p.requires_grad for p in model.parameters())


def _snapshot(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict, module) -> set[str]:
    after = module.state_dict()
    return {k for k, v in before.items() if not torch.equal(v, after[k])}


def _tiny_trainer(tmp_path, n_files: int = 8, **cfg_kwargs) -> Trainer:
    """A Trainer of a tiny RawNet2 on ``n_files`` alternating spoof (buzzy) / bona fide (speech-like) 1 s
    signals, batch 4, lr 1e-2, no augmentation; validation on the same files."""
    torch.manual_seed(0)
    model = RawNet2(RawNet2Config(sinc_filters=8, stage1_channels=8, stage2_channels=16, gru_hidden=32,
                                  gru_layers=1, fc1_dim=32))
    entries = [ProtocolEntry("SRCA_a", f"F{i}", "-" if i % 2 else "tts", "bonafide" if i % 2 else "spoof")
               for i in range(n_files)]
    signals = [speechlike(1.0, seed=i) if i % 2 else buzzy(1.0, seed=i) for i in range(n_files)]
    data = Corpus(entries, signals)
    cfg = TrainConfig(batch_size=4, lr=1e-2, augment=False, **cfg_kwargs)
    return Trainer(model, data, data, tmp_path, cfg, log=lambda s: None)


def test_frozen_parameters_do_not_move_in_a_training_step(tmp_path):
    trainer = _tiny_trainer(tmp_path, n_files=4, epochs=3, freeze_epochs=1, unfreeze_every=1)
    model = trainer.model

    head = ("bn_before_gru.", "gru.", "fc1_gru.", "fc2_gru.")
    before = _snapshot(model)
    trainer.train_epoch()  # epoch 0: only the head trains
    changed = _changed(before, model)
    assert changed, "nothing trained"
    assert all(k.startswith(head) for k in changed), sorted(changed)
    assert {"gru.weight_ih_l0", "fc2_gru.weight"} <= changed
    # the frozen BN layers kept their running statistics too (they ran in eval mode)
    assert "first_bn.running_mean" not in changed and "block5.0.bn2.running_mean" not in changed

    trainer.epoch = 1  # epoch 1: block5 and its attention join
    before = _snapshot(model)
    trainer.train_epoch()
    changed = _changed(before, model)
    assert any(k.startswith("block5.") for k in changed)
    assert any(k.startswith("fc_attention5.") for k in changed)
    allowed = head + ("block5.", "fc_attention5.")
    assert all(k.startswith(allowed) for k in changed), sorted(changed)


# --------------------------------------------------------------------------- missing torch


def test_missing_torch_names_the_extra(corpus, tmp_path):
    protocol, audio = corpus
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules['torch'] = None  # as if torch were not installed
        from edge_detector.commands._common import require_torch
        from edge_detector.errors import MissingExtraError
        try:
            require_torch()
        except MissingExtraError as exc:
            print('MISSING_EXTRA', exc.exit_code, exc)
        from edge_detector.cli import main
        try:
            main(['train', '--protocol', {str(protocol)!r}, '--audio-dir', {str(audio)!r},
                  '--out', {str(tmp_path / 'out')!r}])
        except SystemExit as exc:
            print('EXIT', exc.code)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "MISSING_EXTRA 12" in proc.stdout
    assert "edge-detector[train]" in proc.stdout
    assert "EXIT 12" in proc.stdout
    assert "edge-detector[train]" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- distillation

def _tiny_data():
    entries = [ProtocolEntry("SRCA_a", f"F{i}", "-" if i % 2 else "tts", "bonafide" if i % 2 else "spoof")
               for i in range(4)]
    signals = [speechlike(1.0, seed=i) if i % 2 else buzzy(1.0, seed=i) for i in range(4)]
    return Corpus(entries, signals)


def test_distillation_term_is_zero_for_an_identical_teacher_and_positive_otherwise(tmp_path):
    import copy

    torch.manual_seed(0)
    sizes = dict(sinc_filters=8, stage1_channels=8, stage2_channels=16, gru_hidden=32, gru_layers=1, fc1_dim=32)
    student = RawNet2(RawNet2Config(**sizes)).eval()
    data = _tiny_data()
    cfg = TrainConfig(epochs=1, batch_size=4, augment=False, distill_alpha=1.0, distill_temperature=2.0)
    x = torch.from_numpy(np.stack([speechlike(4.0375, seed=9)[:64600], buzzy(4.0375, seed=9)[:64600]]))

    same = Trainer(student, data, data, tmp_path / "a", cfg, log=lambda s: None, teacher=copy.deepcopy(student))
    with torch.no_grad():
        assert float(same._distill_loss(x, student(x))) == pytest.approx(0.0, abs=1e-6)

    torch.manual_seed(1)
    other = RawNet2(RawNet2Config(**sizes)).eval()
    with torch.no_grad():  # make the teacher clearly disagree with the student
        other.fc2_gru.bias.copy_(torch.tensor([3.0, -3.0]))
    diff = Trainer(student, data, data, tmp_path / "b", cfg, log=lambda s: None, teacher=other)
    with torch.no_grad():
        assert float(diff._distill_loss(x, student(x))) > 0.1
    assert all(not p.requires_grad for p in other.parameters())  # the teacher never trains


def test_distillation_moves_the_student_towards_the_teacher(tmp_path):
    torch.manual_seed(0)
    sizes = dict(sinc_filters=8, stage1_channels=8, stage2_channels=16, gru_hidden=32, gru_layers=1, fc1_dim=32)
    student = RawNet2(RawNet2Config(**sizes))
    teacher = RawNet2(RawNet2Config(**sizes)).eval()
    with torch.no_grad():
        teacher.fc2_gru.bias.copy_(torch.tensor([2.0, -2.0]))  # teacher: "spoof" for everything
    data = _tiny_data()
    x = torch.from_numpy(np.stack([s[:16000] for s in data.signals]))
    cfg = TrainConfig(epochs=1, batch_size=4, lr=3e-3, augment=False, distill_alpha=1.0)
    trainer = Trainer(student, data, data, tmp_path, cfg, log=lambda s: None, teacher=teacher)
    with torch.no_grad():
        before = float(trainer._distill_loss(x, student.eval()(x)))
    for _ in range(8):
        trainer.train_epoch()
    with torch.no_grad():
        after = float(trainer._distill_loss(x, student.eval()(x)))
    assert after < before


_KD_SIZES = dict(sinc_filters=8, stage1_channels=8, stage2_channels=16, gru_hidden=32, gru_layers=1, fc1_dim=32)


def test_margin_mse_is_the_squared_error_of_the_logit_margins(tmp_path):
    torch.manual_seed(0)
    student = RawNet2(RawNet2Config(**_KD_SIZES)).eval()
    teacher = RawNet2(RawNet2Config(**_KD_SIZES)).eval()
    with torch.no_grad():
        teacher.fc2_gru.bias.copy_(torch.tensor([1.0, -1.0]))
    cfg = TrainConfig(epochs=1, batch_size=4, augment=False, distill_alpha=1.0, distill_loss="margin-mse")
    trainer = Trainer(student, _tiny_data(), _tiny_data(), tmp_path, cfg, log=lambda s: None, teacher=teacher)
    x = torch.from_numpy(np.stack([speechlike(1.0, seed=3), buzzy(1.0, seed=4)]))
    with torch.no_grad():
        s, t = student(x), teacher(x)
        expected = float((((s[:, 1] - s[:, 0]) - (t[:, 1] - t[:, 0])) ** 2).mean())
        assert float(trainer._distill_loss(x, s)) == pytest.approx(expected, rel=1e-5)
        assert expected > 0.1  # the teacher's bias moved every margin by -2


def test_mixing_is_only_for_pure_distillation_and_changes_the_share_asked_for(tmp_path):
    teacher = RawNet2(RawNet2Config(**_KD_SIZES)).eval()
    student = RawNet2(RawNet2Config(**_KD_SIZES))
    data = _tiny_data()
    with pytest.raises(ValueError, match="pure distillation"):
        Trainer(student, data, data, tmp_path / "a", TrainConfig(distill_alpha=0.5, distill_mix=0.5),
                log=lambda s: None, teacher=teacher)
    with pytest.raises(ValueError, match="teacher"):
        Trainer(student, data, data, tmp_path / "b", TrainConfig(select_by="fidelity"), log=lambda s: None)
    crops = [np.full(100, float(i), dtype=np.float32) for i in range(40)]
    none = Trainer(student, data, data, tmp_path / "c", TrainConfig(distill_alpha=1.0), log=lambda s: None,
                   teacher=teacher)
    assert all(a is b for a, b in zip(none._mix(crops), crops))
    mixer = Trainer(student, data, data, tmp_path / "d", TrainConfig(distill_alpha=1.0, distill_mix=0.5),
                    log=lambda s: None, teacher=teacher)
    mixed = mixer._mix(crops)
    changed = [i for i, (a, b) in enumerate(zip(mixed, crops)) if not np.array_equal(a, b)]
    assert 8 <= len(changed) <= 32  # about half of 40
    for i in changed:  # a convex mix of this crop and another one: strictly between two distinct levels
        value = float(mixed[i][0])
        assert np.all(mixed[i] == value) and value != float(i)
        assert 0.0 <= value <= 39.0


def test_fidelity_selection_keeps_the_epoch_that_ranks_most_like_the_teacher(tmp_path):
    torch.manual_seed(0)
    teacher = RawNet2(RawNet2Config(**_KD_SIZES)).eval()
    student = RawNet2(RawNet2Config(**_KD_SIZES))
    data = _tiny_data()
    cfg = TrainConfig(epochs=3, batch_size=4, lr=3e-3, augment=False, distill_alpha=1.0,
                      distill_loss="margin-mse", select_by="fidelity")
    trainer = Trainer(student, data, data, tmp_path, cfg, log=lambda s: None, teacher=teacher)
    result = trainer.fit()
    rhos = [h["val_spearman_teacher"] for h in result["history"]]
    # the last record is the final model's rank correlation with the teacher, recomputed here
    from export.scoring import score_signals
    from scipy.stats import spearmanr

    last = spearmanr(score_signals(student, data.signals), score_signals(teacher, data.signals)).statistic
    assert rhos[-1] == pytest.approx(float(last), abs=1e-6)
    best_epoch = int(np.argmax(rhos)) + 1
    meta = torch.load(tmp_path / "best.pt", map_location="cpu", weights_only=False)["meta"]
    assert meta["epoch"] == best_epoch
    assert meta["val_spearman_teacher"] == pytest.approx(max(rhos))


# --------------------------------------------------------------------------- weight averaging, LR decay




def test_cosine_learning_rate_schedule_and_its_use_in_an_epoch(tmp_path):
    trainer = _tiny_trainer(tmp_path, epochs=6, lr_final=1e-4, lr_decay_start=2)
    lrs = [trainer.lr_at(e) for e in range(6)]
    assert lrs[:3] == [1e-2, 1e-2, 1e-2]  # constant before the decay, and its first epoch is at lr
    # t = 1/4, 1/2, 3/4 of the 4 decay epochs: lr_final + (lr - lr_final)(1 + cos(pi t)) / 2
    for e, t in ((3, 0.25), (4, 0.5), (5, 0.75)):
        assert lrs[e] == pytest.approx(1e-4 + (1e-2 - 1e-4) * (1 + np.cos(np.pi * t)) / 2)
    assert lrs[4] == pytest.approx((1e-2 + 1e-4) / 2)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    trainer.epoch = 4
    trainer.train_epoch()
    assert all(g["lr"] == pytest.approx(lrs[4]) for g in trainer.optimizer.param_groups)
    assert _tiny_trainer(tmp_path, epochs=6).lr_at(5) == 1e-2  # no lr_final: constant
    with pytest.raises(ValueError, match="lr_final"):
        _tiny_trainer(tmp_path, epochs=6, lr_final=0.5)
    with pytest.raises(ValueError, match="ema_decay"):
        _tiny_trainer(tmp_path, epochs=6, ema_decay=1.0)


def test_weight_average_follows_the_ema_of_every_step_including_batchnorm_statistics(tmp_path):
    decay = 0.75
    trainer = _tiny_trainer(tmp_path, epochs=1, ema_decay=decay)
    after_steps = []
    step = trainer.optimizer.step

    def recording_step(*a, **k):
        out = step(*a, **k)
        after_steps.append(_snapshot(trainer.model))
        return out

    trainer.optimizer.step = recording_step
    trainer.train_epoch()
    assert len(after_steps) == 2  # 8 files, batches of 4
    expected = {k: v.clone() for k, v in after_steps[0].items()}  # the first update copies
    for snap in after_steps[1:]:
        for k, v in snap.items():
            if v.is_floating_point():
                expected[k] = decay * expected[k] + (1 - decay) * v
    averaged = trainer.evaluated_model.state_dict()
    assert trainer.evaluated_model is not trainer.model
    for k, v in expected.items():
        if v.is_floating_point():
            assert torch.allclose(averaged[k], v, atol=1e-6), k
    assert not torch.equal(averaged["first_bn.running_mean"], trainer.model.state_dict()["first_bn.running_mean"])
    assert not torch.equal(averaged["fc2_gru.weight"], trainer.model.state_dict()["fc2_gru.weight"])
    # validation scores the average and reports the raw weights beside it
    val = trainer.validate()
    assert set(val) == {"val_eer", "val_eer_raw"}


def test_averaged_run_saves_the_average_keeps_epochs_and_resumes_exactly(corpus, tmp_path):
    protocol, audio = corpus
    opts = ("--seed", "11", "--ema-decay", "0.9", "--lr-final", "0", "--keep-every", "1")
    full = tmp_path / "full"
    run_train(protocol, audio, full, "--epochs", "2", *opts)
    hist = history(full)
    assert [h["epoch"] for h in hist] == [1, 2]
    assert all("val_eer_raw" in h for h in hist)
    assert hist[0]["lr"] == pytest.approx(1e-4) and hist[1]["lr"] == pytest.approx(1e-4 / 2)
    for name in ("epoch_1.pt", "epoch_2.pt"):
        assert (full / name).is_file()
    state = torch.load(full / "last_state.pt", weights_only=False)
    last, _ = load_checkpoint(str(full / "last.pt"))
    ema_module = {k[len("module."):]: v for k, v in state["ema"].items() if k.startswith("module.")}
    for k, v in last.state_dict().items():
        assert torch.equal(v, ema_module[k]), k  # last.pt holds the average, not the raw weights
    assert any(not torch.equal(v, state["model"][k]) for k, v in last.state_dict().items() if v.is_floating_point())

    part = tmp_path / "part"
    run_train(protocol, audio, part, "--epochs", "1", *opts)
    run_train(protocol, audio, part, "--epochs", "2", *opts, "--resume", str(part / "last_state.pt"))
    assert history(part) == hist
    assert_same_weights(part / "last.pt", full / "last.pt")


def test_switching_averaging_on_at_resume_starts_selection_over(run_two_epochs, corpus, tmp_path):
    protocol, audio = corpus
    full, _ = run_two_epochs
    out = tmp_path / "switched"
    out.mkdir()
    result = run_train(protocol, audio, out, "--epochs", "3", "--seed", "11", "--ema-decay", "0.9",
                       "--resume", str(full / "last_state.pt"))
    assert "selection starts over" in result.stderr
    hist = history(out)
    assert hist[-1]["epoch"] == 3 and hist[-1]["best"] is True  # first averaged epoch is the best so far
    assert load_checkpoint(str(out / "best.pt"))[1]["epoch"] == 3
