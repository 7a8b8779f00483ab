"""An AASIST checkpoint as the distillation teacher of a RawNet2 student (export/teacher.py)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from audio_synth import buzzy, speechlike  # noqa: E402
from export.aasist import AASIST, AASISTConfig, save_aasist  # noqa: E402
from export.dataset import Corpus  # noqa: E402
from export.rawnet2 import RawNet2, RawNet2Config, save_checkpoint  # noqa: E402
from export.teacher import load_teacher  # noqa: E402
from export.train import TrainConfig, Trainer  # noqa: E402
from edge_detector.protocol import ProtocolEntry  # noqa: E402

SIZES = dict(sinc_filters=8, stage1_channels=8, stage2_channels=16, gru_hidden=32, gru_layers=1, fc1_dim=32)


def tiny_aasist() -> AASIST:
    torch.manual_seed(0)
    cfg = AASISTConfig(name="tiny", encoder=[[1, 4], [4, 6]], gat_dims=[6, 5], pool_ratios=[0.5, 0.5, 0.5, 0.5])
    model = AASIST(cfg).eval()
    with torch.no_grad():  # a clear opinion: bona fide margin of about +3 on every input
        model.out_layer.bias.copy_(torch.tensor([-1.5, 1.5]))
    return model


def test_load_teacher_reads_the_family(tmp_path):
    save_aasist(tiny_aasist(), tmp_path / "aasist.pt")
    save_checkpoint(RawNet2(RawNet2Config(**SIZES)), str(tmp_path / "rawnet2.pt"))
    teacher, family = load_teacher(tmp_path / "aasist.pt")
    assert family == "AASIST" and isinstance(teacher, AASIST) and not teacher.training
    assert load_teacher(tmp_path / "rawnet2.pt")[1] == "RawNet2"


def test_margin_target_is_the_aasist_logit_margin(tmp_path):
    save_aasist(tiny_aasist(), tmp_path / "aasist.pt")
    teacher, _ = load_teacher(tmp_path / "aasist.pt")
    torch.manual_seed(1)
    student = RawNet2(RawNet2Config(**SIZES)).eval()
    entries = [ProtocolEntry("SRCA_a", f"F{i}", "-" if i % 2 else "tts", "bonafide" if i % 2 else "spoof")
               for i in range(2)]
    data = Corpus(entries, [buzzy(1.0, seed=0), speechlike(1.0, seed=1)])
    cfg = TrainConfig(epochs=1, batch_size=2, augment=False, distill_alpha=1.0, distill_loss="margin-mse")
    trainer = Trainer(student, data, data, tmp_path / "run", cfg, log=lambda s: None, teacher=teacher)
    x = torch.from_numpy(np.stack([speechlike(1.0, seed=3), buzzy(1.0, seed=4)]))
    with torch.no_grad():
        s, logits = student(x), teacher(x)
        margin = logits[:, 1] - logits[:, 0]
        assert float(margin.min()) > 2.0  # the teacher's opinion, not the student's
        expected = float((((s[:, 1] - s[:, 0]) - margin) ** 2).mean())
        assert float(trainer._distill_loss(x, s)) == pytest.approx(expected, rel=1e-5)
    assert all(not p.requires_grad for p in teacher.parameters())
