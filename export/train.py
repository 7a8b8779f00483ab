"""Training and fine-tuning RawNet2 on ASVspoof-style protocols.

The official recipe is the default: Adam (lr 1e-4, weight decay 1e-4), batch 32,
class-weighted cross-entropy (0.1 spoof, 0.9 bona fide), random 64 600-sample crops
for training and the first window for validation. Additions for small corpora and
fine-tuning: RawBoost augmentation (on by default), a freeze schedule (train the head
first, then unfreeze one stage per epoch from the top), best-EER checkpointing,
resumable state and a fixed seed.
"""
from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from edge_detector.benchmarking.stats import spearman
from edge_detector.metrics import compute_eer

from .dataset import Corpus, random_crop
from .rawnet2 import RawNet2, RawNet2Config, load_checkpoint, save_checkpoint
from .scoring import score_signals

DISTILL_LOSSES = ("kl", "margin-mse")
SELECT_BY = ("eer", "fidelity")


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-4
    class_weights: tuple[float, float] = (0.1, 0.9)  # (spoof, bona fide), the official weights
    seed: int = 1234
    augment: bool = True
    freeze_epochs: int = 0  # epochs training only the head (bn_before_gru, GRU, FC)
    unfreeze_every: int = 1  # then unfreeze one more stage every N epochs, from the top
    threads: int = 0  # 0 = torch default
    balanced_sampling: bool = False
    source_balanced: bool = False  # sample (source, label) groups with weight ∝ 1/sqrt(group size)
    distill_alpha: float = 0.0  # weight of the teacher term (0 = plain cross-entropy)
    distill_temperature: float = 2.0
    distill_loss: str = "kl"  # "kl" (soft targets at a temperature) or "margin-mse" (match the logit margin)
    distill_mix: float = 0.0  # pure distillation only: share of crops mixed with another crop (label-free inputs)
    select_by: str = "eer"  # "eer" (validation EER) or "fidelity" (validation Spearman with the teacher)
    # Pair-aware training (export/pair_training.py): share of each batch made of (bona fide,
    # vocoded copy) pairs under one recording condition, the supervised contrastive weight
    # and temperature, the share of synthetic non-speech crops (labelled spoof), and the
    # number of steps per epoch (0 = one pass over the training files).
    pair_fraction: float = 0.0
    contrastive_weight: float = 0.0
    contrastive_temperature: float = 0.1
    nonspeech_fraction: float = 0.0
    steps_per_epoch: int = 0
    # Share of each batch made of speaker-matched couples: a spoof of a real system and a bona fide
    # file of the same source (speaker prefix, e.g. LJ, VCTK), under one recording condition, so
    # that a voice spoofed often never predicts the label on its own.
    matched_fraction: float = 0.0
    fft_frontend: bool = False  # train through the sinc bank with FFT convolution (same output, faster)
    # Weight averaging and learning-rate decay. ema_decay > 0 keeps an exponential moving average
    # of the weights (and BatchNorm statistics), updated after every step; validation, best.pt and
    # last.pt then use the averaged model. lr_final set: cosine decay of the learning rate from lr
    # at epoch lr_decay_start to lr_final at the last epoch (a function of the epoch, so a resumed
    # run follows the same schedule). keep_every > 0 also writes epoch_N.pt every N epochs.
    ema_decay: float = 0.0
    lr_final: Optional[float] = None
    lr_decay_start: int = 0
    keep_every: int = 0
    log_every: int = 1
    extra: dict = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def freeze_groups(model: RawNet2) -> list[list[nn.Module]]:
    """Module groups from the top of the network down: unfrozen in this order."""
    groups: list[list[nn.Module]] = [[model.bn_before_gru, model.gru, model.fc1_gru, model.fc2_gru]]
    for i in reversed(range(6)):
        groups.append([getattr(model, f"block{i}"), getattr(model, f"fc_attention{i}")])
    groups.append([model.first_bn])
    return groups


