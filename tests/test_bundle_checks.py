"""Every check the bundle loader makes, each made to fire by one hand edit of a real bundle.

Each test edits the manifest (or a listed file) of a copy of the tiny exported bundle the
way a careless hand or a broken tool would, and expects a BundleError naming the cause;
through the CLI that is exit 7, never a decision.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from audio_synth import speechlike, write
from conftest import set_thresholds
from edge_detector.bundle import load_bundle, write_manifest
from edge_detector.cli import main
from edge_detector.errors import BundleError, ExitCode


def edit(bundle: Path, change) -> None:
    """Apply ``change(manifest)`` and write the manifest back as is (no re-hashing, no validation)."""
    m = json.loads((bundle / "manifest.json").read_text())
    change(m)
    (bundle / "manifest.json").write_text(json.dumps(m))  # json writes NaN / Infinity for non-finite floats


def setter(dotted: str, value):
    def change(m):
        *parents, leaf = dotted.split(".")
        d = m
        for p in parents:
            d = d[p]
        d[leaf] = value
    return change


@pytest.mark.parametrize("field", ["calibration.scale", "calibration.offset", "thresholds.accept",
                                   "audio.max_seconds", "parity.tolerance"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(tiny_bundle, field, value):
    edit(tiny_bundle, setter(field, value))
    with pytest.raises(BundleError, match=f"'{field}' must be finite"):
        load_bundle(tiny_bundle)


def test_other_score_orientation_is_refused(tiny_bundle):
    edit(tiny_bundle, setter("score.orientation", "lower_is_bonafide"))
    with pytest.raises(BundleError, match="unsupported score orientation 'lower_is_bonafide'"):
        load_bundle(tiny_bundle)


def test_other_pad_rule_is_refused(tiny_bundle):
    edit(tiny_bundle, setter("windows.pad", "zeros"))
    with pytest.raises(BundleError, match="unsupported pad rule 'zeros'"):
        load_bundle(tiny_bundle)


@pytest.mark.parametrize("version", [0, -1])
def test_format_version_below_one_is_refused(tiny_bundle, version):
    edit(tiny_bundle, setter("format_version", version))
    with pytest.raises(BundleError, match=f"invalid format version {version}"):
        load_bundle(tiny_bundle)


@pytest.mark.parametrize("name", ["../model.onnx", "sub/model.onnx", "/etc/hostname", "..", ".hidden",
                                  "sub\\model.onnx"])
def test_file_names_outside_the_bundle_are_refused(tiny_bundle, name):
    def change(m):
        m["files"][name] = dict(m["files"]["model.onnx"])
    edit(tiny_bundle, change)
    with pytest.raises(BundleError, match="must be a plain name inside the bundle"):
        load_bundle(tiny_bundle, verify=False)  # refused by the schema, before any file is opened


@pytest.fixture()
def two_files(tiny_bundle) -> Path:
    """The tiny bundle with a second listed file (like an int8 bundle's sensitivity.json)."""
    (tiny_bundle / "notes.json").write_text(json.dumps({"note": "listed and hashed"}))
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    m["files"]["notes.json"] = {}
    write_manifest(tiny_bundle, m)
    assert set(load_bundle(tiny_bundle).manifest["files"]) == {"model.onnx", "notes.json"}
    return tiny_bundle


def test_every_listed_file_is_verified_not_only_the_model(two_files):
    path = two_files / "notes.json"
    path.write_text(path.read_text().replace("listed", "LISTED"))  # same size, other bytes
    with pytest.raises(BundleError, match="notes.json: sha256 does not match"):
        load_bundle(two_files)
    path.write_text("{}")
    with pytest.raises(BundleError, match=r"notes.json: size \d+ bytes differs"):
        load_bundle(two_files)
    path.unlink()
    with pytest.raises(BundleError, match="file notes.json listed in the manifest is missing"):
        load_bundle(two_files)


def test_a_changed_second_file_stops_the_gate(two_files, tmp_path):
    set_thresholds(two_files, accept=-1e6, reject=-1e6)  # would accept anything
    wav = write(tmp_path / "v.wav", speechlike(2.0, seed=70))
    assert CliRunner().invoke(main, ["gate", str(wav), "--bundle", str(two_files)]).exit_code == 0  # control
    (two_files / "notes.json").write_text('{"note": "listed and hashes"}')
    r = CliRunner().invoke(main, ["gate", str(wav), "--bundle", str(two_files)])
    assert r.exit_code == int(ExitCode.BAD_BUNDLE)
