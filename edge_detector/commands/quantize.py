"""`edge-detect quantize`: fp32 bundle → static int8 (QDQ) bundle, calibrated on real audio.

Needs onnx and onnxruntime's quantization tools (the `train` extra), not PyTorch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from ..errors import EdgeDetectorError
from ._common import fail, log, require_onnx


def _split_csv(values: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for v in values:
        out.extend(t.strip() for t in v.split(",") if t.strip())
    return out


@click.command("quantize")
@click.argument("bundle", type=click.Path(exists=True))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(), help="int8 bundle folder to create.")
@click.option("--protocol", "protocol_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="ASVspoof-style protocol listing the calibration audio (labels are used for EER).")
@click.option("--audio-dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--calib-count", type=click.IntRange(min=1), default=64, show_default=True,
              help="Calibration files (first windows), bona fide and spoof interleaved.")
@click.option("--eval-count", type=click.IntRange(min=0), default=0, show_default=True,
              help="Further protocol files for EER / |Δscore| (0 = evaluate on the calibration files).")
@click.option("--exclude", multiple=True, metavar="NODE,...",
              help="Nodes or groups (names from the sensitivity report) to keep in fp32 (repeatable, comma-separated).")
@click.option("--sensitivity", is_flag=True,
              help="Per-layer sensitivity: leave each group in fp32 in turn; writes sensitivity.json in the bundle.")
@click.option("--max-eer-increase", type=float, default=None,
              help="Accuracy budget (absolute EER, e.g. 0.003 = 0.3 pp): exclude the most sensitive groups greedily "
                   "until met (implies the sensitivity analysis).")
@click.option("--per-channel/--no-per-channel", default=True, show_default=True, help="Per-channel weight scales.")
@click.option("--symmetric", is_flag=True,
              help="Symmetric activations too (TensorRT needs it); manifest variant 'int8-symmetric'.")
@click.option("--calibrate-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
              show_default=True)
@click.option("--op-types", default="Conv,MatMul,Gemm", show_default=True,
              help="Op types to quantize (elementwise ops stay fp32 by default).")
@click.option("--min-conv-channels", type=click.IntRange(min=0), default=0, show_default=True,
              help="Keep convolutions with fewer input channels (per group) than this in fp32, for speed: on x86 "
                   "with VNNI the 8-channel RawNet2 stage-1 ones are slower as int8 (benchmarks/int8_speed.py).")
@click.option("--gru-weights", type=click.Choice(["fp32", "int8"]), default="fp32", show_default=True,
              help="int8: store an ONNX GRU op's weights as int8 (per-row scales, DequantizeLinear); the GRU still "
                   "computes in fp32 (onnxruntime has no int8 GRU). A sensitivity group like a Conv.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the calibration file order.")
@click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True,
              help="onnxruntime intra-op threads for calibration and evaluation.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
def quantize_command(bundle: str, out_dir: str, protocol_path: str, audio_dir: str, calib_count: int, eval_count: int,
                     exclude: tuple[str, ...], sensitivity: bool, max_eer_increase: Optional[float], per_channel: bool,
                     symmetric: bool, calibrate_method: str, op_types: str, min_conv_channels: int,
                     gru_weights: str, seed: int, threads: int, overwrite: bool) -> None:
    """Quantize BUNDLE (fp32) to static int8: QDQ, per-channel weights, S8S8.

    Calibration windows are real files from --protocol / --audio-dir, decoded and
    windowed exactly as on the device (and passed through the bundle's numpy front end
    if it has one). Never dynamic quantization: ConvInteger does not run on the CPU
    provider. Export with `--gru matmul` first, or the GRU (most of the weights) stays
    fp32, or keep the GRU op and store its weights int8 (--gru-weights int8: the faster
    recipe on x86, with --op-types Conv --min-conv-channels 16). The recipe, the
    exclusions and the int8-vs-fp32 parity go into the manifest.
    """
    try:
        require_onnx()
        from quantize.static_int8 import quantize_bundle

        result = quantize_bundle(
            bundle, out_dir, protocol_path, audio_dir, calib_count=calib_count, eval_count=eval_count,
            exclude=_split_csv(exclude), sensitivity=sensitivity, max_eer_increase=max_eer_increase,
            per_channel=per_channel, symmetric=symmetric, calibrate_method=calibrate_method,
            op_types=_split_csv((op_types,)), min_conv_channels=min_conv_channels, gru_weights=gru_weights, seed=seed, threads=threads, overwrite=overwrite, log=log,
        )
        q = result.manifest["quantization"]
        p = q["parity_vs_fp32"]
        log(f"wrote {result.bundle} ({result.manifest['model']['variant']}, {q['quantized_groups']}/{q['groups']} groups "
            f"int8; max |Δscore| {p['max_abs_diff']:.3g}, mean {p['mean_abs_diff']:.3g}, decisions agree "
            f"{p['decision_agreement']:.1%}, EER fp32 {p['eer_fp32']} → int8 {p['eer_int8']})")
        if result.sensitivity is not None:
            log(f"sensitivity report: {Path(result.bundle) / q['sensitivity_report']}")
    except EdgeDetectorError as exc:
        fail(exc)
