"""`edge-detect bench`: the edge bundle against the full model, accuracy and cost side by side.

Two modes:

* full: ``--protocol P --audio-dir D --checkpoint FULL.pt --bundle B [--bundle B2 ...]``
  scores the same first windows with the PyTorch reference and every bundle, then
  measures latency (reference included), cold start and peak RSS. Needs the ``train``
  extra (torch), imported only here and only in this mode.
* device-only: ``--device-only B [--device-only B2 ...]`` measures latency, RTF, cold
  start, peak RSS and size without torch, so the same command runs on a Pi.

Writes OUT/bench.json (every figure, environment, command line), OUT/bench.md and
PNG plots (with the ``bench`` extra). Progress and logs on stderr.
"""
from __future__ import annotations

import os
import shlex
import sys
from typing import Optional

import click

from ..errors import EdgeDetectorError, ExitCode
from ._common import exit_with, fail, log


def _default_threads() -> str:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return "1" if n <= 1 else f"1,{n}"


def parse_threads(value: str) -> list[int]:
    """'1,4' → [1, 4]: positive, unique, in the given order."""
    out: list[int] = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            n = int(part)
        except ValueError:
            raise click.BadParameter(f"not an integer: {part!r}", param_hint="--threads") from None
        if n < 1:
            raise click.BadParameter("thread counts must be >= 1 (a benchmark states its thread count)",
                                     param_hint="--threads")
        if n not in out:
            out.append(n)
    if not out:
        raise click.BadParameter("give at least one thread count", param_hint="--threads")
    return out


def canonical_command_line(ctx: click.Context) -> str:
    """The command line that reproduces this run, every option spelled out (defaults included).

    Built from the parsed parameters rather than ``sys.argv``, so it is complete (a
    default that changes in a later release cannot silently change a re-run) and
    correct however the command was invoked (console script, ``python -m``, a test).
    """
    parts = ["edge-detect", ctx.info_name or "bench"]
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name is None:
            continue
        value = ctx.params.get(param.name)
        if value is None or value == ():
            continue
        if param.is_flag and param.secondary_opts:
            parts.append(param.opts[0] if value else param.secondary_opts[0])
            continue
        if param.is_flag:
            if value:
                parts.append(param.opts[0])
            continue
        for v in (value if param.multiple else [value]):
            parts += [param.opts[0], str(v)]
    return shlex.join(parts)


@click.command("bench")
@click.option("--protocol", "protocol_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="ASVspoof-style protocol of the evaluation set (full mode).")
@click.option("--audio-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder holding FILE_ID.{flac,wav,mp3} (full mode).")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Full fp32 PyTorch checkpoint: the reference (full mode).")
@click.option("--bundle", "bundles", multiple=True, type=click.Path(exists=True),
              help="Edge bundle folder to compare with the reference (repeatable).")
@click.option("--device-only", "device_only", multiple=True, type=click.Path(exists=True),
              help="Bundle to measure on this device without torch (repeatable): latency, RTF, cold start, RSS, size.")
@click.option("--asv-scores", type=click.Path(exists=True, dir_okay=False), default=None,
              help="ASVspoof 2019 ASV score file (ID target|nontarget|spoof SCORE) for min t-DCF.")
@click.option("--full-scores", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Use these full-model scores ('ID SCORE' lines) instead of scoring with the checkpoint "
                   "(e.g. computed on a GPU box); they must cover exactly the protocol's ids.")
@click.option("--audio", "audio", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Device-only: audio file for the latency window and cold start (default: the make-demo signal, formant-synthesised vowels).")
@click.option("--out", "out_dir", default="bench-out", show_default=True, type=click.Path(file_okay=False),
              help="Output folder for bench.json, bench.md, plots and score files.")
@click.option("--threads", "threads", default=_default_threads, show_default="1,<usable cores>",
              help="Comma-separated intra-op thread counts to measure at, e.g. 1,2.")
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True, help="Timed runs per window.")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True, help="Untimed warm-up runs.")
@click.option("--cold-runs", type=click.IntRange(min=1), default=3, show_default=True,
              help="Fresh processes per bundle and thread count for cold start / peak RSS (median reported).")
