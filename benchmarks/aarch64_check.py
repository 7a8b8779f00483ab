"""Helper for ``benchmarks/aarch64_check.sh``: make the inputs, score them, compare the runs.

The same file runs on the x86 host and inside the emulated arm64 root, so the
``score`` step imports only the device runtime (numpy + onnxruntime + soundfile); only
``prepare`` (host side, when no bundle is given) needs torch to export a tiny model.

Subcommands
  prepare WORKDIR [--bundle B] [--no-fp16]   synthetic audio, the bundle (a tiny one unless B is
                                             given) in WORKDIR/bundles/fp32 and its fp16 variant
  score AUDIO_DIR --bundle B [--bundle B2] --label L --out JSON [--profile P]
                                             score every file with the runtime, per bundle
  compare X86.json ARM.json... --out JSON    fail unless decisions match and |Δscore| ≤ the
                                             tolerance each bundle's manifest states
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import struct
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]

#: (name, seconds, sample rate, channels, kind, seed): different rates exercise the resampler,
#: stereo exercises the mix-down, short files the repeat-padding, long files the window combination.
#: 11 windows in all (tiled, single and multi-window files): emulated arm64 takes about 10 s per
#: window per bundle on a busy 2-core box.
FILES: list[tuple[str, float, int, int, str, int]] = [
    ("speech_16k", 4.0, 16000, 1, "speech", 11),
    ("speech_22k_stereo", 4.0, 22050, 2, "speech", 12),
    ("speech_44k_long", 7.0, 44100, 1, "speech", 13),
    ("speech_short", 1.2, 16000, 1, "speech", 14),
    ("buzz_16k", 4.0, 16000, 1, "buzz", 21),
    ("buzz_48k_long", 6.0, 48000, 1, "buzz", 22),
    ("mix_8k", 3.0, 8000, 1, "mix", 31),
    ("noise_16k", 2.5, 16000, 1, "noise", 41),
]


# --------------------------------------------------------------------------- prepare (host)
def _signal(kind: str, seconds: float, sr: int, seed: int) -> np.ndarray:
    sys.path.insert(0, str(REPO / "tests"))
    from audio_synth import buzzy, speechlike  # the same generators the tests use

    if kind == "speech":
        return speechlike(seconds, sr=sr, seed=seed, f0=100.0 + seed)
    if kind == "buzz":
        return buzzy(seconds, sr=sr, seed=seed)
    if kind == "mix":
        return (0.5 * speechlike(seconds, sr=sr, seed=seed) + 0.5 * buzzy(seconds, sr=sr, seed=seed)).astype(np.float32)
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * sr))).astype(np.float32)


def write_audio(audio_dir: Path) -> list[Path]:
    import soundfile as sf

    audio_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for name, seconds, sr, channels, kind, seed in FILES:
        x = _signal(kind, seconds, sr, seed)
        if channels == 2:
            x = np.stack([x, 0.8 * np.roll(x, 37)], axis=1)
        path = audio_dir / f"{name}.wav"
        sf.write(str(path), x, sr, subtype="PCM_16")
        out.append(path)
    return out


def build_tiny_bundle(out: Path) -> Path:
    """Train a tiny RawNet2 for a few steps (as tests/conftest.py does) and export it."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import train_tiny  # noqa: E402  (plain function; pytest only for importorskip)

    from export.onnx_export import build_bundle
    from audio_synth import buzzy, speechlike

    model = train_tiny(steps=15, seed=0)
    audio = np.stack([speechlike(4.0375, seed=7)[:64600], buzzy(4.0375, seed=7)[:64600]])
    return build_bundle(model, out, audio_windows=audio, overwrite=True)


