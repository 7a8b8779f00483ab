"""`edge-detect make-demo`: write a synthetic speech-like demo file (no download needed)."""
from __future__ import annotations

import click
import soundfile as sf

from ..demo_audio import synthesize_vowels


@click.command("make-demo")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--seconds", type=float, default=5.0, show_default=True)
@click.option("--rate", type=int, default=16000, show_default=True, help="Sample rate of the written file.")
@click.option("--seed", type=int, default=0, show_default=True)
def make_demo_command(out: str, seconds: float, rate: int, seed: int) -> None:
    """Write formant-synthesised vowels to OUT (wav/flac by extension).

    The audio is synthetic by construction, so a good detector should not accept it.
    """
    from ..resample import resample

    x = synthesize_vowels(seconds=seconds, sr=16000, seed=seed)
    if rate != 16000:
        x = resample(x, 16000, rate)
    sf.write(out, x, rate)
    click.echo(f"wrote {out} ({seconds:.1f} s at {rate} Hz, synthetic)", err=True)
