"""The two benchmark modes: full (reference vs bundles, accuracy + cost) and device-only.

Both write the same kind of report. The full mode imports the PyTorch reference lazily
(:mod:`export.reference`); the device-only mode never imports torch, directly or not,
so ``edge-detect bench --device-only BUNDLE`` runs on a Pi with only the runtime
installed.

Every model scores the *same* float32 windows: each file is decoded once with
:func:`edge_detector.audio.load_audio`, cut with
:func:`edge_detector.windows.first_window` (the ASVspoof protocol: first 64 600 samples,
tiled when shorter), and that array is handed to the reference and to every bundle.
"""
from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import click
import numpy as np

from ..audio import check_scorable, load_audio
from ..bundle import MANIFEST_NAME, Bundle, load_bundle, sha256_file
from ..detector import Detector
from ..errors import BundleError, DataError, EdgeDetectorError
from ..metrics import load_asv_scores
from ..protocol import ProtocolEntry, read_protocol, resolve_audio, source_of
from ..session import SessionSettings
from ..windows import first_window
from . import BENCH_SCHEMA
from .accuracy import (clean_json, compare_with_full, join_scores, model_accuracy, read_score_file,
                       shipped_threshold_metrics, write_score_file)
from .environment import capture_environment
from .latency import (CLOCKS, INTERLEAVE_BLOCK, WINDOW_SECONDS, bundle_latency_callable, latency_record,
                      measure_bundle_latency, time_interleaved)
from .process import measure_process

__all__ = ["BenchConfig", "run_full_bench", "run_device_only", "bundle_sizes"]

Log = Callable[[str], None]


@dataclass
class BenchConfig:
    """How much to measure; recorded verbatim in bench.json."""

    threads: list[int]
    runs: int = 50
    warmup: int = 5
    cold_runs: int = 3
    rss_windows: int = 8
    batch_size: int = 16
    reference_device: str = "auto"
    plots: bool = True
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    argv: list[str] = field(default_factory=lambda: list(sys.argv))
    command_line: Optional[str] = None  # canonical form from the CLI; else derived from argv
    clock: str = "wall"  # latency clock: "wall" (elapsed) or "cpu" (this process's CPU time)

    def session_settings(self, threads: int) -> SessionSettings:
        """The onnxruntime settings every bundle measurement uses (only the thread count varies)."""
        return SessionSettings(intra_op_threads=threads, providers=list(self.providers))

    def settings_record(self) -> dict[str, Any]:
        return {
            "threads": self.threads, "runs": self.runs, "warmup": self.warmup, "cold_runs": self.cold_runs,
            "rss_windows": self.rss_windows, "batch_size_scoring": self.batch_size,
            "providers_requested": self.providers,
            "window_samples": 64600, "sample_rate": 16000, "window_seconds": WINDOW_SECONDS,
            "windows": "first (ASVspoof protocol: first 64600 samples, tiled when shorter)",
            "latency_batch": 1,
            "latency_definition": "Detector.score_windows on one window, after warm-up; session creation excluded",
            "clock": self.clock + (" (elapsed time)" if self.clock == "wall" else
                                   " (CPU time of this process, all threads: a latency only at 1 thread; "
                                   "robust on a machine shared with other jobs)"),
            "latency_order": (f"full mode: all models timed in alternating blocks of {INTERLEAVE_BLOCK} runs "
                              "(2 untimed runs first in each block), so drift hits every model alike; "
                              "device mode: one bundle after the other"),
            "rtf_definition": "compute time / audio time (4.0375 s per window)",
            "percentiles": "numpy.percentile, linear interpolation",
        }


def _command_record(cfg: BenchConfig) -> dict[str, Any]:
    """``command_line`` reproduces the run (all options spelled out); ``argv`` is what the process saw."""
    line = cfg.command_line or "edge-detect " + shlex.join(list(cfg.argv[1:]))
    return {"command_line": line, "argv": list(cfg.argv)}


