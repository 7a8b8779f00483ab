"""`edge-detect export`: checkpoint → ONNX bundle, refused unless it matches PyTorch."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from ..errors import EdgeDetectorError
from ._common import fail, log, require_onnx, require_torch
from .score import iter_inputs


def parity_windows(paths: tuple[str, ...], limit: int, window: int) -> "np.ndarray | None":
    """First windows of up to ``limit`` decodable files (the same preprocessing as the device)."""
    import numpy as np

    from ..audio import load_audio
    from ..windows import first_window

    rows = []
    for p in iter_inputs(paths):
        if len(rows) >= limit:
            break
        try:
            rows.append(first_window(load_audio(p).samples, window))
        except EdgeDetectorError as exc:
            log(f"parity audio: skipping {exc}")
    return np.stack(rows) if rows else None


def _export_rawnet2(checkpoint: str, out_dir: str, audio: "np.ndarray | None", rule: "WindowRule", tolerance: float,
                    overwrite: bool, frontend: str, gru: str, parity_seed: Optional[int]) -> Path:
    from export.onnx_export import build_bundle
    from export.rawnet2 import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    return build_bundle(model, out_dir, checkpoint_path=checkpoint, audio_windows=audio, window_rule=rule,
                        tolerance=tolerance, overwrite=overwrite, frontend=frontend, gru=gru, parity_seed=parity_seed)


def _export_aasist(checkpoint: str, out_dir: str, audio: "np.ndarray | None", rule: "WindowRule", tolerance: float,
                   overwrite: bool, frontend: str, gru: str, parity_seed: Optional[int]) -> Path:
    from export.aasist import load_aasist
    from export.aasist_bundle import build_aasist_bundle

    if gru != "onnx":
        raise EdgeDetectorError("--gru applies to RawNet2 only: AASIST has no recurrent layer")
    try:
        model, meta = load_aasist(checkpoint)
    except (ValueError, RuntimeError) as exc:
        raise EdgeDetectorError(f"{checkpoint}: cannot load as AASIST ({exc})") from None
    return build_aasist_bundle(model, out_dir, meta=meta, checkpoint_path=checkpoint, audio_windows=audio,
                               window_rule=rule, tolerance=tolerance, overwrite=overwrite, frontend=frontend,
                               parity_seed=parity_seed)


#: One exporter per checkpoint family (each in its own training-side module); ``--family auto``
#: picks AASIST when the checkpoint has AASIST's parameter names.
EXPORTERS = {"rawnet2": _export_rawnet2, "aasist": _export_aasist}


@click.command("export")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(), help="Bundle folder to create.")
@click.option("--parity-audio", multiple=True, help="Audio files or folders for the parity gate (repeatable).")
@click.option("--parity-count", type=int, default=8, show_default=True, help="How many real audio windows to compare.")
@click.option("--tolerance", type=float, default=1e-4, show_default=True, help="Max |Δscore| ONNX vs PyTorch.")
@click.option("--windows", "mode", type=click.Choice(["first", "all"]), default="first", show_default=True,
              help="Window mode the bundle declares.")
@click.option("--hop", type=int, default=32300, show_default=True, help="Hop between windows (samples) for 'all'.")
@click.option("--combine", type=click.Choice(["mean", "median", "min"]), default="mean", show_default=True)
@click.option("--frontend", type=click.Choice(["graph", "numpy-fft"]), default="graph", show_default=True,
              help="Where the fixed sinc filter bank runs: inside the ONNX graph (1025-tap convolution), or on the "
                   "device in numpy with an FFT (the graph then starts at first_bn and takes 'features').")
@click.option("--gru", type=click.Choice(["onnx", "matmul"]), default="onnx", show_default=True,
              help="GRU as the ONNX GRU op, or rewritten as MatMul + elementwise ops so that static int8 "
                   "(`edge-detect quantize`) can quantize its weights.")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle folder.")
@click.option("--parity-seed", type=int, default=None,
              help="Seed of the parity gate's random windows (default: fresh ones on every export).")
@click.option("--family", type=click.Choice(["auto", *EXPORTERS]), default="auto", show_default=True,
              help="Model family of CHECKPOINT; auto reads its parameter names (AASIST's graph layers, else RawNet2).")
def export_command(checkpoint: str, out_dir: str, parity_audio: tuple[str, ...], parity_count: int, tolerance: float,
                   mode: str, hop: int, combine: str, frontend: str, gru: str, overwrite: bool,
                   parity_seed: Optional[int], family: str) -> None:
    """Export CHECKPOINT (official RawNet2 or AASIST / AASIST-L .pth, or ours) to a bundle folder.

    TorchScript exporter, fixed sinc filters as constants, BN folded, the two FC layers
    fused, dynamic batch axis. The parity gate compares the device path (numpy front
    end if --frontend numpy-fft, then onnxruntime at graph level 'all') with the
    original PyTorch model on fresh random windows and on real audio windows and fails
    when max |Δscore| exceeds --tolerance. Thresholds start uncalibrated: run
    `edge-detect calibrate` next.
    """
    try:
        require_torch()
        require_onnx()
        from ..windows import WindowRule

        if family == "auto":
            from export.aasist import is_aasist_checkpoint

            family = "aasist" if is_aasist_checkpoint(checkpoint) else "rawnet2"
        rule = WindowRule(window=64600, hop=hop, mode=mode, combine=combine)
        audio = parity_windows(parity_audio, parity_count, rule.window) if parity_audio else None
        if audio is None:
            log("parity gate: no real audio given (--parity-audio); comparing on random windows only")
        out = EXPORTERS[family](checkpoint, out_dir, audio, rule, tolerance, overwrite, frontend, gru, parity_seed)
        import json

        manifest = json.loads((Path(out) / "manifest.json").read_text())
        parity = manifest["parity"]
        log(f"wrote {out} [{manifest['model']['family']}, frontend {frontend}, gru {gru}] (parity: random "
            f"{parity['max_abs_diff_random']:.2g}, audio {parity['max_abs_diff_audio']}, tolerance {tolerance:g})")
    except EdgeDetectorError as exc:
        fail(exc)
