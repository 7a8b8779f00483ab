"""`edge-detect doctor`: can this machine run this bundle with this profile, and how fast?

A device in the field fails in boring ways: the CPU build of onnxruntime where the GPU
build was meant to be, a profile asking for more threads than there are cores, an int8
model on a CPU without dot-product, a bundle copied incompletely. The doctor reports
all of it in one place and then proves the path works by running one real inference
through each provider the profile asks for. A provider that is missing is reported and
the run falls back to the CPU *visibly* - the same fallback the runtime takes.

Exit codes: 0 when the bundle runs (warnings allowed), 8 (bad profile) when the
profile cannot be loaded, 7 (bad bundle) when the bundle cannot be loaded or run.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import click

from ..errors import BundleError, EdgeDetectorError, ExitCode, ProfileError
from ..session import installed_onnxruntime_builds
from ._common import exit_with, log

OK, WARN, FAIL = "ok", "warn", "fail"
#: What each bundle variant needs from the hardware to be worth choosing.
VARIANT_NEEDS = {
    "int8": "int8 is fast only with dot-product (asimddp, arm64) or VNNI (avx512_vnni / avx_vnni, x86); "
            "without them it saves size and memory, not time",
    "int8-symmetric": "int8-symmetric is meant for TensorRT (trt_int8_enable); on a CPU it runs like int8",
    "fp16": "fp16 is meant for a GPU (TensorRT / CUDA); on a CPU onnxruntime casts to fp32 and it runs slower than fp32",
}


def _check(name: str, status: str, detail: str) -> dict[str, str]:
    return {"check": name, "status": status, "detail": detail}


def profile_fit(profile: Any, cpu: Any, available: list[str]) -> list[dict[str, str]]:
    """Does the profile suit this machine? One record per check (ok / warn / fail)."""
    checks = []
    if profile.arch != "any" and profile.arch != cpu.machine:
        checks.append(_check("arch", WARN, f"profile is for {profile.arch}, this machine is {cpu.machine}"))
    else:
        checks.append(_check("arch", OK, f"{cpu.machine}"))
    if profile.intra_op_threads > cpu.cores:
        checks.append(_check("threads", WARN, f"intra_op_threads {profile.intra_op_threads} > {cpu.cores} usable "
                                              f"core(s): threads would compete; lower it"))
    else:
        checks.append(_check("threads", OK, f"intra_op_threads {profile.intra_op_threads} <= {cpu.cores} core(s)"))
    for name in profile.provider_names:
        if name in available:
            checks.append(_check(f"provider {name}", OK, "offered by this onnxruntime build"))
        else:
            checks.append(_check(f"provider {name}", WARN, f"not offered by this onnxruntime build "
                                                           f"(offers {', '.join(available)}): falls back to CPU"))
    missing = [f for f in profile.cpu_features if f not in cpu.features]
    if missing:
        checks.append(_check("cpu features", WARN, f"profile expects {', '.join(missing)}, not reported by this CPU"))
    elif profile.cpu_features:
        checks.append(_check("cpu features", OK, ", ".join(profile.cpu_features)))
    gpu = any(n in available for n in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
              if n in profile.provider_names)
    if profile.variant in ("int8", "int8-symmetric") and not cpu.int8_fast_path and not gpu:
        checks.append(_check(f"variant {profile.variant}", WARN, VARIANT_NEEDS["int8"]))
    elif profile.variant == "fp16" and not gpu:
        checks.append(_check("variant fp16", WARN, VARIANT_NEEDS["fp16"]))
    else:
        checks.append(_check(f"variant {profile.variant}", OK, "suits this machine"))
    for p in profile.providers:
        cache = p.options.get("trt_engine_cache_path")
        if cache and p.name in available:
            path = Path(cache)
            probe = path if path.exists() else path.parent
            ok = os.access(probe, os.W_OK)
            checks.append(_check("trt engine cache", OK if ok else WARN,
                                 f"{cache} {'is writable' if ok else 'is not writable: TensorRT rebuilds the engine at every start'}"))
    return checks


def probe_window(window: int, sample_rate: int) -> "np.ndarray":
    """A deterministic speech-like window (harmonics with an envelope): real-looking input, no files."""
    import numpy as np

    t = np.arange(window) / sample_rate
    phase = 2 * np.pi * np.cumsum(130.0 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))) / sample_rate
    x = sum(np.sin(k * phase) / k for k in range(1, 20))
    x = x * (0.5 * (1 + np.sin(2 * np.pi * 4 * t))) ** 2 + 0.01 * np.sin(2 * np.pi * 3001 * t)
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)[None, :]


def run_provider(bundle: Any, spec: Any, threads: int, spinning: bool, level: Optional[str], runs: int,
                 available: list[str]) -> dict[str, Any]:
    """One session through ``spec`` (falling back to CPU with a warning) and timed runs."""
    from ..detector import Detector
    from ..session import SessionSettings, provider_name

    requested = provider_name(spec)
    record: dict[str, Any] = {"requested": requested}
    if requested not in available:
        msg = (f"{requested} is not available in this onnxruntime build (it offers {', '.join(available)}); "
               f"falling back to CPUExecutionProvider")
        log(f"WARNING: {msg}")
        record["warning"] = msg
    settings = SessionSettings(intra_op_threads=threads, allow_spinning=spinning, graph_optimization_level=level,
                               providers=[spec])
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        det = Detector(bundle, settings)
    for w in caught:  # re-emit, so nothing the runtime said is lost
        log(f"WARNING: {w.message}")
    record["session_s"] = round(time.perf_counter() - t0, 3)
    record["ran_on"] = det.providers
    record["fallback"] = det.provider != requested
    x = probe_window(bundle.window_rule.window, bundle.sample_rate)
    t1 = time.perf_counter()
    score = float(det.score_windows(x)[0])  # first run: engine build / allocation, not timed
    record["first_run_ms"] = round((time.perf_counter() - t1) * 1000.0, 2)
    times = []
    for _ in range(max(1, runs)):
        t2 = time.perf_counter()
        det.score_windows(x)
        times.append((time.perf_counter() - t2) * 1000.0)
    record["latency_ms_median"] = round(statistics.median(times), 2)
    record["latency_ms_min"] = round(min(times), 2)
    record["runs"] = len(times)
    record["score"] = score
    record["finite"] = bool(score == score and abs(score) != float("inf"))
    window_s = bundle.window_rule.window / bundle.sample_rate
    record["real_time_factor"] = round(statistics.median(times) / 1000.0 / window_s, 4)
    return record


def _text_report(doc: dict[str, Any]) -> str:
    cpu, ort_info = doc["cpu"], doc["onnxruntime"]
    feats = ", ".join(cpu["features"]) or "none reported"
    lines = [
        f"system      {doc['system']['platform']} (python {doc['system']['python']})",
        f"cpu         {cpu['model']} [{cpu['machine']}], {cpu['cores']} usable / {cpu['cores_total']} core(s)"
        + (f", board {cpu['board']}" if cpu.get("board") else "") + (f", {cpu['l4t']}" if cpu.get("l4t") else ""),
        f"features    {feats} (from {cpu['source']})",
        f"            dot-product {'yes' if cpu['dot_product'] else 'no'}, VNNI {'yes' if cpu['vnni'] else 'no'}, "
        f"AVX2 {'yes' if cpu['avx2'] else 'no'}; int8 fast path {'yes' if cpu['int8_fast_path'] else 'no'}",
        f"onnxruntime {ort_info['version']} ({ort_info['device']}); providers: {', '.join(ort_info['providers'])}",
    ]
    prof = doc.get("profile")
    if prof:
        lines.append(f"profile     {prof['name']} ({prof['source']}): {prof['threads']} thread(s), spinning "
                     f"{'on' if prof['spinning'] else 'off'}, variant {prof['variant']}, providers "
                     f"{' > '.join(prof['providers'])}")
    else:
        lines.append("profile     none (CPU, 1 thread); pass --profile to check one")
    for c in doc["checks"]:
        lines.append(f"  [{c['status']:>4}] {c['check']}: {c['detail']}")
    if doc.get("bundle"):
        b = doc["bundle"]
        lines.append(f"bundle      {b['path']}: {b['model_id']} ({b['variant']}), sha256 verified")
    for r in doc.get("inference", []):
        ran = r["ran_on"][0] if r.get("ran_on") else "-"
        if "error" in r:
            lines.append(f"  {r['requested']}: FAILED {r['error']}")
            continue
        tag = f" (FELL BACK to {ran})" if r["fallback"] else ""
        lines.append(f"  {r['requested']}{tag}: median {r['latency_ms_median']:.2f} ms per window over {r['runs']} "
                     f"warm runs (first {r['first_run_ms']:.1f} ms, session {r['session_s']:.2f} s, RTF "
                     f"{r['real_time_factor']:.3g}), score {r['score']:.4f}")
    lines.append(f"verdict     {doc['verdict']}")
    return "\n".join(lines)


@click.command("doctor")
@click.option("--profile", "profile_name", default=None,
              help="Device profile to check: a shipped name (pi4, pi5, jetson-orin-nano, jetson-nano, x86) or a .toml path.")
@click.option("--bundle", "bundle_path", default=None, metavar="PATH",
              help="Bundle to run (default: the profile's variant of $EDGE_DETECTOR_BUNDLE / the shipped one).")
@click.option("--runs", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="Warm runs per provider (the median is reported).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of the text report.")
def doctor_command(profile_name: Optional[str], bundle_path: Optional[str], runs: int, as_json: bool) -> None:
    """Check this machine, a profile and a bundle; run one real inference per provider.

    Reports the CPU (model, cores, dot-product / VNNI / AVX2), the execution providers
    this onnxruntime build offers, whether the profile fits (threads <= cores, providers
    present, CPU features for the chosen variant), then times the bundle through every
    provider the profile lists. A missing provider falls back to the CPU with a warning.
    Exit 0 if the bundle runs, 8 if the profile is invalid, 7 if the bundle cannot be
    loaded or run.
    """
    import onnxruntime as ort

    from ..bundle import load_bundle
    from ..cpu import cpu_info
    from ..defaults import resolve_bundle_path

    cpu = cpu_info()
    available = list(ort.get_available_providers())
    doc: dict[str, Any] = {
        "system": {"platform": platform.platform(), "python": platform.python_version(), "executable": sys.executable},
        "cpu": cpu.to_dict(),
        "onnxruntime": {"version": ort.__version__, "device": ort.get_device(), "providers": available},
        "profile": None, "checks": [], "bundle": None, "inference": [],
    }
    code = ExitCode.ACCEPT
    builds = installed_onnxruntime_builds()
    if len(builds) > 1:
        keep = next((b for b in builds if b != "onnxruntime"), builds[-1])
        doc["checks"].append(_check("onnxruntime builds", WARN,
                                    f"{' and '.join(builds)} are both installed and overwrite each other's files; "
                                    f"keep one: pip uninstall -y {' '.join(builds)} && pip install {keep}"))
    else:
        doc["checks"].append(_check("onnxruntime builds", OK, ", ".join(builds) or "none found by pip"))

    def finish(verdict: str, exit_code: ExitCode) -> None:
        doc["verdict"] = verdict
        doc["exit_code"] = int(exit_code)
        click.echo(json.dumps(doc, indent=2) if as_json else _text_report(doc))
        exit_with(exit_code)

    profile = None
    if profile_name:
        try:
            from firmware_config import load_profile

            profile = load_profile(profile_name)
        except ProfileError as exc:
            log(f"edge-detect doctor: {exc}")
            doc["checks"].append(_check("profile", FAIL, str(exc)))
            finish(f"profile unusable: {exc}", ExitCode.BAD_PROFILE)
        doc["profile"] = {"name": profile.name, "source": str(profile.source), "threads": profile.intra_op_threads,
                          "spinning": profile.allow_spinning, "variant": profile.variant,
                          "graph_optimization_level": profile.graph_optimization_level,
                          "providers": profile.provider_names,
                          "provider_options": {p.name: p.options for p in profile.providers if p.options}}
        doc["checks"].extend(profile_fit(profile, cpu, available))

    try:
        path = resolve_bundle_path(bundle_path)
        if profile is not None and bundle_path is None:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                path = profile.resolve_bundle(path)
            for w in caught:
                log(f"WARNING: {w.message}")
                doc["checks"].append(_check("bundle variant", WARN, str(w.message)))
        bundle = load_bundle(path)
    except BundleError as exc:
        log(f"edge-detect doctor: {exc}")
        doc["checks"].append(_check("bundle", FAIL, str(exc)))
        finish(f"bundle unusable: {exc}", ExitCode.BAD_BUNDLE)
    variant = bundle.manifest["model"]["variant"]
    doc["bundle"] = {"path": str(bundle.path), "model_id": bundle.model_id, "variant": variant,
                     "sha256": bundle.model_sha256, "window": bundle.window_rule.window}
    if profile is not None and variant != profile.variant:
        doc["checks"].append(_check("bundle variant", WARN, f"profile wants {profile.variant!r}, bundle is {variant!r}"))

    threads = profile.intra_op_threads if profile else 1
    spinning = profile.allow_spinning if profile else False
    level = profile.graph_optimization_level if profile else None
    specs: list[Any] = [p.ort_spec() for p in profile.providers] if profile else ["CPUExecutionProvider"]
    if not any((s if isinstance(s, str) else s[0]) == "CPUExecutionProvider" for s in specs):
        specs.append("CPUExecutionProvider")  # the fallback every device ends up on: always time it
    cpu_record: Optional[dict[str, Any]] = None
    for spec in specs:
        name = spec if isinstance(spec, str) else spec[0]
        if name not in available and cpu_record is not None:
            # Same CPU session as already measured: say so instead of timing it twice.
            msg = (f"{name} is not available in this onnxruntime build (it offers {', '.join(available)}); "
                   f"falling back to CPUExecutionProvider")
            log(f"WARNING: {msg}")
            doc["inference"].append({**cpu_record, "requested": name, "warning": msg, "fallback": True})
            continue
        try:
            rec = run_provider(bundle, spec, threads, spinning, level, runs, available)
        except EdgeDetectorError as exc:
            log(f"edge-detect doctor: {name}: {exc}")
            doc["inference"].append({"requested": name, "error": str(exc), "ran_on": []})
            code = ExitCode.BAD_BUNDLE
            continue
        if not rec["finite"]:
            rec["error"] = "the model produced a non-finite score"
            code = ExitCode.BAD_BUNDLE
        if rec["ran_on"] and rec["ran_on"][0] == "CPUExecutionProvider" and cpu_record is None:
            cpu_record = {k: v for k, v in rec.items() if k not in ("warning",)}
        doc["inference"].append(rec)
    warns = [c for c in doc["checks"] if c["status"] == WARN] + [r for r in doc["inference"] if r.get("fallback")]
    if code != ExitCode.ACCEPT:
        finish("the bundle cannot run here (see FAILED above)", code)
    fits = "fits this machine" if not warns else f"runs, with {len(warns)} warning(s)"
    finish(f"OK: {fits}" if profile else "OK: the bundle runs on the CPU", code)
