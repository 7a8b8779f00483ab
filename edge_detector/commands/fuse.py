"""`edge-detect fuse`: several bundles → one fusion bundle (weighted sum of their calibrated scores; no torch)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Optional, Sequence

import click

from ..errors import EdgeDetectorError, ExitCode
from ._common import exit_with, fail, log


def member_folder(index: int, family: str) -> str:
    """``m{index}-{family in lower case, runs of other characters as '-'}``, e.g. ``m1-rawnet2``."""
    return f"m{index}-" + (re.sub(r"[^a-z0-9]+", "-", family.lower()).strip("-") or "model")


def build_fusion_bundle(member_paths: Sequence[str], out_dir: str, weights: Optional[Sequence[float]] = None) -> Path:
    """Copy each member bundle (its listed files and manifest) into a sub-folder, write ``fusion.json`` and a
    sealed manifest, verify the whole, then rename it into place at ``out_dir``.

    ``out_dir`` must not exist (nothing of the user's is ever replaced). Raises BundleError
    (a member fails its own verification, is a fusion, or has another sample rate or window
    length), OutputRefusedError (exit 2) for an output that may not be written.
    """
    from ..bundle import copy_bundle_files, load_bundle, write_manifest
    from ..fusion import FUSION_FILE, check_member, fusion_file, fusion_manifest
    from ..output_dir import check_output_dir, publish_dir, staging_dir

    members = [load_bundle(p) for p in member_paths]
    check_output_dir(out_dir, overwrite=False, inputs=[m.path for m in members], can_overwrite=False)
    folders = [member_folder(i + 1, m.manifest["model"]["family"]) for i, m in enumerate(members)]
    manifest = fusion_manifest(members, folders, weights)
    for path, m in zip(member_paths, members):
        check_member(m.manifest, manifest, where=str(path))
    stage = staging_dir(out_dir, prefix=".fuse-")
    try:
        for m, folder in zip(members, folders):
            copy_bundle_files(m, stage / folder)
        (stage / FUSION_FILE).write_text(json.dumps(fusion_file(members, folders), indent=2) + "\n", encoding="utf-8")
        write_manifest(stage, manifest)
        load_bundle(stage)  # the whole fusion, members included, verifies before it appears
        publish_dir(stage, out_dir)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return Path(out_dir)


def _parse_weights(text: Optional[str], count: int) -> Optional[list[float]]:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of numbers", param_hint="--weights") from None
    if len(values) != count:
        raise click.BadParameter(f"{len(values)} weight(s) for {count} member bundles", param_hint="--weights")
    from ..fusion import check_weights

    try:
        return check_weights(values)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r}: {exc}", param_hint="--weights") from None


@click.command("fuse")
@click.argument("members", nargs=-1, required=True)
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(),
              help="Fusion bundle folder to create (must not exist; it appears only when complete).")
@click.option("--weights", default=None, metavar="W1,W2,...",
              help="Initial weight of each member's calibrated score (default: 1/k each, the mean). "
                   "`edge-detect calibrate` fits them on labelled audio.")
def fuse_command(members: tuple[str, ...], out_dir: str, weights: Optional[str]) -> None:
    """Combine two or more MEMBER bundles into one fusion bundle at OUT.

    The fusion decides on ``sum_i w_i * llr_i + b`` per window, ``llr_i`` being member
    i's own calibrated score; each member is copied whole into a sub-folder and keeps
    its manifest, checksums and seal, pinned by sha256 in the fusion. Every member must
    take the same sample rate and window length. Then run ``edge-detect calibrate OUT``
    on labelled audio to fit the weights, the bias and the thresholds; `score`, `gate`,
    `listen`, `serve`, `info` and `bench` take the fusion like any bundle.
    """
    if len(members) < 2:
        raise click.UsageError("a fusion needs at least two member bundles")
    w = _parse_weights(weights, len(members))
    try:
        out = build_fusion_bundle(members, out_dir, w)
    except EdgeDetectorError as exc:
        fail(exc)
    log(f"wrote fusion bundle {out} of {len(members)} members; fit its weights with `edge-detect calibrate {out} "
        "--protocol P --audio-dir D`")
    exit_with(ExitCode.ACCEPT)