def apply_freeze(model: RawNet2, n_trainable_groups: Optional[int]) -> None:
    """Let only the top ``n`` groups train (``None`` = all); frozen BN layers keep their statistics."""
    groups = freeze_groups(model)
    n = len(groups) if n_trainable_groups is None else n_trainable_groups
    for gi, modules in enumerate(groups):
        trainable = gi < n
        for m in modules:
            for p in m.parameters():
                p.requires_grad_(trainable)
            if not trainable:
                m.eval()


def trainable_groups_at(epoch: int, cfg: TrainConfig) -> Optional[int]:
    if cfg.freeze_epochs <= 0:
        return None
    if epoch < cfg.freeze_epochs:
        return 1
    return 1 + 1 + (epoch - cfg.freeze_epochs) // max(1, cfg.unfreeze_every)


class Trainer:
    """Holds model, optimiser and data; ``fit`` runs the epochs and keeps the best checkpoint."""

    def __init__(
        self,
        model: RawNet2,
        train: Corpus,
        val: Corpus,
        out_dir: str | Path,
        cfg: TrainConfig,
        augment_fn: Optional[Callable[[np.ndarray], np.ndarray]] = None,
        log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
        teacher: Optional[nn.Module] = None,
        pairs: Optional[dict[int, list[int]]] = None,
        nonspeech: Optional[list[np.ndarray]] = None,
    ) -> None:
        self.model, self.train_set, self.val_set, self.cfg = model, train, val, cfg
        self.pairs = pairs or {}
        self.nonspeech = nonspeech or []
        if cfg.pair_fraction > 0 and not self.pairs:
            raise ValueError("pair_fraction > 0 needs vocoded pairs of training files (train --vocoded DIR)")
        if cfg.pair_fraction + cfg.matched_fraction + cfg.nonspeech_fraction > 1.0 + 1e-9:
            raise ValueError("pair_fraction + matched_fraction + nonspeech_fraction must not exceed 1 (shares of one batch)")
        if cfg.nonspeech_fraction > 0 and not self.nonspeech:
            raise ValueError("nonspeech_fraction > 0 needs a bank of non-speech signals")
        if cfg.fft_frontend:
            model.sinc.use_fft = True
        # Paired bona fide files, drawn with weight 1/sqrt(size of their corpus).
        from .pair_training import group_key, matched_index, sqrt_balanced

        paired = np.array(sorted(self.pairs), dtype=np.int64)
        self._paired_sources = paired
        self._paired_weights = sqrt_balanced([group_key(train.entries[int(i)]) for i in paired])
        self._matched = matched_index(train.entries, self.pairs)
        if cfg.matched_fraction > 0 and not len(self._matched[0]):
            raise ValueError("matched_fraction > 0 needs spoofs whose source also has bona fide training files")
        self.teacher = teacher.eval() if teacher is not None else None
        if self.teacher is not None:
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.augment_fn = augment_fn
        self.log = log
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        if not 0.0 <= cfg.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {cfg.ema_decay}")
        if cfg.lr_final is not None and not 0.0 <= cfg.lr_final <= cfg.lr:
            raise ValueError(f"lr_final must be in [0, lr={cfg.lr}], got {cfg.lr_final}")
        # Polyak/EMA weight averaging (Izmailov et al. 2018, "Averaging weights leads to wider
        # optima and better generalization", arXiv 1803.05407) through torch's own swa_utils.
        self.ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
                    if cfg.ema_decay > 0 else None)
        # class index 0 = spoof, 1 = bona fide
        self.loss_weights = torch.tensor(cfg.class_weights, dtype=torch.float32)
        self.rng = np.random.default_rng(cfg.seed)
        if cfg.distill_loss not in DISTILL_LOSSES:
            raise ValueError(f"distill_loss must be one of {DISTILL_LOSSES}, got {cfg.distill_loss!r}")
        if cfg.select_by not in SELECT_BY:
            raise ValueError(f"select_by must be one of {SELECT_BY}, got {cfg.select_by!r}")
        if cfg.select_by == "fidelity" and teacher is None:
            raise ValueError("select_by='fidelity' needs a teacher to be faithful to")
        if cfg.distill_mix > 0 and not cfg.distill_alpha >= 1.0:
            raise ValueError("distill_mix needs pure distillation (distill_alpha=1): a mixed crop has no label")
        self.epoch = 0
        self.best_eer = float("inf")
        self.best_key = float("inf")  # what select_by minimises (EER, or 1 - Spearman with the teacher)
        self.history: list[dict] = []
        self._teacher_val_scores: Optional[np.ndarray] = None

    # -- state -------------------------------------------------------------------------
    def save_state(self) -> None:
        torch.save(
            {
                "model": self.model.state_dict(),
                "config": self.model.config.to_dict(),
                "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch,
                "best_eer": self.best_eer,
                "best_key": self.best_key,
                "history": self.history,
                "rng": self.rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "augment_rng": _augment_rng_state(self.augment_fn),
                "train_config": asdict(self.cfg),
                "ema": self.ema.state_dict() if self.ema is not None else None,
            },
            self.out_dir / "last_state.pt",
        )

    def resume(self, path: str | Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=False)
        self.model.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.best_eer = float(state["best_eer"])
        self.best_key = float(state.get("best_key", self.best_eer))
        self.history = list(state["history"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        elif self.ema is not None:
            # Averaging switched on at resume: the average starts from the resumed weights at the
            # first step, and selection starts over (the earlier best was another model's).
            self.best_eer = self.best_key = float("inf")
            self.log("weight averaging starts at this resume: best checkpoint selection starts over")
        self.rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        # RawBoost draws from its own generator: restore it too, or a resumed run augments differently.
        if state.get("augment_rng") is not None and isinstance(getattr(self.augment_fn, "rng", None), np.random.Generator):
            self.augment_fn.rng.bit_generator.state = state["augment_rng"]
        self.log(f"resumed from {path} at epoch {self.epoch} (best EER {self.best_eer:.4f})")

    # -- one epoch -----------------------------------------------------------------------
    def _order(self) -> np.ndarray:
        labels = self.train_set.labels
        n = len(labels)
        if self.cfg.source_balanced:
            return self._source_balanced_order()
        if not self.cfg.balanced_sampling:
            return self.rng.permutation(n)
        # Oversample the minority class so each epoch sees both classes equally often.
        idx = [np.flatnonzero(labels == c) for c in (0, 1)]
        m = max(len(i) for i in idx)
        both = np.concatenate([self.rng.choice(i, m, replace=len(i) < m) for i in idx])
        return self.rng.permutation(both)

    def _source_balanced_order(self) -> np.ndarray:
        """Draw an epoch where big (source, label) groups count less than their size.

        In a corpus where one speaker supplies most spoofs and another corpus most bona
        fide files, plain sampling teaches the speaker. Weighting each file by
        1/sqrt(group size) gives every group mass ∝ sqrt(size): small groups (bona fide
        of the spoofed speakers) are seen far more often, without repeating a one-file
        group as often as a 250-file one.
        """
        from edge_detector.protocol import source_of

        from .pair_training import sqrt_balanced

        keys = [(source_of(e.speaker), e.label) for e in self.train_set.entries]
        return self.rng.choice(len(keys), size=len(keys), replace=True, p=sqrt_balanced(keys))

    def _distill_loss(self, xb: torch.Tensor, student_log_probs: torch.Tensor) -> torch.Tensor:
        """The teacher term on the same (augmented) crops.

        The edge model is judged by how often it decides like the full model and how well
        its scores rank like the full model's, so after pruning it learns the full model's
        outputs, not only the labels. ``kl``: KL(teacher ‖ student) at temperature T, scaled
        by T². ``margin-mse``: squared error between the two models' logit margins
        (log P(bona fide) − log P(spoof)), the quantity a threshold decision and a rank
        correlation actually see; KL saturates where both models are confident, the margin
        does not.
        """
        with torch.no_grad():
            teacher_log_probs = self.teacher(xb)
        if self.cfg.distill_loss == "margin-mse":
            return F.mse_loss(student_log_probs[:, 1] - student_log_probs[:, 0],
                              teacher_log_probs[:, 1] - teacher_log_probs[:, 0])
        t = float(self.cfg.distill_temperature)
        return F.kl_div(F.log_softmax(student_log_probs / t, dim=1), F.log_softmax(teacher_log_probs / t, dim=1),
                        reduction="batchmean", log_target=True) * t * t

    def _mix(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """Replace a share ``distill_mix`` of the crops by a random-weight sum of two crops.

        Pure distillation needs no labels, so inputs off the training distribution are
        allowed, and a student that has to follow the teacher beyond the training files
        is what held-out sources ask for.
        """
        p = float(self.cfg.distill_mix)
        if p <= 0 or len(crops) < 2:
            return crops
        out = list(crops)
        for i in range(len(out)):
            if self.rng.random() < p:
                j = int(self.rng.integers(len(crops) - 1))
                j += j >= i
                w = float(self.rng.uniform(0.2, 0.8))
                out[i] = (w * crops[i] + (1 - w) * crops[j]).astype(np.float32)
        return out

    def _pair_batch(self, sampler) -> tuple[list[np.ndarray], np.ndarray]:
        """One batch: pairs under a shared condition, non-speech crops, class-balanced rest."""
        from .augment_codec import same_condition
        from .pair_training import aligned_crops, pick_copy

        bs, rng, sig = self.cfg.batch_size, self.rng, self.train_set.signals
        labels = self.train_set.labels
        n_pairs = int(round(bs * self.cfg.pair_fraction / 2))
        n_non = int(round(bs * self.cfg.nonspeech_fraction))
        crops: list[np.ndarray] = []
        ys: list[int] = []

        def add_couple(bona: np.ndarray, spoof: np.ndarray) -> None:  # one recording condition for both
            if self.augment_fn is not None:
                bona, spoof = same_condition(self.augment_fn, bona, spoof)
            crops.extend([bona, spoof])
            ys.extend([1, 0])

        if n_pairs:
            paired = self._paired_sources
            for i in paired[sampler.rng.choice(len(paired), size=n_pairs, p=self._paired_weights)]:
                j = pick_copy(self.pairs[int(i)], rng)
                add_couple(*aligned_crops(sig[int(i)], sig[j], rng))
        spoofs, weights, bona_of = self._matched
        for _ in range(int(round(bs * self.cfg.matched_fraction / 2))):
            j = int(spoofs[sampler.rng.choice(len(spoofs), p=weights)])
            same_source = bona_of[j]
            i = int(same_source[int(rng.integers(len(same_source)))])
            add_couple(random_crop(sig[i], rng), random_crop(sig[j], rng))
        for _ in range(n_non):
            x = random_crop(self.nonspeech[int(rng.integers(len(self.nonspeech)))], rng)
            crops.append(self.augment_fn(x) if self.augment_fn is not None else x)
            ys.append(0)
        rest = bs - len(crops)
        n_bona = (rest + int(rng.integers(2))) // 2
        for i in np.concatenate([sampler.draw(1, n_bona), sampler.draw(0, rest - n_bona)]):
            x = random_crop(sig[int(i)], rng)
            crops.append(self.augment_fn(x) if self.augment_fn is not None else x)
            ys.append(int(labels[int(i)]))
        return [np.asarray(c, dtype=np.float32) for c in crops], np.array(ys, dtype=np.int64)

    def _pair_epoch(self) -> float:
        """One epoch of pair-aware training (see :mod:`export.pair_training`)."""
        from .pair_training import BalancedSampler, supervised_contrastive

        sampler = BalancedSampler(self.train_set.entries, self.rng)
        steps = self.cfg.steps_per_epoch or max(1, len(self.train_set.entries) // self.cfg.batch_size)
        losses = []
        t0 = time.time()
        for b in range(steps):
            crops, ys = self._pair_batch(sampler)
            xb, yb = torch.from_numpy(np.stack(crops)), torch.from_numpy(ys)
            with torch.no_grad():
                filtered = self.model.front(xb)
            log_probs, emb = self.model.head_with_embedding(self.model.encode(filtered))
            loss = F.nll_loss(log_probs, yb, weight=self.loss_weights)
            if self.cfg.contrastive_weight > 0:
                loss = loss + self.cfg.contrastive_weight * supervised_contrastive(
                    emb, yb, self.cfg.contrastive_temperature)
            self._optimise(loss, losses, b + 1, steps, t0)
        return _epoch_loss(losses)

    @property
    def evaluated_model(self) -> RawNet2:
        """The model that is validated and saved: the weight average when ``ema_decay`` > 0."""
        return self.ema.module if self.ema is not None else self.model

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch``: ``lr``, or the cosine decay to ``lr_final``.

        Cosine annealing as in Loshchilov & Hutter, "SGDR" (arXiv 1608.03983), one cycle without
        restarts: lr_final + (lr - lr_final)(1 + cos(pi t)) / 2, t the fraction of the decay
        epochs [lr_decay_start, epochs) already done.
        """
        cfg = self.cfg
        if cfg.lr_final is None or epoch < cfg.lr_decay_start:
            return cfg.lr
        span = max(1, cfg.epochs - cfg.lr_decay_start)
        t = min(1.0, (epoch - cfg.lr_decay_start) / span)
        return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1.0 + float(np.cos(np.pi * t)))

    def train_epoch(self) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.epoch)
        if self.cfg.pair_fraction > 0 or self.cfg.nonspeech_fraction > 0 or self.cfg.matched_fraction > 0:
            self.model.train()
            apply_freeze(self.model, trainable_groups_at(self.epoch, self.cfg))
            return self._pair_epoch()
        self.model.train()
        apply_freeze(self.model, trainable_groups_at(self.epoch, self.cfg))
        order = self._order()
        losses = []
        bs = self.cfg.batch_size
        n_batches = (len(order) + bs - 1) // bs
        t0 = time.time()
        for b in range(n_batches):
            rows = order[b * bs : (b + 1) * bs]
            crops = []
            for i in rows:
                x = random_crop(self.train_set.signals[i], self.rng)
                if self.augment_fn is not None:
                    x = self.augment_fn(x)
                crops.append(np.asarray(x, dtype=np.float32))
            xb = torch.from_numpy(np.stack(self._mix(crops)))
            yb = torch.from_numpy(self.train_set.labels[rows])
            log_probs = self.model(xb)
            if self.teacher is not None and self.cfg.distill_alpha >= 1.0:
                loss = self._distill_loss(xb, log_probs)
            else:
                loss = F.nll_loss(log_probs, yb, weight=self.loss_weights)
                if self.teacher is not None and self.cfg.distill_alpha > 0:
                    loss = (1 - self.cfg.distill_alpha) * loss + self.cfg.distill_alpha * self._distill_loss(xb, log_probs)
            self._optimise(loss, losses, b + 1, n_batches, t0)
        return _epoch_loss(losses)

    def _optimise(self, loss: torch.Tensor, losses: list[float], done: int, total: int, t0: float) -> None:
        """One optimiser step on ``loss``; records it and updates the progress line."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        losses.append(float(loss.detach()))
        _progress(f"epoch {self.epoch + 1}/{self.cfg.epochs}", done, total, t0, f"loss {np.mean(losses):.4f}")

    def validate(self, scores: Optional[np.ndarray] = None) -> dict:
        """Validation EER, and with a teacher the Spearman correlation of the two models' scores.

        ``scores``: the model's validation scores when the caller already has them.
        """
        if scores is None:
            scores = score_signals(self.evaluated_model, self.val_set.signals)
        labels = self.val_set.labels
        eer, _ = compute_eer(scores[labels == 1], scores[labels == 0])
        out = {"val_eer": float(eer)}
        if self.ema is not None:  # the raw weights too, to show what averaging changes
            raw = score_signals(self.model, self.val_set.signals)
            out["val_eer_raw"] = float(compute_eer(raw[labels == 1], raw[labels == 0])[0])
        if self.teacher is not None:
            if self._teacher_val_scores is None:
                self._teacher_val_scores = score_signals(self.teacher, self.val_set.signals)
            rho = spearman(scores, self._teacher_val_scores)
            out["val_spearman_teacher"] = float(rho) if rho is not None else 0.0
        return out

    def selection_key(self, val: dict) -> float:
        """What ``select_by`` minimises for a :meth:`validate` record (EER, or 1 − Spearman with the teacher)."""
        if self.cfg.select_by == "fidelity":
            return 1.0 - val["val_spearman_teacher"]
        return val["val_eer"]

    def fit(self) -> dict:
        while self.epoch < self.cfg.epochs:
            t0 = time.time()
            loss = self.train_epoch()
            val = self.validate()
            self.epoch += 1
            key = self.selection_key(val)
            improved = key < self.best_key
            if improved:
                self.best_key = key
                self.best_eer = val["val_eer"]
                save_checkpoint(self.evaluated_model, str(self.out_dir / "best.pt"), meta={"epoch": self.epoch, **val})
            if self.cfg.keep_every > 0 and self.epoch % self.cfg.keep_every == 0:
                save_checkpoint(self.evaluated_model, str(self.out_dir / f"epoch_{self.epoch}.pt"),
                                meta={"epoch": self.epoch, **val})
            rec = {"epoch": self.epoch, "loss": loss, **val, "lr": self.lr_at(self.epoch - 1),
                   "seconds": round(time.time() - t0, 1), "best": improved}
            self.history.append(rec)
            self.log(json.dumps(rec))
            self.save_state()
        save_checkpoint(self.evaluated_model, str(self.out_dir / "last.pt"), meta={"epoch": self.epoch})
        (self.out_dir / "history.json").write_text(json.dumps(self.history, indent=2))
        return {"best_val_eer": self.best_eer, "epochs": self.epoch, "history": self.history,
                "select_by": self.cfg.select_by}


def _epoch_loss(losses: list[float]) -> float:
    """Ends the progress line; the epoch's mean loss (NaN for an empty epoch)."""
    print(file=sys.stderr)
    return float(np.mean(losses)) if losses else float("nan")


def _augment_rng_state(augment_fn) -> Optional[dict]:
    rng = getattr(augment_fn, "rng", None)
    return rng.bit_generator.state if isinstance(rng, np.random.Generator) else None


def _progress(label: str, done: int, total: int, t0: float, extra: str) -> None:
    width = 24
    filled = int(width * done / max(1, total))
    rate = (time.time() - t0) / max(1, done)
    eta = rate * (total - done)
    bar = "#" * filled + "." * (width - filled)
    print(f"\r{label} [{bar}] {done}/{total} {extra} eta {eta:5.0f}s", end="", file=sys.stderr, flush=True)


def build_model(config: Optional[RawNet2Config], init: Optional[str]) -> RawNet2:
    """A fresh model of ``config`` sizes, or the checkpoint ``init`` to fine-tune."""
    if init:
        model, _ = load_checkpoint(init)
        return model
    return RawNet2(config or RawNet2Config())
