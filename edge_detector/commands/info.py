"""`edge-detect info`: what a bundle's manifest says, and whether its files verify."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

from ..bundle import MANIFEST_NAME, load_bundle, verify_files
from ..errors import BundleError, ExitCode
from ._common import exit_with, log


@click.command("info")
@click.argument("bundle", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest and the verification result as JSON.")
def info_command(bundle: Optional[str], as_json: bool) -> None:
    """Describe BUNDLE (default: the shipped one) and verify every file's sha256. Exit 7 if it fails."""
    from ..defaults import resolve_bundle_path

    try:
        path = resolve_bundle_path(bundle)
        b = load_bundle(path, verify=False)
    except BundleError as exc:
        log(f"edge-detect info: {exc}")
        exit_with(exc.exit_code)
    verified, problem = True, None
    try:
        verify_files(b)
        _check_loads(b)
    except BundleError as exc:
        verified, problem = False, str(exc)
    m = b.manifest
    if as_json:
        click.echo(json.dumps({"bundle": str(b.path), "verified": verified, "problem": problem, "manifest": m}, indent=2))
    else:
        size = sum(e["bytes"] for e in m["files"].values())
        lines = [
            f"bundle      {b.path}",
            f"model       {m['model_id']} ({m['model']['family']}, {m['model']['variant']}, {m['model']['parameters']:,} parameters)",
            f"sizes       {b.family.summary(m)}",
            f"files       " + ", ".join(f"{n} ({e['bytes'] / 1e6:.2f} MB)" for n, e in m["files"].items()) + f"; total {size / 1e6:.2f} MB",
            f"audio       {m['audio']['sample_rate']} Hz mono, {m['audio']['min_seconds']}-{m['audio']['max_seconds']} s",
            f"windows     {m['windows']['window']} samples, hop {m['windows']['hop']}, mode {m['windows']['mode']}, "
            f"combine {m['windows']['combine']}, pad {m['windows']['pad']}",
            f"score       {m['score']['kind']} ({m['score']['orientation']})",
            f"calibration {m['calibration']['method']}: {m['calibration']['scale']:.4g} * score + {m['calibration']['offset']:.4g}",
            f"thresholds  accept >= {m['thresholds']['accept']:.4g}, reject < {m['thresholds']['reject']:.4g} (on {m['thresholds']['on']})",
            f"quantized   {json.dumps(m.get('quantization'))}",
            _parity_line(m.get("parity")),
            f"evaluation  {json.dumps(m.get('evaluation'))}",
            f"source      {json.dumps(m['source_checkpoint'])}",
            f"sha256      {'verified' if verified else 'FAILED: ' + str(problem)}",
        ]
        click.echo("\n".join(lines))
    exit_with(ExitCode.ACCEPT if verified else ExitCode.BAD_BUNDLE)


def _parity_line(parity: Optional[dict]) -> str:
    """Export parity against the training-side model, when the family records one."""
    if not isinstance(parity, dict) or "tolerance" not in parity:
        return f"parity      {json.dumps(parity)}"
    worst = max(v for v in (parity.get("max_abs_diff_random"), parity.get("max_abs_diff_audio"), 0.0) if v is not None)
    return f"parity      max |Δscore| {worst:.3g} (tolerance {parity['tolerance']:g})"


def _check_loads(bundle) -> None:
    """The model loads and its inputs/outputs fit the manifest (what the Detector checks). Raises BundleError."""
    from ..session import SessionSettings

    bundle.family.make_scorer(bundle, SessionSettings(intra_op_threads=1), 1)
