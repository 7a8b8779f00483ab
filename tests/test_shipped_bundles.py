"""The bundles shipped in edge_detector/models/: intact, and scoring as they did when they were built.

``selfcheck.json`` (written by ``python -m edge_detector.selfcheck write BUNDLE`` from
the bundle build scripts) records the sha256 of every listed file and the raw scores of
signals synthesised from seeds. Replacing a shipped model, even with a re-signed
manifest, or changing how the runtime computes scores fails here. After replacing a
default bundle, regenerate its record:

    python -m edge_detector.selfcheck write edge_detector/models/default edge_detector/models/default-int8
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from edge_detector import selfcheck
from edge_detector.bundle import load_bundle, write_manifest

SHIPPED = REPO / "edge_detector" / "models"
NAMES = ["default", "default-int8"]
HOW = "regenerate with: python -m edge_detector.selfcheck write edge_detector/models/default " \
      "edge_detector/models/default-int8"


@pytest.mark.parametrize("name", NAMES)
def test_shipped_bundle_files_match_manifest_and_record(name):
    path = SHIPPED / name
    bundle = load_bundle(path)  # verifies size and sha256 of every listed file
    doc = json.loads((path / selfcheck.SELFCHECK_NAME).read_text())
    assert set(doc["files"]) == set(bundle.manifest["files"]), HOW
    for fname, entry in bundle.manifest["files"].items():
        digest = hashlib.sha256((path / fname).read_bytes()).hexdigest()  # hashed here, independently
        assert digest == entry["sha256"], fname
        assert digest == doc["files"][fname], f"{name}/{fname} changed since its self-check was recorded; {HOW}"
    assert doc["model_id"] == bundle.model_id, HOW


@pytest.mark.parametrize("name", NAMES)
def test_shipped_bundle_scores_as_recorded(name):
    path = SHIPPED / name
    doc = json.loads((path / selfcheck.SELFCHECK_NAME).read_text())
    recipes = [{k: v for k, v in s.items() if k != "scores"} for s in doc["signals"]]
    assert recipes == list(selfcheck.SIGNALS), HOW  # the record covers today's signal set
    assert selfcheck.check(path) == []
    assert all(np.isfinite(v) for s in doc["signals"] for v in s["scores"])
    assert len(doc["signals"][-1]["scores"]) == 4  # 9 s scored window by window: 4 windows of 64600


def test_selfcheck_notices_a_replaced_model(tmp_path):
    """The int8 model in the fp32 bundle's folder, manifest re-signed: hashes alone pass, the record does not."""
    fp32 = tmp_path / "default"
    shutil.copytree(SHIPPED / "default", fp32)
    shutil.copyfile(SHIPPED / "default-int8" / "model.onnx", fp32 / "model.onnx")
    write_manifest(fp32, json.loads((fp32 / "manifest.json").read_text()))
    load_bundle(fp32)  # a valid, signed bundle
    (problem,) = selfcheck.check(fp32)
    assert "recorded for files" in problem and "selfcheck write" in problem
    # the same with the record's hashes forged: now the scores give it away
    doc = json.loads((fp32 / selfcheck.SELFCHECK_NAME).read_text())
    doc["files"] = selfcheck.file_hashes(fp32)
    (fp32 / selfcheck.SELFCHECK_NAME).write_text(json.dumps(doc))
    problems = selfcheck.check(fp32)
    assert problems and all("differ from the recorded" in p for p in problems)


def test_signals_are_deterministic_and_distinct():
    a = [selfcheck.make_signal(r) for r in selfcheck.SIGNALS]
    b = [selfcheck.make_signal(r) for r in selfcheck.SIGNALS]
    for x, y, r in zip(a, b, selfcheck.SIGNALS):
        assert np.array_equal(x, y) and x.dtype == np.float32
        assert len(x) == round(r["seconds"] * 16000) and 0.2 < np.max(np.abs(x)) <= 0.5
    assert not np.allclose(a[0][:32000], a[-1][:32000])
    with pytest.raises(ValueError, match="unknown self-check signal kind"):
        selfcheck.make_signal({"kind": "whistle", "seconds": 1.0, "seed": 0})


def test_write_then_check_round_trip(tiny_bundle):
    out = selfcheck.write(tiny_bundle)
    assert out == Path(tiny_bundle) / "selfcheck.json"
    assert selfcheck.check(tiny_bundle) == []
    assert selfcheck.main(["check", str(tiny_bundle)]) == 0
    doc = json.loads(out.read_text())
    doc["signals"][0]["scores"][0] += 0.01  # ten times the fp32 tolerance
    out.write_text(json.dumps(doc))
    assert selfcheck.main(["check", str(tiny_bundle)]) == 1
