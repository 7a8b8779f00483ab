"""Helpers shared by subcommands: error reporting, exit handling, training extras."""
from __future__ import annotations

import json
import sys
from typing import Any, NoReturn, Optional

import click

from ..errors import EdgeDetectorError, ExitCode, MissingExtraError


def log(message: str) -> None:
    """Logs go to stderr so stdout stays machine-readable."""
    click.echo(message, err=True)


def emit(record: dict[str, Any]) -> None:
    """One JSON object per line on stdout, flushed at once (a reader may be waiting)."""
    sys.stdout.write(json.dumps(record, sort_keys=False) + "\n")
    sys.stdout.flush()


def fail(exc: EdgeDetectorError) -> NoReturn:
    log(f"edge-detect: {exc}")
    sys.exit(int(exc.exit_code))


def exit_with(code: ExitCode | int) -> NoReturn:
    """click ignores a command's return value: exit explicitly."""
    sys.exit(int(code))


def require_torch() -> None:
    """Training-side commands need the `train` extra; say so instead of a traceback."""
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        raise MissingExtraError(
            "this command needs PyTorch: pip install 'edge-detector[train]' (installs torch==2.13.0 and onnx)"
        ) from None


def require_onnx() -> None:
    try:
        import onnx  # noqa: F401
    except ModuleNotFoundError:
        raise MissingExtraError("this command needs onnx: pip install 'edge-detector[train]'") from None


def runtime_options(f):
    """--bundle / --profile / --threads, shared by every command that runs the model."""
    f = click.option("--threads", type=click.IntRange(min=0), default=None,
                     help="onnxruntime intra-op threads (overrides the profile; 0 = all cores).")(f)
    f = click.option("--profile", "profile", default=None,
                     help="Device profile: a shipped name (e.g. pi4, pi5, x86) or a path to a .toml file.")(f)
    f = click.option("--bundle", "bundle_path", default=None, metavar="PATH",
                     help="Bundle folder (default: $EDGE_DETECTOR_BUNDLE, else the shipped default).")(f)
    return f


def build_detector(bundle_path, profile, threads):
    """Bundle + profile + overrides → Detector. Raises BundleError / ProfileError."""
    from ..defaults import resolve_bundle_path
    from ..detector import Detector
    from ..session import SessionSettings

    settings = SessionSettings(intra_op_threads=1)
    path = resolve_bundle_path(bundle_path)
    if profile:
        from firmware_config import load_profile

        prof = load_profile(profile)
        settings = prof.session_settings()
        if bundle_path is None:
            path = prof.resolve_bundle(path)
    if threads is not None:
        settings.intra_op_threads = threads
    return Detector(path, settings)


def distill_options(f):
    """Teacher options shared by `train` and `prune`: learn a model's outputs, not only the labels."""
    opts = [
        click.option("--distill-from", "distill_from", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Teacher checkpoint: RawNet2 (e.g. the full model a pruned one came from) or AASIST / AASIST-L "
                          "(official .pth or ours; auto-detected): learn its outputs."),
        click.option("--distill-alpha", type=float, default=0.5, show_default=True,
                     help="Weight of the teacher term; 1 = teacher only (no labels)."),
        click.option("--distill-temperature", type=float, default=2.0, show_default=True),
        click.option("--distill-loss", type=click.Choice(["kl", "margin-mse"]), default="kl", show_default=True,
                     help="Teacher term: KL of soft outputs at the temperature, or squared error of the logit margins."),
        click.option("--distill-mix", type=float, default=0.0, show_default=True,
                     help="With --distill-alpha 1 only: share of training crops replaced by a mix of two crops."),
        click.option("--select-by", type=click.Choice(["eer", "fidelity"]), default="eer", show_default=True,
                     help="Keep the checkpoint with the best validation EER, or (with --distill-from) the one "
                          "whose validation scores rank most like the teacher's (Spearman)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def distill_config(distill_from: Optional[str], distill_alpha: float, distill_temperature: float, distill_loss: str,
                   distill_mix: float, select_by: str) -> dict[str, Any]:
    """The TrainConfig fields of the distillation options (none active without a teacher)."""
    if distill_from is None and select_by == "fidelity":
        raise click.UsageError("--select-by fidelity needs --distill-from (a teacher to be faithful to)")
    on = distill_from is not None
    return {"distill_alpha": distill_alpha if on else 0.0, "distill_temperature": distill_temperature,
            "distill_loss": distill_loss, "distill_mix": distill_mix if on else 0.0, "select_by": select_by}


def finetune_options(f):
    """Optimiser, sampling and augmentation options shared by `train` and `prune`.

    One definition so that fine-tuning after a pruning step is configured exactly like
    training (same names, defaults and meaning).
    """
    opts = [
        click.option("--batch-size", type=int, default=32, show_default=True),
        click.option("--lr", type=float, default=1e-4, show_default=True),
        click.option("--weight-decay", type=float, default=1e-4, show_default=True),
        click.option("--class-weights", default="0.1,0.9", show_default=True, help="spoof,bonafide loss weights."),
        click.option("--augment/--no-augment", default=True, show_default=True, help="RawBoost augmentation."),
        click.option("--channel-augment/--no-channel-augment", default=True, show_default=True,
                     help="Random band-limiting and gain on both classes (removes bandwidth/level cues)."),
        click.option("--balanced/--no-balanced", default=False, show_default=True,
                     help="Oversample the minority class."),
        click.option("--source-balanced/--no-source-balanced", default=False, show_default=True,
                     help="Sample (source, label) groups with weight 1/sqrt(size): fights speaker/corpus confounds."),
        click.option("--freeze-epochs", type=int, default=0, show_default=True,
                     help="Train only the head (BN+GRU+FC) for N epochs, then unfreeze one stage per "
                          "--unfreeze-every epochs (in `prune`: per step)."),
        click.option("--unfreeze-every", type=int, default=1, show_default=True),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f