def bundle_sizes(bundle: Bundle) -> dict[str, int]:
    """Bytes on disk: the model file alone and the whole bundle (every listed file + manifest); a fusion
    adds its members' (models and whole bundles)."""
    total = (bundle.path / MANIFEST_NAME).stat().st_size
    for name in bundle.manifest["files"]:
        total += (bundle.path / name).stat().st_size
    model = bundle.model_path.stat().st_size
    for member in bundle.family.members(bundle):
        sizes = bundle_sizes(member)
        model, total = model + sizes["model_bytes"], total + sizes["bundle_bytes"]
    return {"model_bytes": model, "bundle_bytes": total}


def _bundle_record(name: str, bundle: Bundle) -> dict[str, Any]:
    m = bundle.manifest
    return {
        "name": name,
        "kind": "bundle",
        "path": str(bundle.path),
        "model_id": bundle.model_id,
        "model_sha256": bundle.model_sha256,
        "family": m["model"].get("family"),
        "score_kind": m["score"].get("kind"),
        "variant": m["model"]["variant"],
        "quantization": m.get("quantization"),
        "parameters": int(m["model"]["parameters"]),
        "size": bundle_sizes(bundle),
        "calibration": {"method": m["calibration"]["method"], "scale": float(m["calibration"]["scale"]),
                        "offset": float(m["calibration"]["offset"])},
        "thresholds": {"accept": bundle.accept_threshold, "reject": bundle.reject_threshold},
        "manifest_evaluation": m.get("evaluation"),
        "window_rule_in_manifest": {"mode": m["windows"]["mode"], "combine": m["windows"]["combine"]},
    }


def _unique_names(paths: Sequence[str]) -> list[str]:
    names: list[str] = []
    for p in paths:
        base = Path(p).resolve().name or "bundle"
        name, k = base, 2
        while name in names or name == "full":
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def _load_bundles(paths: Sequence[str]) -> list[tuple[str, Bundle]]:
    bundles = [(n, load_bundle(p)) for n, p in zip(_unique_names(paths), paths)]
    for name, b in bundles:
        rule = b.window_rule
        if b.sample_rate != 16000 or rule.window != 64600:
            raise BundleError(f"{b.path}: bench compares on 64600-sample windows at 16 kHz; this bundle states "
                              f"{rule.window} samples at {b.sample_rate} Hz")
    return bundles


def _progress(length: int, label: str):
    return click.progressbar(length=length, label=label, file=sys.stderr)


def _score_everything(entries: Sequence[ProtocolEntry], paths: dict[str, Path], reference: Any,
                      detectors: list[tuple[str, Detector]], min_seconds: float, max_seconds: float,
                      batch_size: int, chunk: int = 64) -> tuple[dict[str, dict[str, float]], dict[str, str],
                                                                   Optional[np.ndarray]]:
    """Decode each file once, cut its first window, score it with every model.

    Streams in chunks so memory stays bounded on a 70 000-file eval set. Returns the
    score dicts by model name, the reason for every file that could not be used, and
    the first window (for latency runs).
    """
    scores: dict[str, dict[str, float]] = {"full": {}} if reference is not None else {}
    for name, _ in detectors:
        scores[name] = {}
    reasons: dict[str, str] = {}
    first: Optional[np.ndarray] = None
    with _progress(len(entries), "decoding + scoring") as bar:
        for start in range(0, len(entries), chunk):
            block = entries[start:start + chunk]
            ids, rows = [], []
            for e in block:
                try:
                    decoded = load_audio(paths[e.file_id], 16000, max_seconds=max_seconds)
                    check_scorable(decoded.samples, 16000, min_seconds, name=e.file_id)
                    rows.append(first_window(decoded.samples, 64600))
                    ids.append(e.file_id)
                except EdgeDetectorError as exc:
                    reasons[e.file_id] = str(exc)
            if rows:
                windows = np.stack(rows)
                if first is None:
                    first = windows[0].copy()
                if reference is not None:
                    scores["full"].update(zip(ids, reference.score(windows, batch_size=batch_size).tolist()))
                for name, det in detectors:
                    scores[name].update(zip(ids, det.score_windows(windows).astype(np.float64).tolist()))
            bar.update(len(block))
    return scores, reasons, first


