"""`bench`, `calibrate` and `listen` with an AASIST bundle (tiny random AASIST, real onnxruntime).

`bench` runs the RawNet2 bundle and the AASIST bundle in one full run against one reference,
on the same decoded windows; `calibrate` fits on AASIST's logit scores; `listen --once`
(fake PyAudio) decides on the AASIST bundle exactly as `score` does on the same audio.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from audio_synth import speechlike, write  # noqa: E402
from fake_pyaudio import FakeDevice, FakeModule  # noqa: E402

from edge_detector.audio import load_audio  # noqa: E402
from edge_detector.bundle import load_bundle  # noqa: E402
from edge_detector.cli import main  # noqa: E402
from edge_detector.detector import Detector  # noqa: E402
from edge_detector.protocol import ProtocolEntry  # noqa: E402
from edge_detector.windows import first_window  # noqa: E402
from export.aasist import AASIST, AASISTConfig, save_aasist  # noqa: E402

FAST = ["--threads", "1", "--runs", "2", "--warmup", "1", "--cold-runs", "1", "--rss-windows", "1", "--no-plots"]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def aasist(tmp_path_factory):
    """A tiny AASIST exported with the numpy front end, and six speech-like files labelled by its
    own scores (the top three bona fide), so calibration sees a separable, non-inverted set."""
    torch.manual_seed(0)
    cfg = AASISTConfig(name="tiny", encoder=[[1, 4], [4, 6]], gat_dims=[6, 5], pool_ratios=[0.5, 0.5, 0.5, 0.5])
    d = tmp_path_factory.mktemp("aasist_rt")
    model = AASIST(cfg).eval()
    with torch.no_grad():  # spread the random model's scores (otherwise all six lie within 1e-5)
        model.first_bn.weight.fill_(100.0)
        model.out_layer.weight.mul_(100.0)
    save_aasist(model, d / "tiny.pt")
    audio = d / "audio"
    audio.mkdir()
    for i in range(6):
        sr = 16000 if i % 2 == 0 else 22050
        x = speechlike(4.3, sr=sr, seed=30 + i, f0=95 + 25 * i)
        write(audio / f"F{i}.wav", (0.15 + 0.15 * i) * x / np.abs(x).max(), sr=sr)
    bundle = d / "bundle"
    r = invoke("export", str(d / "tiny.pt"), "-o", str(bundle), "--frontend", "numpy-fft",
               "--parity-audio", str(audio / "F0.wav"), "--parity-seed", "1")
    assert r.exit_code == 0, r.output
    det = Detector(bundle)
    windows = np.stack([first_window(load_audio(audio / f"F{i}.wav", 16000).samples, 64600) for i in range(6)])
    scores = det.score_windows(windows).astype(np.float64)
    assert np.min(np.diff(np.sort(scores))) > 1e-3  # distinct, so the labelling below is a strict order
    top = set(np.argsort(scores)[3:].tolist())
    entries = [ProtocolEntry(f"SPK{i}", f"F{i}", "-" if i in top else "sysA", "bonafide" if i in top else "spoof")
               for i in range(6)]
    protocol = d / "protocol.txt"
    protocol.write_text("".join(e.to_line() + "\n" for e in entries))
    return {"bundle": bundle, "audio": audio, "protocol": protocol, "windows": windows, "scores": scores}


def test_bench_runs_rawnet2_and_aasist_bundles_in_one_run(aasist, tiny_bundle_master, tiny_checkpoint, tmp_path):
    out = tmp_path / "bench"
    r = invoke("bench", "--protocol", str(aasist["protocol"]), "--audio-dir", str(aasist["audio"]),
               "--checkpoint", str(tiny_checkpoint), "--bundle", str(tiny_bundle_master),
               "--bundle", str(aasist["bundle"]), "--reference-device", "cpu", "--clock", "cpu", "--out", str(out), *FAST)
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "bench.json").read_text())
    assert rep["settings"]["clock"].startswith("cpu (CPU time of this process")
    assert "--clock cpu" in rep["command"]["command_line"]
    by_name = {m["name"]: m for m in rep["models"]}
    assert set(by_name) == {"full", "tiny", "bundle"}
    assert by_name["tiny"]["family"] == "RawNet2" and by_name["bundle"]["family"] == "AASIST"
    assert by_name["bundle"]["score_kind"] == "logit_bonafide"
    # the AASIST bundle scored the same first windows the runtime scores: logit[1] of each file
    lines = (out / rep["score_files"]["bundle"]).read_text().split()
    got = dict(zip(lines[0::2], map(float, lines[1::2])))
    np.testing.assert_allclose([got[f"F{i}"] for i in range(6)], aasist["scores"], atol=1e-5)
    assert by_name["bundle"]["latency"]["1"]["runs"] == 2
    assert by_name["bundle"]["accuracy"]["eer"] == 0.0  # labelled by its own scores
    assert "bundle" in (out / "bench.md").read_text()


def test_calibrate_fits_aasist_logits(aasist, tmp_path):
    out = tmp_path / "calibrated"
    r = invoke("calibrate", str(aasist["bundle"]), "--protocol", str(aasist["protocol"]), "--audio-dir",
               str(aasist["audio"]), "-o", str(out), "--threads", "1")
    assert r.exit_code == 0, r.output
    cal = load_bundle(out).manifest["calibration"]
    assert cal["scale"] > 0  # higher logit[1] = more bona fide, as labelled
    rec = json.loads(invoke("score", str(aasist["audio"] / "F0.wav"), "--bundle", str(out)).stdout)
    assert rec["score"] == pytest.approx(aasist["scores"][0], abs=1e-5)
    assert rec["llr"] == pytest.approx(cal["scale"] * rec["score"] + cal["offset"], abs=1e-5)


def test_listen_once_on_aasist_decides_like_score(aasist, monkeypatch):
    sr = 16000
    x = np.concatenate([np.zeros(int(0.3 * sr)), speechlike(4.5, seed=3), np.zeros(2 * sr)])
    pcm = np.round(x * 32767).astype("<i2")
    fake = FakeModule([FakeDevice("fake mic", default_rate=sr, rates=(sr,))], autoplay=pcm)
    monkeypatch.setitem(sys.modules, "pyaudio", fake.as_module())
    res = CliRunner().invoke(main, ["listen", "--bundle", str(aasist["bundle"]), "--once", "--min-speech", "1.0"])
    recs = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert recs, res.output
    # the fake device delivers int16: the same quantised samples as `pcm`, so compare with those
    ref = Detector(aasist["bundle"]).score_array(pcm.astype(np.float32) / 32768.0, sr)
    assert recs[0]["score"] == pytest.approx(ref.score, abs=1e-4)
    assert res.exit_code == {"accept": 0, "reject": 3, "uncertain": 4}[recs[0]["decision"]]
