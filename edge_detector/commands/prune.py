"""`edge-detect prune`: structured pruning of a trained RawNet2 with fine-tuning after each step."""
from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

import click

from ..errors import DataError, EdgeDetectorError
from ._common import distill_config, distill_options, finetune_options, fail, log, require_torch




@click.command("prune")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--protocol", "protocol_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="ASVspoof 2019 LA style protocol used for fine-tuning and validation.")
@click.option("--audio-dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: step_K.pt, final.pt, prune_log.json.")
@click.option("--val-protocol", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Validation protocol. Default: the same stratified split `train` made (same --seed, "
                   "--val-fraction, --holdout-sources), so fine-tuning never sees the source model's validation files.")
@click.option("--val-fraction", type=float, default=0.15, show_default=True)
@click.option("--holdout-sources", default=None,
              help="Comma-separated sources removed from fine-tuning and evaluated after every step.")
@click.option("--exclude-sources", default=None, help="Sources dropped entirely.")
@click.option("--target", "target_text", default="sinc=12,stage2=64,gru_hidden=256,gru_layers=1,fc1=256",
              show_default=True,
              help="Final sizes: sinc, stage2, inner1 (conv1 width of blocks 0-1), inner2 (blocks 2-5), "
                   "gru_hidden, gru_layers, fc1. Missing keys stay; inner widths follow their stage by default.")
@click.option("--steps", type=click.IntRange(min=1), default=3, show_default=True,
              help="Pruning steps (geometric in width, GRU layers dropped first), each followed by fine-tuning.")
@click.option("--finetune-epochs", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--criterion", type=click.Choice(["taylor", "norm"]), default="taylor", show_default=True,
              help="taylor: first-order loss change on real crops; norm: data-free group magnitude.")
@click.option("--importance-batches", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--refit-head/--no-refit-head", default=True, show_default=True,
              help="Least-squares re-fit of fc1 when GRU layers are dropped.")
@finetune_options
@distill_options
@click.option("--seed", type=int, default=1234, show_default=True)
@click.option("--threads", type=int, default=0, help="torch intra-op threads (0 = default).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Cache of decoded audio.")
@click.option("--keep-work/--no-keep-work", default=False, help="Keep each step's trainer folder (the 'work' folder inside OUT).")
def prune_command(checkpoint: str, protocol_path: str, audio_dir: str, out_dir: str, val_protocol: Optional[str],
                  val_fraction: float, holdout_sources: Optional[str], exclude_sources: Optional[str],
                  target_text: str, steps: int, finetune_epochs: int, criterion: str, importance_batches: int,
                  refit_head: bool, batch_size: int, lr: float, weight_decay: float, class_weights: str,
                  augment: bool, balanced: bool, source_balanced: bool, channel_augment: bool, freeze_epochs: int, unfreeze_every: int,
                  distill_from: Optional[str], distill_alpha: float, distill_temperature: float, distill_loss: str,
                  distill_mix: float, select_by: str, seed: int, threads: int,
                  cache_dir: Optional[str], keep_work: bool) -> None:
    """Prune CHECKPOINT (ours or an official .pth) down to --target in --steps steps.

    Each step scores every prunable group (sinc filters / stage-1 channels, stage-2
    channels, conv1 widths, GRU units and layers, fc1), keeps the most important
    indices, copies their weights exactly into a smaller RawNet2, and fine-tunes it.
    Writes OUT/step_K.pt, OUT/final.pt and OUT/prune_log.json (sizes, parameters,
    MACs, validation EER before and after fine-tuning, held-out EER per step).
    """
    try:
        require_torch()
        _run(**locals())
    except EdgeDetectorError as exc:
        fail(exc)


def _run(checkpoint, protocol_path, audio_dir, out_dir, val_protocol, val_fraction, holdout_sources,
         exclude_sources, target_text, steps, finetune_epochs, criterion, importance_batches, refit_head,
         batch_size, lr, weight_decay, class_weights, augment, balanced, source_balanced, channel_augment, freeze_epochs, unfreeze_every,
         distill_from, distill_alpha, distill_temperature, distill_loss, distill_mix, select_by, seed,
         threads, cache_dir, keep_work):
    import torch

    from edge_detector.protocol import csv_values, training_splits
    from export.augment_channel import build_training_augment
    from export.dataset import load_corpus
    from export.prune import parse_target, run_schedule
    from export.rawnet2 import load_checkpoint
    from export.train import TrainConfig, seed_everything

    started = time.time()
    if threads > 0:
        torch.set_num_threads(threads)
    seed_everything(seed)
    model, meta = load_checkpoint(checkpoint)
    try:
        target = parse_target(target_text, model.config)
        cw = tuple(float(v) for v in class_weights.split(","))
    except ValueError as exc:
        raise DataError(f"--target / --class-weights: {exc}") from None

    # The same split as `edge-detect train`, so the source model's validation files stay unseen.
    train_entries, val_entries, heldout = training_splits(protocol_path, exclude_sources, holdout_sources,
                                                          val_protocol, val_fraction, seed)
    log(f"train {len(train_entries)} files, validation {len(val_entries)}, held out {len(heldout)}")
    corpus = load_corpus(train_entries + val_entries + heldout, audio_dir, cache_dir=cache_dir)
    train_set, val_set = corpus.subset(train_entries), corpus.subset(val_entries)
    held_set = corpus.subset(heldout) if heldout else None

    ft = TrainConfig(epochs=finetune_epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                     class_weights=cw, seed=seed, augment=augment, freeze_epochs=freeze_epochs,
                     unfreeze_every=unfreeze_every, threads=threads, balanced_sampling=balanced,
                     source_balanced=source_balanced,
                     **distill_config(distill_from, distill_alpha, distill_temperature, distill_loss, distill_mix,
                                      select_by))
    from export.teacher import load_teacher  # RawNet2, or AASIST / AASIST-L (the margin of their logits)

    teacher = load_teacher(distill_from)[0] if distill_from else None
    records = run_schedule(
        model, target, steps, out_dir, train_set, val_set, held_set, finetune=ft, criterion=criterion,
        importance_batches=importance_batches, importance_batch_size=min(batch_size, 16), refit=refit_head,
        augment_fn=build_training_augment(augment, channel_augment, seed), source=str(checkpoint), keep_work=keep_work, seed=seed,
        log=log, teacher=teacher,
    )
    log_path = Path(out_dir) / "prune_log.json"
    doc = json.loads(log_path.read_text())
    doc.update({
        "command": "edge-detect " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "wall_seconds": round(time.time() - started, 1),
        "threads": torch.get_num_threads(),
        "files": {"train": len(train_entries), "val": len(val_entries), "heldout": len(heldout)},
        "holdout_sources": csv_values(holdout_sources),
        "source_meta": meta,
        "finetune_config": {k: v for k, v in ft.__dict__.items() if k != "extra"},
    })
    log_path.write_text(json.dumps(doc, indent=2, default=str))
    last = records[-1]
    log(json.dumps({"final": str(Path(out_dir) / "final.pt"), "parameters": last["parameters"],
                    "val_eer": last["val_eer"], "heldout_eer": last["heldout_eer"],
                    "wall_seconds": doc["wall_seconds"]}))