def place_thresholds(bundle_dir: Path, audio_dir: Path) -> dict[str, float]:
    """Put accept/reject between x86 scores so the files get all three decisions.

    Each threshold sits half-way between two neighbouring calibrated scores, i.e. as far
    from any file as possible: a decision can then only flip if a score moves by more
    than half that gap, which the score tolerance check would catch first.
    """
    from edge_detector.bundle import write_manifest
    from edge_detector.detector import Detector
    from edge_detector.session import SessionSettings

    det = Detector(bundle_dir, SessionSettings(intra_op_threads=1))
    cal = sorted(det.score_file(p, windows="all").calibrated for p in sorted(audio_dir.glob("*.wav")))
    n = len(cal)
    lo, hi = n // 3, (2 * n) // 3
    reject = 0.5 * (cal[lo - 1] + cal[lo])
    accept = 0.5 * (cal[hi - 1] + cal[hi])
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["thresholds"]["accept"] = float(accept)
    manifest["thresholds"]["reject"] = float(reject)
    manifest["thresholds"]["note"] = "placed by benchmarks/aarch64_check.py between x86 scores (test bundle)"
    write_manifest(bundle_dir, manifest)
    return {"accept": float(accept), "reject": float(reject)}


def cmd_prepare(args: argparse.Namespace) -> int:
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    audio_dir = work / "audio"
    write_audio(audio_dir)
    info: dict[str, Any] = {"audio_dir": str(audio_dir), "files": [f[0] for f in FILES]}
    bundles = work / "bundles"
    bundles.mkdir(exist_ok=True)
    bundle = bundles / "fp32"
    if args.bundle:
        import shutil

        if bundle.exists():
            shutil.rmtree(bundle)
        shutil.copytree(args.bundle, bundle)
        info["bundle_source"] = str(Path(args.bundle).resolve())
    else:
        build_tiny_bundle(bundle)
        info["bundle_source"] = "tiny RawNet2 trained on the fly (tests/conftest.py:train_tiny)"
        info["thresholds"] = place_thresholds(bundle, audio_dir)
    info["bundles"] = [str(bundle)]
    variant = json.loads((bundle / "manifest.json").read_text())["model"]["variant"]
    if args.fp16 and variant != "fp32":
        info["fp16_skipped"] = f"the given bundle is {variant!r}; convert-fp16 needs fp32"
    elif args.fp16:
        # The Jetson variant, checked on arm64 too: onnxruntime has native fp16 kernels
        # there (ARMv8.2 FP16 on the A76) that x86 lacks, so its numbers can differ more.
        from quantize.fp16 import convert_bundle

        fp16, summary = convert_bundle(bundle, bundles / "fp16", overwrite=True, seed=0)
        info["bundles"].append(str(fp16))
        info["fp16_parity_vs_fp32"] = summary["parity"]
    (work / "prepare.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info))
    return 0


# --------------------------------------------------------------------------- score (x86 and arm64)
AT_HWCAP = 16
#: Linux arm64 HWCAP bits (arch/arm64/include/uapi/asm/hwcap.h)
ARM64_HWCAP = {"fp": 0, "asimd": 1, "aes": 3, "crc32": 7, "atomics": 8, "fphp": 9, "asimdhp": 10, "asimdrdm": 12,
               "asimddp": 20, "sve": 22}


def hwcaps() -> dict[str, Any]:
    """CPU features the way onnxruntime sees them on arm64: the ELF auxiliary vector.

    Under qemu-user ``/proc/cpuinfo`` shows the *host* CPU, but ``/proc/self/auxv`` is
    emulated from QEMU_CPU, so this tells whether the dot-product kernels were eligible.
    """
    out: dict[str, Any] = {"machine": platform.machine()}
    try:
        raw = Path("/proc/self/auxv").read_bytes()
    except OSError as exc:
        out["auxv_error"] = str(exc)
        return out
    words = struct.unpack(f"<{len(raw) // 8}Q", raw[: len(raw) // 8 * 8])
    aux = dict(zip(words[0::2], words[1::2]))
    if platform.machine() in ("aarch64", "arm64") and AT_HWCAP in aux:
        bits = aux[AT_HWCAP]
        out["hwcap"] = hex(bits)
        out["features"] = sorted(name for name, bit in ARM64_HWCAP.items() if bits >> bit & 1)
    return out


def score_bundle(bundle: str, audio_dir: Path, settings: Any) -> dict[str, Any]:
    from edge_detector.detector import Detector

    t0 = time.perf_counter()
    det = Detector(bundle, settings)
    t_load = time.perf_counter() - t0
    records = []
    for path in sorted(audio_dir.glob("*.wav")):
        r = det.score_file(path, windows="all")
        records.append({"file": path.name, "decision": r.decision, "score": r.score, "calibrated": r.calibrated,
                        "windows": [w["score"] for w in r.windows]})
    return {
        "bundle": {"model_id": det.bundle.model_id, "sha256": det.bundle.model_sha256,
                   "variant": det.bundle.manifest["model"]["variant"],
                   "tolerance": float(det.bundle.manifest["parity"]["tolerance"]),
                   "thresholds": {"accept": det.bundle.accept_threshold, "reject": det.bundle.reject_threshold}},
        "provider": det.provider,
        "session_load_s": round(t_load, 3),
        "scoring_s": round(time.perf_counter() - t0 - t_load, 3),
        "results": records,
    }


def cmd_score(args: argparse.Namespace) -> int:
    import onnxruntime as ort

    from edge_detector.session import SessionSettings

    profile_info = None
    if args.profile:
        # A shipped profile: proves the TOML files were installed as package data on this arch.
        from firmware_config import load_profile

        prof = load_profile(args.profile)
        settings = prof.session_settings()
        profile_info = {"name": prof.name, "intra_op_threads": prof.intra_op_threads,
                        "allow_spinning": prof.allow_spinning, "source": str(prof.source)}
    else:
        settings = SessionSettings(intra_op_threads=1)
    if args.threads is not None:
        settings.intra_op_threads = args.threads
    runs = {}
    for b in args.bundle:
        run = score_bundle(b, Path(args.audio_dir), settings)
        runs[run["bundle"]["variant"]] = run
        print(f"{args.label}: {run['bundle']['variant']}: scored {len(run['results'])} files on "
              f"{platform.machine()} in {run['scoring_s']} s", file=sys.stderr)
    doc = {
        "label": args.label,
        "qemu_cpu": os.environ.get("QEMU_CPU"),
        "platform": {"machine": platform.machine(), "python": platform.python_version(),
                     "numpy": np.__version__, "onnxruntime": ort.__version__, "cpu": hwcaps()},
        "profile": profile_info,
        "threads": settings.intra_op_threads,
        "bundles": runs,
    }
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


# --------------------------------------------------------------------------- compare (host)
def compare_bundle(reference: dict[str, Any], others: list[dict[str, Any]], tolerance: Optional[float] = None) -> dict[str, Any]:
    """Per file: same decision, |Δscore| and max per-window |Δ| within the bundle's parity tolerance."""
    tol = float(tolerance if tolerance is not None else reference["bundle"]["tolerance"])
    ref = {r["file"]: r for r in reference["results"]}
    runs = []
    ok = True
    for run in others:
        problems: list[str] = []
        if run["bundle"]["sha256"] != reference["bundle"]["sha256"]:
            problems.append("different model file than the reference run")
        got = {r["file"]: r for r in run["results"]}
        if set(got) != set(ref):
            problems.append(f"different file sets: {sorted(set(got) ^ set(ref))}")
        max_d, max_w, flips = 0.0, 0.0, []
        for name in sorted(set(got) & set(ref)):
            a, b = ref[name], got[name]
            d = abs(a["score"] - b["score"])
            w = max((abs(x - y) for x, y in zip(a["windows"], b["windows"])), default=0.0)
            if len(a["windows"]) != len(b["windows"]):
                problems.append(f"{name}: {len(b['windows'])} windows vs {len(a['windows'])}")
            max_d, max_w = max(max_d, d), max(max_w, w)
            if a["decision"] != b["decision"]:
                flips.append(f"{name}: {a['decision']} -> {b['decision']}")
            if d > tol or w > tol:
                problems.append(f"{name}: |Δscore| {d:.3g}, max |Δwindow| {w:.3g} > tolerance {tol:g}")
        problems += [f"decision differs: {f}" for f in flips]
        passed = not problems
        ok &= passed
        runs.append({"label": run["label"], "provider": run["provider"], "scoring_s": run["scoring_s"],
                     "passed": passed, "max_abs_score_diff": max_d, "max_abs_window_diff": max_w,
                     "decisions_identical": not flips, "problems": problems})
    decisions = {r["file"]: r["decision"] for r in reference["results"]}
    th = reference["bundle"]["thresholds"]
    # How far the nearest file sits from a threshold (calibrated units): a decision can only
    # flip when a score moves at least this much, so this says how sharp "identical" is.
    margin = min(abs(r["calibrated"] - t) for r in reference["results"] for t in (th["accept"], th["reject"]))
    return {"passed": ok, "tolerance": tol, "bundle": reference["bundle"], "n_files": len(ref),
            "n_windows": sum(len(r["windows"]) for r in reference["results"]), "min_threshold_margin": margin,
            "decision_counts": {d: list(decisions.values()).count(d) for d in ("accept", "uncertain", "reject")},
            "reference_results": reference["results"], "runs": runs}


def compare(reference: dict[str, Any], others: list[dict[str, Any]], tolerance: Optional[float] = None) -> dict[str, Any]:
    """Every bundle variant of the reference run against the same variant of every other run."""
    variants = {}
    for variant, ref in reference["bundles"].items():
        flat = [{**o["bundles"][variant], "label": o["label"]} for o in others if variant in o["bundles"]]
        missing = [o["label"] for o in others if variant not in o["bundles"]]
        res = compare_bundle({**ref, "label": reference["label"]}, flat, tolerance)
        if missing:
            res["passed"] = False
            res["missing_runs"] = missing
        variants[variant] = res
    return {
        "passed": all(v["passed"] for v in variants.values()),
        "reference": {"label": reference["label"], "platform": reference["platform"], "profile": reference.get("profile"),
                      "threads": reference.get("threads")},
        "emulated": [{"label": o["label"], "qemu_cpu": o.get("qemu_cpu"), "platform": o["platform"],
                      "profile": o.get("profile"), "threads": o.get("threads")} for o in others],
        "variants": variants,
    }


def cmd_compare(args: argparse.Namespace) -> int:
    reference = json.loads(Path(args.reference).read_text())
    others = [json.loads(Path(p).read_text()) for p in args.others]
    doc = compare(reference, others, args.tolerance)
    if args.extra:
        doc.update(json.loads(args.extra))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    features = {o["label"]: o["platform"]["cpu"].get("features") for o in doc["emulated"]}
    for variant, res in doc["variants"].items():
        for run in res["runs"]:
            status = "PASS" if run["passed"] else "FAIL"
            print(f"{status} {variant:>5} {run['label']:>11}: decisions identical={run['decisions_identical']}, "
                  f"max |Δscore|={run['max_abs_score_diff']:.3g}, max |Δwindow|={run['max_abs_window_diff']:.3g} "
                  f"(tolerance {res['tolerance']:g}); cpu features {features.get(run['label'])}")
            for p in run["problems"]:
                print(f"     {p}")
    return 0 if doc["passed"] else 1


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("workdir")
    p.add_argument("--bundle", default=None)
    p.add_argument("--no-fp16", dest="fp16", action="store_false", help="skip the fp16 variant")
    p.set_defaults(func=cmd_prepare)
    s = sub.add_parser("score")
    s.add_argument("audio_dir")
    s.add_argument("--bundle", action="append", required=True)
    s.add_argument("--label", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--profile", default=None, help="shipped profile whose session settings to use")
    s.add_argument("--threads", type=int, default=None, help="override the profile's intra-op threads")
    s.set_defaults(func=cmd_score)
    c = sub.add_parser("compare")
    c.add_argument("reference")
    c.add_argument("others", nargs="+")
    c.add_argument("--out", required=True)
    c.add_argument("--tolerance", type=float, default=None)
    c.add_argument("--extra", default=None, help="JSON object merged into the output (timings, command)")
    c.set_defaults(func=cmd_compare)
    args = ap.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
