"""The family / front-end registry (edge_detector/families.py): the manifest chooses the scorer."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edge_detector.bundle import load_bundle
from edge_detector.cli import main
from edge_detector.detector import Detector, WindowScorer
from edge_detector.errors import BundleError, ExitCode
from edge_detector.families import family_names, get_family, get_frontend


def _edit_manifest(bundle, edit) -> None:
    path = bundle / "manifest.json"
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m))


def test_rawnet2_is_registered_and_builds_an_onnx_scorer(tiny_bundle):
    assert "RawNet2" in family_names()
    det = Detector(tiny_bundle)
    assert isinstance(det.scorer, WindowScorer)
    assert det.bundle.family is get_family("RawNet2")
    assert det.providers[0] == "CPUExecutionProvider" and det.session is det.scorer.session


def test_unknown_family_is_refused_naming_the_known_ones(tiny_bundle):
    _edit_manifest(tiny_bundle, lambda m: m["model"].__setitem__("family", "NoSuchNet"))
    with pytest.raises(BundleError, match=r"unknown model family 'NoSuchNet'; this runtime knows \[.*'RawNet2'"):
        load_bundle(tiny_bundle, verify=False)
    res = CliRunner().invoke(main, ["info", str(tiny_bundle)])
    assert res.exit_code == ExitCode.BAD_BUNDLE


def test_unknown_front_end_type_is_refused(tiny_bundle):
    _edit_manifest(tiny_bundle, lambda m: m.__setitem__("frontend", {"type": "mel-numpy"}))
    with pytest.raises(BundleError, match="unknown front-end type 'mel-numpy'"):
        load_bundle(tiny_bundle, verify=False)
    with pytest.raises(BundleError, match="unknown front-end type"):
        get_frontend("mel-numpy")
