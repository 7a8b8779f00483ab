"""`edge-detect make-demo`: write a synthetic speech-like demo file (no download needed)."""
from __future__ import annotations

import os
from pathlib import Path

import click

from ..demo_audio import synthesize_vowels

WRITABLE_SUFFIXES = (".wav", ".flac", ".ogg")


@click.command("make-demo")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--seconds", type=click.FloatRange(min=0.5, max=600.0), default=5.0, show_default=True,
              help="Length in seconds (0.5-600).")
@click.option("--rate", type=click.IntRange(min=8000, max=192000), default=16000, show_default=True,
              help="Sample rate of the written file (8000-192000 Hz).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists (otherwise an existing file is refused).")
def make_demo_command(out: str, seconds: float, rate: int, seed: int, overwrite: bool) -> None:
    """Write formant-synthesised vowels to OUT (.wav, .flac or .ogg, chosen by the extension).

    The audio is synthetic by construction, so a good detector should not accept it. An
    existing OUT is never replaced without --overwrite; the file is written aside and renamed,
    so an interrupted run leaves no half-written file.
    """
    import soundfile as sf

    from ..resample import resample

    path = Path(out)
    if path.suffix.lower() not in WRITABLE_SUFFIXES:
        raise click.BadParameter(f"{out!r}: the extension must be one of {', '.join(WRITABLE_SUFFIXES)}",
                                 param_hint="OUT")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise click.UsageError(f"{out}: already exists; refusing to replace it (pass --overwrite to replace it)")
    if path.is_dir():
        raise click.UsageError(f"{out}: is a folder")
    x = synthesize_vowels(seconds=seconds, sr=16000, seed=seed)
    if rate != 16000:
        x = resample(x, 16000, rate)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        sf.write(str(tmp), x, rate)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    click.echo(f"wrote {out} ({seconds:.1f} s at {rate} Hz, synthetic)", err=True)
