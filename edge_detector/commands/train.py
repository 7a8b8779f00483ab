"""`edge-detect train`: train or fine-tune a model family on an ASVspoof-style protocol.

``--model`` picks the family's trainer from ``TRAINERS`` (one entry per family, each in its
own training-side module): ``rawnet2`` (PyTorch, the default) or ``lfcc-gmm`` (the ASVspoof
2021 LFCC-GMM baseline, scikit-learn; writes a bundle directly). The protocol, split and
seed options are shared; the others belong to one family and are ignored by the rest.
"""
from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

import click

from ..errors import EdgeDetectorError
from ._common import distill_config, distill_options, finetune_options, fail, log, require_torch




@click.command("train")
@click.option("--model", type=click.Choice(["rawnet2", "lfcc-gmm"]), default="rawnet2", show_default=True,
              help="Model family to train: rawnet2 (PyTorch) or lfcc-gmm (LFCC + two diagonal GMMs; writes OUT/bundle).")
@click.option("--protocol", "protocol_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="ASVspoof 2019 LA style protocol (SPEAKER FILE_ID - SYSTEM LABEL).")
@click.option("--audio-dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder holding FILE_ID.{flac,wav,mp3} (or a flac/ subfolder).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--val-protocol", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Validation protocol (same audio folder). Default: a stratified split of the training entries.")
@click.option("--val-fraction", type=float, default=0.15, show_default=True)
@click.option("--holdout-sources", default=None,
              help="Comma-separated sources (speaker prefix before '_', e.g. VCTK,ARCTIC,JSUT,CSMSC,LA) "
                   "removed from training and evaluated once at the end.")
@click.option("--exclude-sources", default=None, help="Sources dropped entirely (e.g. CSMSC for licence reasons).")
@click.option("--heldout-protocol", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Protocol of extra held-out files (same audio folder), never trained on, evaluated once at the end "
                   "(e.g. unseen spoof families written by benchmarks/family_splits.py).")
@click.option("--epochs", type=int, default=20, show_default=True)
@finetune_options
@click.option("--init", "init_ckpt", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Checkpoint to fine-tune (official .pth or ours).")
@click.option("--resume", "resume_state", type=click.Path(exists=True, dir_okay=False), default=None,
              help="last_state.pt of an interrupted run.")
@distill_options
@click.option("--seed", type=int, default=1234, show_default=True)
@click.option("--threads", type=int, default=0, help="torch intra-op threads (0 = default).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Cache decoded audio here.")
@click.option("--sinc-filters", type=int, default=20, show_default=True)
@click.option("--stage2-channels", type=int, default=128, show_default=True)
@click.option("--gru-hidden", type=int, default=1024, show_default=True)
@click.option("--gru-layers", type=int, default=3, show_default=True)
@click.option("--fc1-dim", type=int, default=1024, show_default=True)
@click.option("--vocoded", "vocoded_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="rawnet2: output folder of `edge-detect vocode`; copies of the training bona fide files are "
                   "added as spoofs and paired with their sources (copies of other files are left out).")
@click.option("--pair-fraction", type=click.FloatRange(0, 1), default=None,
              help="rawnet2: share of each batch made of (bona fide, vocoded copy) pairs under one recording "
                   "condition [default: 0.5 with --vocoded, else 0].")
@click.option("--contrastive-weight", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="rawnet2: weight of the supervised contrastive term on the utterance embeddings.")
@click.option("--nonspeech-fraction", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="rawnet2: share of each batch made of synthetic non-speech signals labelled spoof.")
@click.option("--matched-fraction", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="rawnet2: share of each batch made of (spoof, bona fide file of the same source/voice) "
                   "couples under one recording condition: a voice spoofed often stops predicting the label.")
@click.option("--condition-augment/--no-condition-augment", default=True, show_default=True,
              help="rawnet2: rooms, MP3/Vorbis/Opus, G.711 telephone band and noise on both classes alike.")
@click.option("--steps-per-epoch", type=click.IntRange(min=0), default=0, show_default=True,
              help="rawnet2 pair-aware training: batches per epoch (0 = one pass over the training files).")
@click.option("--fft-frontend/--direct-frontend", default=False, show_default=True,
              help="rawnet2: run the fixed sinc bank as an FFT convolution while training (same output, faster).")
@click.option("--ema-decay", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="rawnet2: keep an exponential moving average of the weights with this per-step decay "
                   "(e.g. 0.998) and validate/save the average (0 = off).")
@click.option("--lr-final", type=click.FloatRange(min=0), default=None,
              help="rawnet2: cosine-decay the learning rate from --lr to this value over the epochs from "
                   "--lr-decay-start to --epochs (default: constant --lr).")
@click.option("--lr-decay-start", type=click.IntRange(min=0), default=0, show_default=True,
              help="rawnet2: first epoch (0-based) of the --lr-final decay; useful when resuming.")
@click.option("--keep-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="rawnet2: also write OUT/epoch_N.pt every N epochs (0 = only best.pt and last.pt).")
@click.option("--gmm-components", type=click.IntRange(min=1), default=512, show_default=True,
              help="lfcc-gmm: Gaussian components per class (the baseline's 512).")
@click.option("--gmm-iter", type=click.IntRange(min=1), default=10, show_default=True,
              help="lfcc-gmm: EM iterations at most (the baseline's 10).")
@click.option("--gmm-max-frames", type=click.IntRange(min=0), default=0, show_default=True,
              help="lfcc-gmm: frames per class drawn (seeded) for EM; 0 = all.")
def train_command(model: str, protocol_path: str, audio_dir: str, out_dir: str, val_protocol: Optional[str], val_fraction: float,
                  holdout_sources: Optional[str], exclude_sources: Optional[str], epochs: int, batch_size: int,
                  lr: float, weight_decay: float, class_weights: str, augment: bool, balanced: bool,
                  source_balanced: bool, channel_augment: bool,
                  freeze_epochs: int, unfreeze_every: int, init_ckpt: Optional[str], resume_state: Optional[str],
                  distill_from: Optional[str], distill_alpha: float, distill_temperature: float,
                  distill_loss: str, distill_mix: float, select_by: str, seed: int, threads: int, cache_dir: Optional[str], sinc_filters: int, stage2_channels: int,
                  gru_hidden: int, gru_layers: int, fc1_dim: int, heldout_protocol: Optional[str],
                  gmm_components: int, gmm_iter: int, gmm_max_frames: int, vocoded_dir: Optional[str],
                  pair_fraction: Optional[float], contrastive_weight: float, nonspeech_fraction: float,
                  condition_augment: bool, steps_per_epoch: int, fft_frontend: bool, ema_decay: float,
                  lr_final: Optional[float], lr_decay_start: int, keep_every: int,
                  matched_fraction: float) -> None:
    """Train RawNet2 (official recipe by default, keep the best-validation-EER checkpoint) or LFCC-GMM.

    RawNet2 writes OUT/best.pt, OUT/last.pt, OUT/last_state.pt (for --resume),
    OUT/history.json and OUT/report.json (command, wall time, validation and held-out EER).
    LFCC-GMM writes OUT/bundle/ (ready for score/gate/calibrate), OUT/report.json and
    OUT/scores_{val,heldout}.txt.
    """
    args = dict(locals())
    try:
        TRAINERS[args.pop("model")](**args)
    except EdgeDetectorError as exc:
        fail(exc)


def _train_rawnet2(**args) -> None:
    require_torch()
    _run(**args)


def _train_lfcc_gmm(**args) -> None:
    from export.lfcc_gmm import run_training

    keys = ("protocol_path", "audio_dir", "out_dir", "val_protocol", "val_fraction", "holdout_sources",
            "exclude_sources", "heldout_protocol", "seed", "cache_dir", "gmm_components", "gmm_iter",
            "gmm_max_frames")
    try:
        report = run_training(**{k: args[k] for k in keys}, log=log,
                              command="edge-detect " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    except ValueError as exc:  # fewer frames than components
        raise click.UsageError(str(exc)) from None
    log(json.dumps({k: report.get(k) for k in ("wall_seconds", "best_val_eer", "bundle")}))


#: ``--model`` → the family's trainer (each takes every option of the command by name).
TRAINERS = {"rawnet2": _train_rawnet2, "lfcc-gmm": _train_lfcc_gmm}


def _run(protocol_path, audio_dir, out_dir, val_protocol, val_fraction, holdout_sources, exclude_sources, epochs,
         batch_size, lr, weight_decay, class_weights, augment, balanced, source_balanced, channel_augment, freeze_epochs, unfreeze_every, init_ckpt,
         resume_state, distill_from, distill_alpha, distill_temperature, distill_loss, distill_mix, select_by, seed, threads, cache_dir, sinc_filters, stage2_channels, gru_hidden, gru_layers, fc1_dim,
         heldout_protocol=None, vocoded_dir=None, pair_fraction=None, contrastive_weight=0.0,
         nonspeech_fraction=0.0, condition_augment=False, steps_per_epoch=0, fft_frontend=False,
         ema_decay=0.0, lr_final=None, lr_decay_start=0, keep_every=0, matched_fraction=0.0,
         **_other_families):
    import numpy as np
    import torch

    from edge_detector.metrics import compute_eer
    from edge_detector.protocol import csv_values, read_protocol, training_splits
    from export.dataset import Corpus, load_corpus
    from export.rawnet2 import RawNet2Config, load_checkpoint
    from export.scoring import score_signals
    from export.train import TrainConfig, Trainer, build_model, seed_everything

    started = time.time()
    if threads > 0:
        torch.set_num_threads(threads)
    seed_everything(seed)
    train_entries, val_entries, heldout = training_splits(protocol_path, exclude_sources, holdout_sources,
                                                          val_protocol, val_fraction, seed)
    if heldout_protocol:
        heldout = heldout + read_protocol(heldout_protocol)
    log(f"train {len(train_entries)} files, validation {len(val_entries)}, held out {len(heldout)}")
    everything = list({e.file_id: e for e in train_entries + val_entries + heldout}.values())  # a held-out protocol may reuse val files
    corpus = load_corpus(everything, audio_dir, cache_dir=cache_dir)
    train_set, val_set = corpus.subset(train_entries), corpus.subset(val_entries)
    pairs = None
    if vocoded_dir:
        from export.pair_training import pair_index
        from export.vocode import read_pairs

        pair_map = read_pairs(Path(vocoded_dir) / "pairs.tsv")
        train_ids = {e.file_id for e in train_entries if e.is_bonafide}
        copies = [e for e in read_protocol(Path(vocoded_dir) / "protocol.txt") if pair_map.get(e.file_id) in train_ids]
        voc = load_corpus(copies, vocoded_dir, cache_dir=cache_dir)
        train_set = Corpus(train_set.entries + voc.entries, train_set.signals + voc.signals)
        pairs = pair_index(train_set.entries, pair_map)
        log(f"vocoded copies: {len(copies)} of {len(pairs)} training bona fide files")
    if pair_fraction is None:
        pair_fraction = 0.5 if pairs else 0.0
    nonspeech = None
    if nonspeech_fraction > 0:
        from export.pair_training import nonspeech_bank

        nonspeech = nonspeech_bank(64, seed)

    cw = tuple(float(v) for v in class_weights.split(","))
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, class_weights=cw,
                      seed=seed, augment=augment, freeze_epochs=freeze_epochs, unfreeze_every=unfreeze_every,
                      threads=threads, balanced_sampling=balanced, source_balanced=source_balanced,
                      **distill_config(distill_from, distill_alpha, distill_temperature, distill_loss,
                                       distill_mix, select_by),
                      pair_fraction=pair_fraction, contrastive_weight=contrastive_weight,
                      nonspeech_fraction=nonspeech_fraction, steps_per_epoch=steps_per_epoch,
                      fft_frontend=fft_frontend, ema_decay=ema_decay, lr_final=lr_final,
                      lr_decay_start=lr_decay_start, keep_every=keep_every, matched_fraction=matched_fraction)
    sizes = RawNet2Config(sinc_filters=sinc_filters, stage1_channels=sinc_filters, stage2_channels=stage2_channels,
                          gru_hidden=gru_hidden, gru_layers=gru_layers, fc1_dim=fc1_dim)
    model = build_model(sizes, init_ckpt)
    from export.augment_channel import build_training_augment

    augment_fn = build_training_augment(augment, channel_augment, seed, condition=condition_augment)
    from export.teacher import load_teacher  # RawNet2, or AASIST / AASIST-L (the margin of their logits)

    teacher = load_teacher(distill_from)[0] if distill_from else None
    try:
        trainer = Trainer(model, train_set, val_set, out_dir, cfg, augment_fn=augment_fn, teacher=teacher,
                          pairs=pairs, nonspeech=nonspeech)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if resume_state:
        trainer.resume(resume_state)
    result = trainer.fit()

    report = {
        "command": "edge-detect " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "wall_seconds": round(time.time() - started, 1),
        "threads": torch.get_num_threads(),
        "train_files": len(train_entries),
        "val_files": len(val_entries),
        "best_val_eer": result["best_val_eer"],
        "epochs": result["epochs"],
        "model_config": model.config.to_dict(),
        "train_config": {k: v for k, v in cfg.__dict__.items() if k != "extra"},
    }
    if heldout:
        best, _ = load_checkpoint(str(Path(out_dir) / "best.pt"))
        held = corpus.subset(heldout)
        scores = score_signals(best, held.signals)
        labels = held.labels
        eer, thr = compute_eer(scores[labels == 1], scores[labels == 0])
        report["heldout"] = {"sources": csv_values(holdout_sources), "files": len(heldout),
                             "bonafide": int(labels.sum()), "spoof": int((labels == 0).sum()),
                             "eer": eer, "threshold": thr}
        log(f"held-out EER {eer * 100:.2f} % at threshold {thr:.4f} on {len(heldout)} files")
        if teacher is not None:  # how faithfully the student follows the teacher where neither was trained
            from edge_detector.benchmarking.accuracy import agreement_at_own_thresholds
            from edge_detector.benchmarking.stats import spearman

            t_scores = score_signals(teacher, held.signals)
            t_eer, t_thr = compute_eer(t_scores[labels == 1], t_scores[labels == 0])
            rho = spearman(scores, t_scores)
            agree = agreement_at_own_thresholds(t_scores, t_thr, scores, thr)
            report["heldout"]["teacher"] = {"eer": t_eer, "spearman": rho, "agreement_at_own_eer_thresholds": agree}
            log(f"held-out fidelity to the teacher: Spearman {rho:.4f}, decisions agree on {agree * 100:.1f} %")
    Path(out_dir, "report.json").write_text(json.dumps(report, indent=2))
    log(json.dumps({k: report[k] for k in ("wall_seconds", "best_val_eer")}))
