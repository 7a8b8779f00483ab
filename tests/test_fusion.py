"""Fusion bundles (edge_detector/fusion.py, `edge-detect fuse`): real member bundles the tests build themselves.

Members: the tiny RawNet2 of conftest (exported ONNX, a real onnxruntime session; it tells
speech-like from buzzy audio), an LFCC-GMM bundle whose two one-component GMMs are the LFCC
statistics of a few generated windows (numpy), and a "noise" stand-in: an ONNX graph made
here that scores ``sin(1000 * x . r)`` for a fixed random ``r``, a number that carries no
information about the label.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from audio_synth import buzzy, speechlike, write
from conftest import set_thresholds
from edge_detector.bundle import default_manifest, load_bundle, write_manifest
from edge_detector.calibration import fit_logistic_regression
from edge_detector.cli import main
from edge_detector.detector import Detector
from edge_detector.errors import BundleError, ExitCode
from edge_detector.gmm import DiagonalGMM
from edge_detector.lfcc import LFCCFrontEnd, LFCCSpec
from edge_detector.metrics import compute_eer
from edge_detector.windows import first_window

WINDOW = 64600


def lfcc_member(root: Path, sample_rate: int = 16000) -> Path:
    """An LFCC-GMM bundle: one Gaussian per class, the LFCC mean/variance of generated windows
    (``sample_rate``: the rate the bundle states; the statistics are those of 16 kHz audio)."""
    from export.lfcc_gmm import GMMConfig, write_bundle

    fe = LFCCFrontEnd(LFCCSpec())

    def gaussian(signals):
        f = np.concatenate([fe(first_window(x, WINDOW)) for x in signals])
        return DiagonalGMM(np.ones(1), f.mean(axis=0)[None, :], 25.0 * f.var(axis=0)[None, :] + 1.0)  # broad: LLR ~ 1

    gmms = {"bonafide": gaussian([speechlike(4.2, seed=s, f0=100 + 20 * s) for s in range(3)]),
            "spoof": gaussian([buzzy(4.2, seed=s) for s in range(3)])}
    return write_bundle(root / f"lfcc-{sample_rate}", LFCCSpec(sample_rate=sample_rate), gmms, GMMConfig(components=1),
                        model_id=f"lfcc-gmm-test-{sample_rate}")


def noise_member(root: Path) -> Path:
    """An ONNX bundle scoring sin(1000 * x . r): deterministic, but unrelated to the label."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    r = np.random.default_rng(5).normal(size=WINDOW).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["waveform", "r"], ["dot"]),
         helper.make_node("Mul", ["dot", "k"], ["scaled"]),
         helper.make_node("Sin", ["scaled"], ["score"])],
        "noise", [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["batch", WINDOW])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        initializer=[numpy_helper.from_array(r, "r"), numpy_helper.from_array(np.array(1000.0, np.float32), "k")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out = root / "noise"
    out.mkdir()
    onnx.save(model, str(out / "model.onnx"))
    m = default_manifest(model_id="noise-stand-in", model_config={"stand_in": "sin(1000 * x . r)"}, parameters=WINDOW,
                         variant="stand-in")
    write_manifest(out, m)
    return out


@pytest.fixture(scope="module")
def members(tiny_bundle_master, tmp_path_factory):
    root = tmp_path_factory.mktemp("members")
    return {"rawnet2": tiny_bundle_master, "lfcc": lfcc_member(root), "noise": noise_member(root)}


def fuse(paths, out: Path, *extra: str):
    return CliRunner().invoke(main, ["fuse", *map(str, paths), "-o", str(out), *extra])


@pytest.fixture()
def fused(members, tmp_path) -> Path:
    out = tmp_path / "fused"
    res = fuse([members["rawnet2"], members["lfcc"]], out, "--weights", "0.7,0.4")
    assert res.exit_code == 0, res.output
    return out


def test_fusion_score_is_the_weighted_sum_of_the_members_scored_alone(fused, members, tmp_path):
    audio = write(tmp_path / "long.wav", speechlike(9.0, seed=21, f0=140))
    res = CliRunner().invoke(main, ["score", "--bundle", str(fused), "--windows", "all", str(audio)])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout.splitlines()[0])
    want = np.zeros(len(rec["windows"]))
    for key, w in (("rawnet2", 0.7), ("lfcc", 0.4)):
        alone = Detector(members[key]).score_file(str(audio), windows="all")
        cal = load_bundle(members[key]).manifest["calibration"]
        want += w * (cal["scale"] * np.array([v["score"] for v in alone.windows]) + cal["offset"])
    assert len(want) >= 3  # several windows: each one fused on its own
    np.testing.assert_allclose([v["score"] for v in rec["windows"]], want, rtol=1e-5, atol=1e-5)
    assert rec["score"] == pytest.approx(float(np.mean(want)), rel=1e-5, abs=1e-5)
    assert np.ptp(want) > 1e-3  # the windows differ: a per-window mix-up would show
    assert rec["llr"] == pytest.approx(rec["score"], abs=1e-9)  # uncalibrated fusion: offset 0
    m = load_bundle(fused).manifest
    assert rec["model_id"] == m["model_id"] and m["model"]["family"] == "fusion"
    assert m["fusion"]["members"] == ["m1-rawnet2", "m2-lfcc-gmm"] and m["fusion"]["weights"] == [0.7, 0.4]
    assert rec["provider"] == "CPUExecutionProvider"
    info = CliRunner().invoke(main, ["info", str(fused)])
    assert info.exit_code == 0 and "0.7 * llr[m1-rawnet2] + 0.4 * llr[m2-lfcc-gmm]" in info.output


