"""The bundle (edge_detector/bundle.py): loading verifies hashes and schema, each failure its own message.

Every bundle here is a copy of the tiny bundle exported by the project's own path.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import set_thresholds
from edge_detector.bundle import FORMAT_VERSION, Bundle, load_bundle, write_manifest
from edge_detector.cli import main
from edge_detector.detector import Detector
from edge_detector.errors import BundleError, ExitCode


def read_manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def put_manifest(bundle: Path, m: dict) -> None:
    """Write the manifest as is (no re-hashing, no validation): what a hand edit would do."""
    (bundle / "manifest.json").write_text(json.dumps(m))


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def test_good_bundle_loads_and_describes_itself(tiny_bundle):
    b = load_bundle(tiny_bundle)
    assert isinstance(b, Bundle)
    assert b.model_path == tiny_bundle / "model.onnx"
    assert b.sample_rate == 16000 and b.min_seconds == 0.5 and b.max_seconds == 600.0
    assert b.window_rule.window == 64600 and b.window_rule.mode == "first"
    assert len(b.model_sha256) == 64
    assert b.manifest["format_version"] == FORMAT_VERSION
    # the manifest file itself can be named too
    assert load_bundle(tiny_bundle / "manifest.json").path == tiny_bundle
    # uncalibrated map: calibrated = log P(bona fide) - log 0.5
    assert b.calibrate(-0.6931471805599453) == pytest.approx(0.0)


def test_one_changed_byte_in_the_model_is_refused(tiny_bundle):
    flip_byte(tiny_bundle / "model.onnx")
    with pytest.raises(BundleError, match="sha256") as info:
        load_bundle(tiny_bundle)
    assert "model.onnx" in str(info.value)
    # skipping verification is possible on purpose (what `info` does before reporting)
    load_bundle(tiny_bundle, verify=False)
    with pytest.raises(BundleError, match="sha256"):
        Detector(tiny_bundle)


def test_truncated_model_is_refused_with_a_size_message(tiny_bundle):
    model = tiny_bundle / "model.onnx"
    model.write_bytes(model.read_bytes()[:-100])
    with pytest.raises(BundleError, match=r"size \d+ bytes differs .* \d+ \(truncated or replaced\)"):
        load_bundle(tiny_bundle)


def test_missing_model_file(tiny_bundle):
    (tiny_bundle / "model.onnx").unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(tiny_bundle)


def test_newer_format_version_is_refused(tiny_bundle):
    m = read_manifest(tiny_bundle)
    m["format_version"] = FORMAT_VERSION + 1
    put_manifest(tiny_bundle, m)
    with pytest.raises(BundleError, match=f"format version {FORMAT_VERSION + 1} is newer"):
        load_bundle(tiny_bundle)


@pytest.mark.parametrize("field", ["model_id", "calibration.scale", "thresholds.accept", "windows.hop", "onnx.file",
                                   "audio.sample_rate", "parity.tolerance", "files"])
def test_missing_field_is_named(tiny_bundle, field):
    m = read_manifest(tiny_bundle)
    *parents, leaf = field.split(".")
    d = m
    for p in parents:
        d = d[p]
    del d[leaf]
    put_manifest(tiny_bundle, m)
    with pytest.raises(BundleError, match=f"missing field '{field}'"):
        load_bundle(tiny_bundle)


@pytest.mark.parametrize("field,value", [
    ("windows.window", "64600"),
    ("thresholds.accept", "high"),
    ("audio.sample_rate", 16000.0),
    ("model.parameters", True),
    ("calibration.offset", None),
    ("model.config", [1, 2]),
])
def test_wrong_typed_field_is_named(tiny_bundle, field, value):
    m = read_manifest(tiny_bundle)
    *parents, leaf = field.split(".")
    d = m
    for p in parents:
        d = d[p]
    d[leaf] = value
    put_manifest(tiny_bundle, m)
    with pytest.raises(BundleError, match=f"field '{field}' must be"):
        load_bundle(tiny_bundle)


def test_non_json_manifest(tiny_bundle):
    (tiny_bundle / "manifest.json").write_text('{"format": "edge-detector-bundle", ')
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(tiny_bundle)


def test_manifest_that_is_not_an_object(tiny_bundle):
    (tiny_bundle / "manifest.json").write_text("[1, 2, 3]")
    with pytest.raises(BundleError, match="not a JSON object"):
        load_bundle(tiny_bundle)


def test_missing_manifest(tiny_bundle):
    (tiny_bundle / "manifest.json").unlink()
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(tiny_bundle)


def test_missing_bundle_folder(tmp_path):
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nowhere")


def test_reject_above_accept_is_refused(tiny_bundle):
    m = read_manifest(tiny_bundle)
    m["thresholds"]["accept"], m["thresholds"]["reject"] = -1.0, 1.0
    put_manifest(tiny_bundle, m)
    with pytest.raises(BundleError, match="reject must not exceed"):
        load_bundle(tiny_bundle)
    with pytest.raises(BundleError):  # write_manifest validates too: it cannot sign such a manifest
        write_manifest(tiny_bundle, m)


def test_wrong_version_type_and_foreign_format(tiny_bundle):
    m = read_manifest(tiny_bundle)
    put_manifest(tiny_bundle, {**m, "format_version": "1"})
    with pytest.raises(BundleError, match="format_version"):
        load_bundle(tiny_bundle)
    put_manifest(tiny_bundle, {**m, "format": "something-else"})
    with pytest.raises(BundleError, match="not an edge-detector bundle"):
        load_bundle(tiny_bundle)


def test_resigned_bundle_verifies_again(tiny_bundle):
    set_thresholds(tiny_bundle, accept=1.0, reject=-1.0)
    b = load_bundle(tiny_bundle)
    assert (b.accept_threshold, b.reject_threshold) == (1.0, -1.0)


def test_model_that_onnxruntime_cannot_load(tiny_bundle):
    """Garbage bytes signed into the manifest: hashes verify, the session refuses, still a BundleError."""
    (tiny_bundle / "model.onnx").write_bytes(b"\x08\x01garbage, not a protobuf")
    write_manifest(tiny_bundle, read_manifest(tiny_bundle))
    load_bundle(tiny_bundle)
    with pytest.raises(BundleError, match="onnxruntime cannot load"):
        Detector(tiny_bundle)


def test_info_verifies(tiny_bundle):
    runner = CliRunner()
    good = runner.invoke(main, ["info", str(tiny_bundle), "--json"])
    assert good.exit_code == 0, good.output
    report = json.loads(good.stdout)
    assert report["verified"] is True and report["problem"] is None
    assert report["manifest"]["model_id"] == load_bundle(tiny_bundle).model_id

    flip_byte(tiny_bundle / "model.onnx", offset=200)
    bad = runner.invoke(main, ["info", str(tiny_bundle), "--json"])
    assert bad.exit_code == int(ExitCode.BAD_BUNDLE) == 7
    report = json.loads(bad.stdout)
    assert report["verified"] is False and "sha256" in report["problem"]
