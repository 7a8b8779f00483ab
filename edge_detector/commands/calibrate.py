"""`edge-detect calibrate`: fit score calibration and thresholds on labelled audio (no torch)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Optional

import click
import numpy as np

from ..errors import DataError, EdgeDetectorError
from ._common import exit_with, fail, log


@click.command("calibrate")
@click.argument("bundle")
@click.option("--protocol", "protocol_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--audio-dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--target-far", type=click.FloatRange(0.0, 1.0), default=0.01, show_default=True,
              help="Accept threshold keeps the false-accept rate on this data at most this (0 to 1).")
@click.option("--target-frr", type=click.FloatRange(0.0, 1.0), default=0.05, show_default=True,
              help="Reject threshold keeps the false-reject rate on this data at most this (0 to 1).")
@click.option("-o", "--out", "out_dir", default=None,
              help="Write a calibrated copy here instead of in place (a new folder; it appears only when complete).")
@click.option("--threads", type=int, default=0, help="onnxruntime threads (0 = all cores).")
def calibrate_command(bundle: str, protocol_path: str, audio_dir: str, target_far: float, target_frr: float,
                      out_dir: Optional[str], threads: int) -> None:
    """Score the protocol's files with BUNDLE, fit llr = a*score + b, choose thresholds, re-sign the manifest.

    Files that cannot be decoded are reported and left out; the manifest records how many
    files of each class the calibration used and the EER measured on them. A fit whose
    slope is not positive (the scores rank spoofs above bona fide: labels swapped?) is
    refused (exit 5) and nothing is written. With -o the copy is built in a hidden
    sibling folder and renamed into place at the end, so an interrupted run leaves no
    output; in place, the manifest is replaced atomically.
    """
    try:
        _run(bundle, protocol_path, audio_dir, target_far, target_frr, out_dir, threads)
    except EdgeDetectorError as exc:
        fail(exc)


def _run(bundle, protocol_path, audio_dir, target_far, target_frr, out_dir, threads):
    from ..bundle import load_bundle
    from ..output_dir import check_output_dir

    src = load_bundle(bundle)
    if out_dir:
        check_output_dir(out_dir, overwrite=False, inputs=[src.path], can_overwrite=False)
    updates, summary, th, y = _fit(src, protocol_path, audio_dir, target_far, target_frr, threads)
    m = dict(src.manifest)
    m.update(updates)
    m["thresholds"] = {"accept": th["accept"], "reject": th["reject"], "on": "calibrated",
                       "rule": "accept if calibrated >= accept; reject if calibrated < reject; else uncertain",
                       "target_far": target_far, "target_frr": target_frr,
                       "far_at_accept": th["far_at_accept"], "frr_at_reject": th["frr_at_reject"]}
    m["evaluation"] = {"set": Path(protocol_path).name, "files": int(len(y)), "eer": th["eer"],
                       "eer_threshold_calibrated": th["eer_threshold"], "windows": "first"}
    # The model file is left byte-identical (its sha256 identifies the weights in every
    # record); its metadata_props keep the export-time calibration, the manifest rules.
    written = _write_copy(src, m, out_dir) if out_dir else _write_in_place(src, m)
    log(json.dumps({"bundle": str(written), "eer": th["eer"], "accept": th["accept"], "reject": th["reject"],
                    **summary}))
    exit_with(0)


def _write_in_place(src, manifest) -> Path:
    from ..bundle import write_manifest

    write_manifest(src.path, manifest)  # hashes, validates, then replaces manifest.json atomically
    return src.path


def _write_copy(src, manifest, out_dir: str, extra: Optional[dict[str, bytes]] = None,
                prefix: str = ".calibrate-") -> Path:
    """The source's listed files (plus ``extra`` files: name → bytes) and the new manifest, staged next
    to OUT and renamed into place. `adapt` writes its bundles with it too."""
    from ..bundle import copy_bundle_files, load_bundle, write_manifest
    from ..output_dir import publish_dir, staging_dir

    stage = staging_dir(out_dir, prefix=prefix)
    try:
        copy_bundle_files(src, stage, with_manifest=False)  # the listed files, and a fusion's member bundles
        for name, data in (extra or {}).items():
            (stage / name).write_bytes(data)
        write_manifest(stage, manifest)
        load_bundle(stage)
        publish_dir(stage, out_dir)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return Path(out_dir)


def fit_single(manifest, features: np.ndarray, labels: np.ndarray, fitted_on: dict):
    """The calibration of a single model: ``llr = a * score + b`` by prior-weighted logistic regression on
    its one raw score (``features[:, 0]``). Returns (manifest sections, llr [n], summary); raises
    CalibrationError (exit 5) for a slope that is not positive."""
    from ..calibration import check_calibration, fit_logistic_calibration

    s, y = features[:, 0], labels
    cal = check_calibration(fit_logistic_calibration(s[y == 1], s[y == 0]))
    calibration = {"method": "logistic-regression (prior 0.5)", "scale": cal.scale, "offset": cal.offset,
                   "fitted_on": fitted_on, "description": "llr = scale * log P(bona fide) + offset"}
    return {"calibration": calibration}, cal.apply(s), {"scale": cal.scale, "offset": cal.offset}


def _fit(src, protocol_path, audio_dir, target_far, target_frr, threads):
    """Score the protocol's files; return (manifest sections to replace, log summary, thresholds dict, labels).

    The family's ``fit_calibration`` fits them (a fusion: its members' weights), else :func:`fit_single`.
    """
    from ..calibration import choose_thresholds
    from ..detector import Detector
    from ..protocol import read_protocol, resolve_audio
    from ..session import SessionSettings

    det = Detector(src, SessionSettings(intra_op_threads=threads), require_speech=False)  # calibrates the model itself
    entries = read_protocol(protocol_path)
    paths = resolve_audio(entries, audio_dir)
    features, labels = [], []
    with click.progressbar(entries, label="scoring", file=sys.stderr) as bar:
        for e in bar:
            try:
                features.append(det.features_file(paths[e.file_id], windows="first"))
            except EdgeDetectorError as exc:
                log(f"skipping {e.file_id}: {exc}")
                continue
            labels.append(e.target)
    x, y = np.asarray(features), np.asarray(labels)
    if (y == 1).sum() == 0 or (y == 0).sum() == 0:
        raise DataError("calibration needs scorable files of both classes (bona fide and spoof)")
    fitted_on = {"protocol": Path(protocol_path).name, "bonafide": int((y == 1).sum()), "spoof": int((y == 0).sum())}
    fit = src.family.fit_calibration or fit_single
    updates, llr, summary = fit(src.manifest, x, y, fitted_on)
    th = choose_thresholds(llr[y == 1], llr[y == 0], target_far=target_far, target_frr=target_frr)
    return updates, summary, th, y
