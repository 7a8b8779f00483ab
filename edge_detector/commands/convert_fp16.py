"""`edge-detect convert-fp16`: fp32 bundle → fp16 bundle for TensorRT / CUDA (Jetson).

Training-side tool (needs the `onnx` package, not torch). The result is a complete
bundle: manifest variant "fp16", parity against the fp32 bundle recorded, every file
re-hashed. Put it next to the fp32 bundle as `<bundle>-fp16` and a profile with
`variant = "fp16"` picks it up.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

from ..errors import EdgeDetectorError, ExitCode
from ._common import exit_with, fail, log, require_onnx


@click.command("convert-fp16")
@click.argument("bundle", type=click.Path())
@click.option("-o", "--out", "out_dir", default=None, type=click.Path(),
              help="Bundle folder to create (default: BUNDLE-fp16, where profiles look for it).")
@click.option("--tolerance", type=float, default=None,
              help="Max |Δscore| fp16 vs fp32 (log-probability units; default 0.02).")
@click.option("--keep-fp32", "keep_fp32", multiple=True, metavar="OP",
              help="ONNX op type to keep in float32 (repeatable), e.g. --keep-fp32 GRU.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
def convert_fp16_command(bundle: str, out_dir: Optional[str], tolerance: Optional[float], keep_fp32: tuple[str, ...],
                         overwrite: bool) -> None:
    """Convert an fp32 BUNDLE to fp16 weights with float32 input/output.

    Casts at the graph's input and output keep the bundle's contract (float32 waveform
    in, float32 score out). The parity check runs both models with onnxruntime on the
    CPU on random and speech-like windows and refuses the result if any score differs
    by more than --tolerance or any decision differs. Exit 7 on a bad bundle or a
    failed parity check, 12 if the onnx package is missing.
    """
    try:
        require_onnx()
        from quantize.fp16 import FP16_TOLERANCE, convert_bundle

        out = Path(out_dir) if out_dir else Path(bundle.rstrip("/") + "-fp16")
        log(f"converting {bundle} -> {out} (fp16 weights, float32 I/O)")
        _, summary = convert_bundle(bundle, out, tolerance=FP16_TOLERANCE if tolerance is None else tolerance,
                                    keep_fp32_ops=keep_fp32, overwrite=overwrite)
    except EdgeDetectorError as exc:
        fail(exc)
    p = summary["parity"]
    log(f"fp16 bundle written: {summary['bytes'] / 1e6:.2f} MB (fp32 {summary['source_bytes'] / 1e6:.2f} MB); "
        f"max |Δscore| {max(p['max_abs_diff_random'], p['max_abs_diff_audio']):.3g} <= {p['tolerance']:g}, "
        f"decisions agree: {p['decisions_agree']}")
    click.echo(json.dumps(summary))
    exit_with(ExitCode.ACCEPT)