def _data_record(protocol: Path, audio_dir: str, entries: Sequence[ProtocolEntry]) -> dict[str, Any]:
    systems: dict[str, int] = {}
    sources: dict[str, int] = {}
    for e in entries:
        if not e.is_bonafide:
            systems[e.system] = systems.get(e.system, 0) + 1
        sources[source_of(e.speaker)] = sources.get(source_of(e.speaker), 0) + 1
    return {
        "protocol": str(protocol),
        "protocol_sha256": sha256_file(protocol),
        "audio_dir": str(audio_dir),
        "files": len(entries),
        "bonafide": sum(e.is_bonafide for e in entries),
        "spoof": sum(not e.is_bonafide for e in entries),
        "systems": dict(sorted(systems.items())),
        "sources": dict(sorted(sources.items())),
    }


def _process_records(bundles: Sequence[tuple[str, Bundle]], cfg: BenchConfig, audio: Optional[str],
                     log: Log) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, b in bundles:
        out[name] = {}
        for t in cfg.threads:
            log(f"edge-only process: {name} at {t} thread(s), {cfg.cold_runs} fresh process(es)")
            out[name][str(t)] = measure_process(str(b.path), t, repeats=cfg.cold_runs, windows=cfg.rss_windows,
                                                audio=audio, providers=cfg.providers)
    return out