@click.option("--rss-windows", type=click.IntRange(min=0), default=8, show_default=True,
              help="Windows the edge-only process scores after its first decision before RSS is read.")
@click.option("--reference-device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where the reference scores the set (auto: CUDA when torch sees one). Latency is always CPU.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Reference scoring batch size.")
@click.option("--provider", "providers", multiple=True,
              help="onnxruntime execution provider for the bundles, repeatable, in order of preference "
                   "(default CPUExecutionProvider; e.g. CUDAExecutionProvider on a Jetson). A missing one falls "
                   "back to CPU with a warning; the report states the provider actually used.")
@click.option("--clock", type=click.Choice(["wall", "cpu"]), default="wall", show_default=True,
              help="Latency clock: wall (elapsed) or cpu (this process's CPU time; use it at --threads 1 on a "
                   "machine shared with other jobs, where elapsed time measures the wait for a core).")
@click.option("--plots/--no-plots", default=True, show_default=True, help="PNG plots (needs matplotlib).")
def bench_command(protocol_path: Optional[str], audio_dir: Optional[str], checkpoint: Optional[str],
                  bundles: tuple[str, ...], device_only: tuple[str, ...], asv_scores: Optional[str],
                  full_scores: Optional[str], audio: Optional[str], out_dir: str, threads: str, runs: int,
                  warmup: int, cold_runs: int, rss_windows: int, reference_device: str, batch_size: int,
                  providers: tuple[str, ...], clock: str, plots: bool) -> None:
    """Benchmark edge bundles against the full model (accuracy, latency, memory, size).

    \b
    Full (needs torch):
      edge-detect bench --protocol P --audio-dir D --checkpoint FULL.pt --bundle B [--bundle B2 ...]
    On the device (no torch):
      edge-detect bench --device-only B [--threads 1,4] [--audio sample.wav]

    A score list that does not cover exactly the protocol's ids (a file that cannot be
    decoded, a --full-scores file with missing or extra ids) stops the run with exit
    code 5 and the list of ids. Timings are figures of this machine at this moment:
    bench.json records the CPU, its flags, the load average and every library version.
    """
    from ..benchmarking.runner import BenchConfig, run_device_only, run_full_bench

    thread_list = parse_threads(threads)
    cfg = BenchConfig(threads=thread_list, runs=runs, warmup=warmup, cold_runs=cold_runs, rss_windows=rss_windows,
                      batch_size=batch_size, reference_device=reference_device, plots=plots,
                      providers=list(providers) or ["CPUExecutionProvider"], argv=list(sys.argv), clock=clock,
                      command_line=canonical_command_line(click.get_current_context()))
    try:
        if device_only:
            extra = [n for n, v in (("--protocol", protocol_path), ("--audio-dir", audio_dir),
                                    ("--checkpoint", checkpoint), ("--asv-scores", asv_scores),
                                    ("--full-scores", full_scores)) if v] + (["--bundle"] if bundles else [])
            if extra:
                raise click.UsageError(f"--device-only measures bundles alone; drop {', '.join(extra)}")
            run_device_only(list(device_only), out_dir, cfg, audio=audio, log=log)
        else:
            missing = [n for n, v in (("--protocol", protocol_path), ("--audio-dir", audio_dir),
                                      ("--checkpoint", checkpoint)) if not v]
            if not bundles:
                missing.append("--bundle")
            if missing:
                raise click.UsageError(f"full benchmark needs {', '.join(missing)} (or use --device-only BUNDLE)")
            if audio:
                raise click.UsageError("--audio is for --device-only; the full benchmark uses the protocol's audio")
            run_full_bench(protocol_path, audio_dir, checkpoint, list(bundles), out_dir, cfg,
                           asv_scores=asv_scores, full_scores=full_scores, log=log)
    except EdgeDetectorError as exc:
        fail(exc)
    exit_with(ExitCode.ACCEPT)