def test_the_fit_is_the_prior_weighted_logistic_optimum_and_ignores_a_noise_score():
    optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(3)
    y = np.r_[np.ones(300), np.zeros(900)]
    x = np.c_[np.where(y == 1, 1.0, -1.0) + rng.normal(0, 1.0, y.size), rng.normal(0, 2.0, y.size)]
    w, b = fit_logistic_regression(x, y, l2=0.0)
    pw = np.where(y == 1, 0.5 / 300, 0.5 / 900)

    def cost(t):  # prior-weighted cross-entropy, written independently
        z = x @ t[:2] + t[2]
        return float(np.sum(pw * np.where(y == 1, np.logaddexp(0, -z), np.logaddexp(0, z))))

    ref = optimize.minimize(cost, np.zeros(3), method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose(np.r_[w, b], ref, atol=1e-4)
    assert w[0] == pytest.approx(2.0, abs=0.3)  # the exact LLR slope of N(1,1) vs N(-1,1)
    assert abs(w[1]) * x[:, 1].std() < 0.1 * w[0] * x[:, 0].std()


def test_calibrate_gives_the_informative_member_the_larger_weight(members, tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    lines = []
    for k in range(10):
        write(audio / f"B{k}.wav", speechlike(3.0 + 0.2 * k, seed=300 + k, f0=95 + 12 * k))
        write(audio / f"S{k}.wav", buzzy(3.0 + 0.2 * k, seed=400 + k))
        lines += [f"spk B{k} - - bonafide", f"spk S{k} - buzz spoof"]
    protocol = tmp_path / "protocol.txt"
    protocol.write_text("\n".join(lines) + "\n")
    out = tmp_path / "fused"
    assert fuse([members["noise"], members["rawnet2"]], out).exit_code == 0
    cal = tmp_path / "calibrated"
    res = CliRunner().invoke(main, ["calibrate", str(out), "--protocol", str(protocol), "--audio-dir", str(audio),
                                    "-o", str(cal)])
    assert res.exit_code == 0, res.output
    m = load_bundle(cal).manifest
    w_noise, w_model = m["fusion"]["weights"]
    # each member's calibrated scores of the same files, computed alone
    feats = {}
    for key in ("noise", "rawnet2"):
        det, c = Detector(members[key], require_speech=False), load_bundle(members[key]).manifest["calibration"]
        feats[key] = np.array([c["scale"] * det.score_file(str(audio / f"{n}.wav")).score + c["offset"]
                               for n in [f"B{k}" for k in range(10)] + [f"S{k}" for k in range(10)]])
    assert w_model > 0 and w_model * feats["rawnet2"].std() > 10 * abs(w_noise) * feats["noise"].std()
    assert w_model > abs(w_noise)
    fused_llr = w_noise * feats["noise"] + w_model * feats["rawnet2"] + m["calibration"]["offset"]
    eer, _ = compute_eer(fused_llr[:10], fused_llr[10:])
    assert m["evaluation"]["eer"] == pytest.approx(eer) and eer == 0.0
    assert m["calibration"]["scale"] == 1.0 and m["calibration"]["fitted_on"]["bonafide"] == 10
    # the members inside the calibrated copy are the very bundles that were fused
    for folder in m["fusion"]["members"]:
        assert load_bundle(cal / folder).manifest == load_bundle(out / folder).manifest


def test_an_uncalibrated_fusion_is_as_strict_as_its_strictest_member(members, tmp_path):
    """Before `calibrate`, the gate must not accept what a member alone would not: sum(w) x the strictest thresholds."""
    a = Path(shutil.copytree(members["rawnet2"], tmp_path / "a"))
    b = Path(shutil.copytree(members["lfcc"], tmp_path / "b"))
    set_thresholds(a, 1.5, -0.5)
    set_thresholds(b, 0.8, 0.2)
    assert fuse([a, b], tmp_path / "f", "--weights", "0.7,0.4").exit_code == 0
    t = load_bundle(tmp_path / "f").manifest["thresholds"]
    assert t["accept"] == pytest.approx(1.1 * 1.5) and t["reject"] == pytest.approx(1.1 * 0.2)


def test_gate_exit_codes(fused, tmp_path):
    voice = write(tmp_path / "voice.wav", speechlike(3.0, seed=8, f0=130))
    tone = write(tmp_path / "tone.wav", (0.3 * np.sin(2 * np.pi * 440 * np.arange(48000) / 16000)).astype(np.float32))
    runner = CliRunner()

    def gate(path):
        return runner.invoke(main, ["gate", "--bundle", str(fused), str(path)]).exit_code

    set_thresholds(fused, -1e6, -1e6)
    assert gate(voice) == ExitCode.ACCEPT
    assert gate(tone) == ExitCode.NOT_SPEECH  # refused before any member runs
    set_thresholds(fused, 1e6, 1e6)
    assert gate(voice) == ExitCode.REJECT
    set_thresholds(fused, 1e6, -1e6)
    assert gate(voice) == ExitCode.UNCERTAIN


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_tampered_missing_or_replaced_member_and_an_edited_weight_are_refused(fused, members, tmp_path):
    voice = write(tmp_path / "voice.wav", speechlike(3.0, seed=9))

    def refused(bundle: Path, match: str) -> None:
        with pytest.raises(BundleError, match=match):
            Detector(bundle)
        res = CliRunner().invoke(main, ["gate", "--bundle", str(bundle), str(voice)])
        assert res.exit_code == ExitCode.BAD_BUNDLE and match.split(".*")[0] in res.output
        assert CliRunner().invoke(main, ["info", str(bundle)]).exit_code == ExitCode.BAD_BUNDLE

    def copy(name: str) -> Path:
        return Path(shutil.copytree(fused, tmp_path / name))

    bad = copy("tampered")
    _flip_byte(bad / "m1-rawnet2" / "model.onnx")
    refused(bad, "fusion member 'm1-rawnet2'.*sha256 does not match")

    bad = copy("missing")
    shutil.rmtree(bad / "m2-lfcc-gmm")
    refused(bad, "fusion member 'm2-lfcc-gmm' is missing")

    bad = copy("recalibrated")  # a valid, sealed manifest, but not the member the fusion was built with
    set_thresholds(bad / "m2-lfcc-gmm", -5.0, -6.0)
    refused(bad, "fusion member 'm2-lfcc-gmm'.*not the one this fusion was built with")

    bad = copy("weight")
    m = json.loads((bad / "manifest.json").read_text())
    m["fusion"]["weights"][1] = 0.0
    (bad / "manifest.json").write_text(json.dumps(m))
    refused(bad, "edited by hand")


def test_fuse_refuses_mismatched_members_and_protects_the_output(members, tmp_path):
    other = Path(shutil.copytree(members["lfcc"], tmp_path / "short-window"))
    m = json.loads((other / "manifest.json").read_text())
    m["windows"]["window"], m["windows"]["hop"] = 48000, 24000
    write_manifest(other, m)
    res = fuse([members["rawnet2"], other], tmp_path / "out")
    assert res.exit_code == ExitCode.BAD_BUNDLE and "windows.window is 48000" in res.output
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".fuse-*"))
    res = fuse([members["rawnet2"], lfcc_member(tmp_path, sample_rate=8000)], tmp_path / "out")
    assert res.exit_code == ExitCode.BAD_BUNDLE and "audio.sample_rate is 8000 Hz, the fusion's is 16000" in res.output
    assert not (tmp_path / "out").exists()

    assert fuse([members["rawnet2"]], tmp_path / "one").exit_code == ExitCode.USAGE
    assert fuse([members["rawnet2"], members["lfcc"]], tmp_path / "w", "--weights", "1").exit_code == ExitCode.USAGE
    # zero weights would give every input llr 0 (accepted at threshold 0); a negative one turns a member around
    for bad in ("0,0", "1,-1", "1,0", "nan,1"):
        res = fuse([members["rawnet2"], members["lfcc"]], tmp_path / "w", "--weights", bad)
        assert res.exit_code == ExitCode.USAGE and "> 0" in res.output, bad
        assert not (tmp_path / "w").exists()

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    res = fuse([members["rawnet2"], members["lfcc"]], mine)
    assert res.exit_code == ExitCode.USAGE and "already exists" in res.output
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]

    nested = tmp_path / "nested"
    assert fuse([members["rawnet2"], members["lfcc"]], nested).exit_code == 0
    res = fuse([nested, members["lfcc"]], tmp_path / "twice")
    assert res.exit_code == ExitCode.BAD_BUNDLE and "may not be a fusion bundle itself" in res.output


def test_listen_once_decides_with_a_fusion_bundle(fused, monkeypatch):
    import sys

    from fake_pyaudio import FakeDevice, FakeModule

    set_thresholds(fused, 1e6, -1e6)  # every decision "uncertain": exit 4 shows the fusion's thresholds ruled
    x = np.concatenate([np.zeros(4800), speechlike(4.5, seed=5), np.zeros(32000)])
    fake = FakeModule([FakeDevice("fake mic", default_rate=16000, rates=(16000,))],
                      autoplay=np.round(x * 32767).astype("<i2"))
    monkeypatch.setitem(sys.modules, "pyaudio", fake.as_module())
    res = CliRunner().invoke(main, ["listen", "--bundle", str(fused), "--once"])
    recs = [json.loads(line) for line in res.stdout.strip().splitlines()]
    assert recs and recs[-1]["model_id"] == load_bundle(fused).model_id and recs[-1]["decision"] == "uncertain"
    assert res.exit_code == ExitCode.UNCERTAIN
