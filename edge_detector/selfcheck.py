"""A bundle's self-check: scores on signals anyone can regenerate, recorded when the bundle is built.

The manifest's hashes prove the files are the ones the manifest names; they say nothing
about whether this runtime still computes what the builder computed (a changed front
end, resampler, window rule or onnxruntime) or whether a re-signed manifest still holds
the model that was shipped. ``selfcheck.json``, written next to the manifest by the
bundle build scripts, records the sha256 of every file the manifest lists and the raw
model scores (log P(bona fide), before calibration) of a few signals this module
synthesises from a seed. ``tests/test_shipped_bundles.py`` regenerates the signals and
compares the scores, so a replaced model or a runtime change that moves scores fails
the suite. The file is not listed in the manifest: calibrating a bundle (which rewrites
the manifest) leaves it valid, and the runtime never reads it.

Regenerate after replacing a bundle::

    python -m edge_detector.selfcheck write edge_detector/models/default edge_detector/models/default-int8

Check: ``python -m edge_detector.selfcheck check BUNDLE...`` (exit 1 on a mismatch).
Numpy + onnxruntime only.
"""
from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

SELFCHECK_NAME = "selfcheck.json"
FORMAT = "edge-detector-selfcheck"
SAMPLE_RATE = 16000
#: The signals (16 kHz): formant-synthesised vowels (speech-like, synthetic), a gliding
#: harmonic tone with a syllable-rate envelope, seeded noise, and a long vowel sequence
#: scored window by window ("all") so the hop and the window rule are covered.
SIGNALS: tuple[dict[str, Any], ...] = (
    {"name": "vowels-3s", "kind": "vowels", "seconds": 3.0, "seed": 1, "windows": "first"},
    {"name": "harmonic-2.5s", "kind": "harmonic", "seconds": 2.5, "seed": 2, "windows": "first"},
    {"name": "noise-2s", "kind": "noise", "seconds": 2.0, "seed": 3, "windows": "first"},
    {"name": "vowels-9s-all", "kind": "vowels", "seconds": 9.0, "seed": 4, "windows": "all"},
)
#: |recorded - computed| <= atol + rtol * |recorded|, per variant. fp32: float rounding
#: differences between CPUs / library builds; int8: integer kernels differ by instruction
#: set (VNNI or not), one quantisation step can move a score by a few hundredths.
TOLERANCE = {"fp32": (1e-3, 1e-3), "int8": (0.05, 0.02)}
REGENERATE = "python -m edge_detector.selfcheck write BUNDLE"

PathLike = Union[str, Path]


def make_signal(recipe: dict[str, Any]) -> np.ndarray:
    """The float32 16 kHz signal a recipe names (deterministic for a given numpy). Raises ValueError."""
    n = int(round(float(recipe["seconds"]) * SAMPLE_RATE))
    seed = int(recipe["seed"])
    kind = recipe["kind"]
    if kind == "vowels":
        from .demo_audio import synthesize_vowels

        return synthesize_vowels(seconds=float(recipe["seconds"]), sr=SAMPLE_RATE, seed=seed)
    t = np.arange(n) / SAMPLE_RATE
    if kind == "harmonic":
        f0 = 110.0 + 10.0 * seed
        phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.15 * np.sin(2 * np.pi * 0.5 * t))) / SAMPLE_RATE
        x = sum(np.sin(k * phase) / k for k in range(1, 30) if k * f0 * 1.15 < SAMPLE_RATE / 2)
        x = x * (0.5 * (1 + np.sin(2 * np.pi * 4.0 * t))) ** 2
    elif kind == "noise":
        x = np.random.default_rng(seed).standard_normal(n)
    else:
        raise ValueError(f"unknown self-check signal kind {kind!r}")
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)


def variant_tolerance(manifest: dict[str, Any]) -> tuple[float, float]:
    """(atol, rtol) for the bundle's variant: int8 tolerances for any int8 variant, else fp32."""
    variant = str(manifest.get("model", {}).get("variant", "fp32"))
    return TOLERANCE["int8"] if variant.startswith("int8") else TOLERANCE["fp32"]


