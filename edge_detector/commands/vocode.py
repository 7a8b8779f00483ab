"""`edge-detect vocode`: copy-synthesised spoofs from bona fide audio (training side)."""
from __future__ import annotations

import json
from typing import Optional

import click

from ..errors import EdgeDetectorError, MissingExtraError
from ._common import emit, fail, log

_DEFAULT = "world,mlsa,lpc,griffinlim"


def _require_vocoders() -> None:
    try:
        import pysptk  # noqa: F401
        import pyworld  # noqa: F401
    except ModuleNotFoundError as exc:
        raise MissingExtraError(f"vocode needs {exc.name}: pip install 'edge-detector[train]'") from None


@click.command("vocode")
@click.option("--protocol", "protocol_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="ASVspoof-style protocol; its bona fide lines are vocoded, spoof lines ignored.")
@click.option("--audio-dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: <id>__voc-<vocoder>.flac, protocol.txt, pairs.tsv (re-runs reuse it).")
@click.option("--vocoders", default=_DEFAULT, show_default=True,
              help="Comma-separated: world (pyworld), mlsa (pysptk), lpc (pysptk), griffinlim (torch STFT), "
                   "lyra (Lyra v2 neural codec, needs --lyra-dir).")
@click.option("--per-file", type=click.IntRange(min=0), default=0, show_default=True,
              help="Vocoders per bona fide file, chosen in rotation (0 = every vocoder).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes.")
@click.option("--lyra-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder with the Lyra v2 TFLite files (soundstream_encoder, quantizer, lyragan), for --vocoders lyra.")
def vocode_command(protocol_path: str, audio_dir: str, out_dir: str, vocoders: str, per_file: int, jobs: int,
                   lyra_dir: Optional[str]) -> None:
    """Copy-synthesise every bona fide file through signal-processing vocoders.

    ``lyra`` re-synthesises through a neural speech codec (codec re-synthesised spoofs).
    Each vocoder becomes a spoofing system ``copysyn_<vocoder>`` with the source's speaker;
    pairs.tsv links every vocoded file to its bona fide source for pair-aware training
    (`train --vocoded OUT`). Deterministic and cached. One summary JSON line on stdout.
    """
    try:
        from edge_detector.protocol import read_protocol

        _require_vocoders()
        from export.vocode import vocode_corpus

        names = [v.strip() for v in vocoders.split(",") if v.strip()]
        try:
            summary = vocode_corpus(read_protocol(protocol_path), audio_dir, out_dir, names, jobs=jobs,
                                   per_file=per_file, lyra_dir=lyra_dir)
        except (ValueError, FileNotFoundError) as exc:
            raise click.UsageError(str(exc)) from None
        except ModuleNotFoundError as exc:
            raise MissingExtraError(f"vocode --vocoders lyra needs {exc.name}: pip install 'edge-detector[train]'") from None
        for fid, why in sorted(summary["failed"].items()):
            log(f"edge-detect: could not vocode {fid}: {why}")
        emit(summary)
    except EdgeDetectorError as exc:
        fail(exc)