def _finish(report: dict[str, Any], out_dir: Path, cfg: BenchConfig, plot_fn: Callable[[dict[str, Any], Path], list[str]],
            log: Log) -> dict[str, Any]:
    from .report import render_markdown

    out_dir.mkdir(parents=True, exist_ok=True)
    plots: list[str] = []
    if cfg.plots:
        try:
            plots = plot_fn(report, out_dir)
        except ModuleNotFoundError as exc:
            log(f"plots skipped: {exc.name} is not installed (pip install 'edge-detector[bench]')")
            report["plots_skipped"] = f"{exc.name} not installed"
    report["plots"] = plots
    report = clean_json(report)
    (out_dir / "bench.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    (out_dir / "bench.md").write_text(render_markdown(report), encoding="utf-8")
    log(f"wrote {out_dir / 'bench.json'}, {out_dir / 'bench.md'}" + (f" and {len(plots)} plot(s)" if plots else ""))
    return report


def run_full_bench(protocol: str, audio_dir: str, checkpoint: str, bundle_paths: Sequence[str], out_dir: str,
                   cfg: BenchConfig, asv_scores: Optional[str] = None, full_scores: Optional[str] = None,
                   log: Log = lambda m: None) -> dict[str, Any]:
    """Full benchmark: reference vs every bundle on one protocol, then latency, cold start, RSS."""
    from ..commands._common import require_torch

    started = time.perf_counter()
    require_torch()
    protocol_path = Path(protocol)
    entries = read_protocol(protocol_path)
    paths = resolve_audio(entries, audio_dir)
    bundles = _load_bundles(bundle_paths)
    asv = load_asv_scores(asv_scores) if asv_scores else None
    env = capture_environment()

    from export.reference import load_reference

    reference = load_reference(checkpoint, cfg.reference_device, log=log)
    described = reference.describe()
    env["torch_runtime"] = {"version": described["torch"], "threads_default": described["torch_threads_default"]}
    score_threads = max(cfg.threads)
    detectors = [(name, Detector(b, cfg.session_settings(score_threads))) for name, b in bundles]
    min_seconds = max(b.min_seconds for _, b in bundles)
    max_seconds = min(b.max_seconds for _, b in bundles)
    t_score = time.perf_counter()
    scores, reasons, first = _score_everything(entries, paths, None if full_scores else reference, detectors,
                                               min_seconds, max_seconds, cfg.batch_size)
    score_seconds = time.perf_counter() - t_score
    # Close the scoring sessions before timing anything: their (spinning) thread pools
    # must not compete with the latency runs for the same cores.
    del detectors
    if full_scores:
        scores = {"full": read_score_file(full_scores), **scores}
    # The join check: every list must hold exactly the protocol's trials.
    aligned = {name: join_scores(entries, s, name, reasons) for name, s in scores.items()}
    if first is None:  # unreachable: the join check above fails first
        raise DataError("no file could be scored")

    full_rec: dict[str, Any] = {"name": "full", "kind": "full", **described}
    full_rec["size"] = {"model_bytes": full_rec["checkpoint_bytes"], "bundle_bytes": full_rec["checkpoint_bytes"]}
    full_rec["scores_from"] = (f"score file {full_scores} (sha256 {sha256_file(Path(full_scores))})" if full_scores
                               else f"checkpoint, scored on {reference.device}")
    full_acc = model_accuracy(entries, aligned["full"], asv)
    full_rec["accuracy"] = full_acc
    models = [full_rec]
    for name, b in bundles:
        rec = _bundle_record(name, b)
        acc = model_accuracy(entries, aligned[name], asv)
        rec["accuracy"] = acc
        cal = b.manifest["calibration"]
        rec["shipped_thresholds"] = shipped_threshold_metrics(entries, aligned[name], float(cal["scale"]),
                                                              float(cal["offset"]), b.accept_threshold,
                                                              b.reject_threshold)
        rec["shipped_thresholds"]["full_model_at_these_thresholds"] = shipped_threshold_metrics(
            entries, aligned["full"], float(cal["scale"]), float(cal["offset"]), b.accept_threshold,
            b.reject_threshold)
        rec["vs_full"] = compare_with_full(entries, aligned["full"], aligned[name], full_acc, acc,
                                           (float(cal["scale"]), float(cal["offset"]), b.accept_threshold,
                                            b.reject_threshold))
        models.append(rec)

    # Latency: same window, same runs, same thread counts for every model, all models
    # timed in alternating blocks so that machine drift cannot land in the ratios.
    import torch

    full_rec["latency"] = {}
    for rec in models[1:]:
        rec["latency"] = {}
    for t in cfg.threads:
        settings = cfg.session_settings(t)
        calls = {"full": reference.cpu_callable(first)}
        made = {}
        for name, b in bundles:
            call, det, session_ms = bundle_latency_callable(str(b.path), first, settings)
            calls[name] = call
            made[name] = (det, session_ms)
        previous = torch.get_num_threads()
        torch.set_num_threads(t)
        try:
            samples = time_interleaved(calls, cfg.warmup, cfg.runs, label=f"latency, all models @{t}t",
                                       clock=CLOCKS[cfg.clock])
        finally:
            torch.set_num_threads(previous)
        full_rec["latency"][str(t)] = reference.cpu_latency_record(samples["full"], t, cfg.warmup)
        for rec, (name, b) in zip(models[1:], bundles):
            det, session_ms = made[name]
            rec["latency"][str(t)] = latency_record(samples[name], det, settings, t, cfg.warmup, session_ms)
        del calls, made  # close this thread count's sessions (and their thread pools) before the next
    cuda = reference.cuda_latency(first, cfg.warmup, cfg.runs, label="latency full @cuda")
    if cuda is not None:
        full_rec["latency_cuda"] = cuda
    for rec in models[1:]:
        rec["vs_full"]["speedup_p50"] = {
            str(t): full_rec["latency"][str(t)]["p50_ms"] / rec["latency"][str(t)]["p50_ms"] for t in cfg.threads}
        rec["vs_full"]["latency_ratio_p50"] = {
            str(t): rec["latency"][str(t)]["p50_ms"] / full_rec["latency"][str(t)]["p50_ms"] for t in cfg.threads}
        rec["vs_full"]["size_ratio"] = rec["size"]["model_bytes"] / full_rec["size"]["model_bytes"]
        rec["vs_full"]["parameter_ratio"] = rec["parameters"] / full_rec["parameters"]

    cold_audio = str(paths[entries[0].file_id])
    for rec, (name, procs) in zip(models[1:], _process_records(bundles, cfg, cold_audio, log).items()):
        rec["process"] = procs

    out = Path(out_dir)
    score_files = {}
    for name, arr in aligned.items():
        score_files[name] = str(write_score_file(out / "scores" / f"{name}.txt", entries, arr).relative_to(out))
    report: dict[str, Any] = {
        **_report_head("full", cfg, env),
        "settings": cfg.settings_record() | {"scoring_threads_onnxruntime": score_threads},
        "data": _data_record(protocol_path, audio_dir, entries),
        "asv_scores": ({"file": str(asv_scores), "sha256": sha256_file(Path(asv_scores)),
                        "target": int(asv[0].size), "nontarget": int(asv[1].size), "spoof": int(asv[2].size),
                        "costs": "ASVspoof 2019 (P_spoof 0.05, C_miss 1, C_fa 10), legacy t-DCF"}
                       if asv is not None else None),
        "reference_note": ("full fp32 PyTorch model; accuracy scored on " + reference.device
                           + ("" if not full_scores else " (scores read from file)")
                           + "; latency on the CPU with torch.set_num_threads at the same thread counts"),
        "models": models,
        "score_files": score_files,
        "timing": {"scoring_s": score_seconds, "total_s": None},
    }
    report["environment"]["loadavg_end"] = _loadavg()
    report["timing"]["total_s"] = time.perf_counter() - started
    from .plots import plot_full

    return _finish(report, out, cfg, plot_fn=plot_full, log=log)


def _report_head(mode: str, cfg: BenchConfig, env: dict[str, Any]) -> dict[str, Any]:
    """The fields every bench.json starts with (settings: the device-only ones; full mode adds to them)."""
    return {"schema": BENCH_SCHEMA, "mode": mode, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": _command_record(cfg), "environment": env, "settings": cfg.settings_record()}


def _loadavg() -> Optional[list[float]]:
    import os

    try:
        return list(os.getloadavg())
    except (AttributeError, OSError):
        return None


def run_device_only(bundle_paths: Sequence[str], out_dir: str, cfg: BenchConfig, audio: Optional[str] = None,
                    log: Log = lambda m: None) -> dict[str, Any]:
    """Device-only benchmark: latency, RTF, cold start, peak RSS and size; no torch anywhere."""
    started = time.perf_counter()
    bundles = _load_bundles(bundle_paths)
    env = capture_environment()
    if audio:
        window = first_window(load_audio(audio, 16000).samples, 64600)
        return _device_only(bundles, out_dir, cfg, audio, window, env, started, log)
    # No file given: the make-demo signal (formant-synthesised vowels), written to a temporary
    # WAV so the cold-start processes decode a file like a real decision. Noise would be
    # refused by the speech-presence check before the model ever ran.
    import tempfile

    import soundfile as sf

    from ..sanity import formant_vowels

    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        demo = str(Path(tmp) / "demo.wav")
        sf.write(demo, formant_vowels(), 16000, subtype="PCM_16")
        window = first_window(load_audio(demo, 16000).samples, 64600)
        return _device_only(bundles, out_dir, cfg, demo, window, env, started, log, input_name="synthetic")


def _device_only(bundles, out_dir: str, cfg: BenchConfig, audio: str, window, env, started: float, log: Log,
                 input_name: Optional[str] = None) -> dict[str, Any]:
    models = []
    for name, b in bundles:
        rec = _bundle_record(name, b)
        rec["latency"] = {}
        for t in cfg.threads:
            rec["latency"][str(t)] = measure_bundle_latency(str(b.path), window, t, cfg.warmup, cfg.runs,
                                                            label=f"latency {name} @{t}t",
                                                            settings=cfg.session_settings(t),
                                                            clock=CLOCKS[cfg.clock])
        models.append(rec)
    for rec, (name, procs) in zip(models, _process_records(bundles, cfg, audio, log).items()):
        rec["process"] = procs
    report: dict[str, Any] = {
        **_report_head("device-only", cfg, env),
        "input": audio if input_name is None else "make-demo signal (edge_detector.sanity.formant_vowels, 5 s)",
        "models": models,
        "timing": {"total_s": None},
    }
    report["environment"]["loadavg_end"] = _loadavg()
    report["environment"]["torch_imported_by_bench"] = sys.modules.get("torch") is not None
    report["timing"]["total_s"] = time.perf_counter() - started
    from .plots import plot_device

    return _finish(report, Path(out_dir), cfg, plot_fn=plot_device, log=log)