def compute_scores(bundle_path: PathLike, recipes: Sequence[dict[str, Any]] = SIGNALS) -> list[list[float]]:
    """Raw window scores of every recipe's signal with the bundle, as the device computes them.

    Windows come from the bundle's own window rule (mode overridden by the recipe); the
    scores are the model's (no speech check, no calibration). Raises BundleError.
    """
    from .detector import Detector
    from .session import SessionSettings
    from .windows import make_windows

    det = Detector(bundle_path, SessionSettings(intra_op_threads=1))
    out = []
    for recipe in recipes:
        batch, _ = make_windows(make_signal(recipe), det.window_rule(recipe["windows"]))
        out.append([float(v) for v in det.score_windows(batch)])
    return out


def file_hashes(bundle_path: PathLike) -> dict[str, str]:
    """sha256 of every file the bundle's manifest lists (the bundle is verified on the way)."""
    from .bundle import load_bundle, verify_files

    return verify_files(load_bundle(bundle_path, verify=False))


def write(bundle_path: PathLike) -> Path:
    """Compute and write ``selfcheck.json`` into the bundle folder; return its path."""
    import onnxruntime

    from . import __version__
    from .bundle import load_bundle

    bundle = load_bundle(bundle_path)
    atol, rtol = variant_tolerance(bundle.manifest)
    doc = {
        "format": FORMAT,
        "version": 1,
        "model_id": bundle.model_id,
        "files": file_hashes(bundle.path),
        "tolerance": {"atol": atol, "rtol": rtol},
        "signals": [dict(recipe, scores=scores) for recipe, scores in zip(SIGNALS, compute_scores(bundle.path))],
        "computed_with": {"edge_detector": __version__, "onnxruntime": onnxruntime.__version__,
                          "numpy": np.__version__, "machine": platform.machine()},
        "regenerate": REGENERATE,
    }
    out = bundle.path / SELFCHECK_NAME
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out)
    return out


def check(bundle_path: PathLike) -> list[str]:
    """Problems found comparing the bundle with its ``selfcheck.json`` (empty list: all agree)."""
    path = Path(bundle_path) / SELFCHECK_NAME
    if not path.is_file():
        return [f"{path}: missing; run `{REGENERATE}`"]
    doc = json.loads(path.read_text(encoding="utf-8"))
    problems = []
    hashes = file_hashes(bundle_path)
    if hashes != doc["files"]:
        return [f"{path}: recorded for files {doc['files']}, the bundle now holds {hashes}; "
                f"after replacing a bundle run `{REGENERATE}`"]
    atol, rtol = doc["tolerance"]["atol"], doc["tolerance"]["rtol"]
    recipes = [{k: v for k, v in s.items() if k != "scores"} for s in doc["signals"]]
    for recorded, got in zip(doc["signals"], compute_scores(bundle_path, recipes)):
        want = np.asarray(recorded["scores"], dtype=np.float64)
        have = np.asarray(got, dtype=np.float64)
        if want.shape != have.shape or np.any(np.abs(have - want) > atol + rtol * np.abs(want)):
            problems.append(f"{recorded['name']}: scores {np.round(have, 5).tolist()} differ from the recorded "
                            f"{np.round(want, 5).tolist()} (atol {atol}, rtol {rtol})")
    return problems


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``write BUNDLE...`` or ``check BUNDLE...``; exit 0 when every bundle is done / agrees."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] not in ("write", "check"):
        print("usage: python -m edge_detector.selfcheck write|check BUNDLE...", file=sys.stderr)
        return 2
    from .errors import EdgeDetectorError

    status = 0
    for bundle in args[1:]:
        try:
            if args[0] == "write":
                print(f"wrote {write(bundle)}", file=sys.stderr)
                continue
            problems = check(bundle)
        except EdgeDetectorError as exc:
            print(f"{bundle}: {exc}", file=sys.stderr)
            status = int(exc.exit_code)
            continue
        for p in problems:
            print(f"{bundle}: {p}", file=sys.stderr)
        print(f"{bundle}: {'FAILED' if problems else 'ok'}", file=sys.stderr)
        status = status or (1 if problems else 0)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
