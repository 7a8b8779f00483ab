"""`edge-detect adapt`: embedding output at export, the numpy fit, the guard, the adapted bundle.

The tiny RawNet2 of conftest goes through the project's own exporter (which now adds the
``embedding`` output); the enrolment audio is synthesised here: speech-like "bona fide"
through a telephone-like band limit (the device's channel) and buzzy "spoofs".
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from audio_synth import buzzy, speechlike, write

from edge_detector import adaptation
from edge_detector.adaptation import AdaptSettings, fit_head, stratified_folds, training_set
from edge_detector.bundle import load_bundle, sha256_file, write_manifest
from edge_detector.cli import main
from edge_detector.detector import Detector
from edge_detector.errors import ExitCode
from edge_detector.head import LinearHead, load_head_file, shipped_head
from edge_detector.resample import resample
from edge_detector.session import make_session
from edge_detector.windows import first_window

SR = 16000


def phone(x: np.ndarray) -> np.ndarray:
    """Down to 8 kHz and back: the band limit of a telephone channel."""
    return np.clip(resample(resample(x, SR, 8000), 8000, SR), -1, 1).astype(np.float32)


@pytest.fixture(scope="module")
def enrolment(tmp_path_factory) -> tuple[Path, Path, list[tuple[str, int, np.ndarray]]]:
    """12 bona fide (speech-like, phone band) + 12 spoofs (buzzy), 2.5 s each, and their protocol."""
    d = tmp_path_factory.mktemp("enrol")
    rng = np.random.default_rng(5)
    items, lines = [], []
    for i in range(12):
        b = phone(speechlike(2.5, seed=300 + i, f0=float(rng.uniform(90, 220))))
        s = buzzy(2.5, seed=400 + i)
        for fid, label, x in ((f"B{i:02d}", 1, b), (f"S{i:02d}", 0, s)):
            write(d / f"{fid}.wav", x)
            items.append((fid, label, x))
            lines.append(f"dev {fid} - {'-' if label else 'A01'} {'bonafide' if label else 'spoof'}")
    proto = d / "protocol.txt"
    proto.write_text("\n".join(lines) + "\n")
    return d, proto, items


def tree_digest(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir())}


def embeddings_of(bundle: Path, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(graph scores, embeddings) straight from an onnxruntime session (no project scorer)."""
    m = json.loads((bundle / "manifest.json").read_text())
    sess = make_session(bundle / m["onnx"]["file"])
    s, e = sess.run(["score", "embedding"], {"waveform": windows.astype(np.float32)})
    return s, e


def adapt(args: list[str]):
    return CliRunner().invoke(main, ["adapt", *args])


def fake_sanity(monkeypatch, x: np.ndarray, name: str, reaches_model: bool) -> None:
    """Replace the sanity set by one signal, and the runtime's speech-presence verdict on it."""
    monkeypatch.setattr(adaptation, "sanity_signals", lambda sr: ([name], [x], "test"))
    monkeypatch.setattr(adaptation, "reaches_model", lambda *a: reaches_model)


@pytest.fixture()
def lenient_sanity(monkeypatch):
    """A sanity set the 6-step tiny model rejects (one buzzy signal), judged as if it reached the model."""
    fake_sanity(monkeypatch, buzzy(4.5, seed=999), "buzzy", True)


# ------------------------------------------------------------------------------------ export


def test_export_adds_the_embedding_output_and_records_the_final_layer(tiny_bundle_master):
    m = load_bundle(tiny_bundle_master).manifest
    assert m["onnx"]["embedding_output"] == "embedding" and m["onnx"]["embedding_dim"] == 32
    assert len(m["head"]["weight"]) == 32
    emb_parity = m["parity"]["embedding"]
    assert emb_parity["max_abs_diff_embedding"] <= 1e-4 and emb_parity["max_abs_diff_head_score"] <= 1e-4
    sess = make_session(tiny_bundle_master / "model.onnx")
    assert [o.name for o in sess.get_outputs()] == ["score", "embedding"]
    windows = np.stack([first_window(speechlike(3.0, seed=1)), first_window(buzzy(3.0, seed=2))])
    score, emb = embeddings_of(tiny_bundle_master, windows)
    assert emb.shape == (2, 32)
    # the recorded final layer, applied by hand, is the graph's own score
    w, b = np.array(m["head"]["weight"]), m["head"]["bias"]
    np.testing.assert_allclose(-np.log1p(np.exp(-(emb.astype(np.float64) @ w + b))), score, atol=1e-5)


def test_embedding_equals_pytorch_gru_state(tiny_model, tiny_bundle_master):
    from export.embedding import reference_embeddings

    windows = np.stack([first_window(speechlike(4.1, seed=11)), first_window(buzzy(2.0, seed=12))])
    _, emb = embeddings_of(tiny_bundle_master, windows)
    np.testing.assert_allclose(emb, reference_embeddings(tiny_model, windows), atol=1e-4)


# ------------------------------------------------------------------------------------ the fit


def test_fit_is_the_minimum_of_the_stated_objective():
    rng = np.random.default_rng(0)
    e = rng.standard_normal((40, 6))
    y = (e[:, 0] + 0.5 * rng.standard_normal(40) > 0).astype(int)
    prior = LinearHead(rng.standard_normal(6), 0.3)
    head = fit_head(e, y, prior, l2=2.0)
    # gradient of the objective (written out here independently) vanishes at the fit
    w = np.where(y == 1, 40 / (2 * y.sum()), 40 / (2 * (40 - y.sum())))
    p = 1 / (1 + np.exp(-(e @ head.weight + head.bias)))
    grad_w = e.T @ (w * (p - y)) + 2.0 * (head.weight - prior.weight)
    grad_b = np.sum(w * (p - y))
    assert np.max(np.abs(grad_w)) < 1e-6 and abs(grad_b) < 1e-6
    # a huge pull keeps the weights at the prior (only the unpenalised bias moves)
    np.testing.assert_allclose(fit_head(e, y, prior, l2=1e9).weight, prior.weight, atol=1e-6)


def test_folds_are_stratified_and_negatives_weigh_half():
    y = np.array([1] * 7 + [0] * 5)
    folds = stratified_folds(y, 3, seed=1)
    for k in range(3):
        assert 2 <= (y[folds == k] == 1).sum() <= 3 and 1 <= (y[folds == k] == 0).sum() <= 2
    e, t, w = training_set(np.zeros((12, 2)), y, np.ones((20, 2)))
    assert len(t) == 32 and w[:7].sum() == pytest.approx(6) and w[7:12].sum() == pytest.approx(6)
    assert w[12:].sum() == pytest.approx(6) and set(t[12:]) == {0}


# ------------------------------------------------------------------------------------ the command


def test_adapt_writes_a_verified_bundle_and_leaves_the_source_untouched(tiny_bundle, enrolment, lenient_sanity,
                                                                       tmp_path):
    d, proto, items = enrolment
    before = tree_digest(tiny_bundle)
    out = tmp_path / "adapted"
    res = adapt([str(tiny_bundle), "--protocol", str(proto), "--audio-dir", str(d), "-o", str(out), "--l2", "0.1"])
    assert res.exit_code == 0, res.output
    assert tree_digest(tiny_bundle) == before  # the original is byte-identical
    new = load_bundle(out)  # every sha256 verifies
    m, src = new.manifest, load_bundle(tiny_bundle).manifest
    assert sorted(m["files"]) == ["adapted_head.npz", "model.onnx"]
    assert sha256_file(out / "model.onnx") == src["files"]["model.onnx"]["sha256"]
    a = m["adaptation"]
    assert a["source"]["model_id"] == src["model_id"] and m["model_id"].startswith(src["model_id"] + "-adapted-")
    assert a["data"]["protocol_sha256"] == [sha256_file(proto)]
    assert (a["data"]["bonafide"], a["data"]["spoof"], a["data"]["files"]) == (12, 12, 24)
    assert a["held_back"]["eer_after"] <= a["held_back"]["eer_before"]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["bundle"] == str(out) and summary["eer_held_back"] == a["held_back"]["eer_after"]

    # the runtime scores through the stored head: equal to the numpy formula on the session's embedding
    windows = np.stack([first_window(x) for _, _, x in items[:6]])
    head = load_head_file(out / "adapted_head.npz")
    _, emb = embeddings_of(out, windows)
    expected = -np.logaddexp(0.0, -(emb.astype(np.float64) @ head.weight + head.bias))
    got = Detector(out).score_windows(windows)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.max(np.abs(got - Detector(tiny_bundle).score_windows(windows))) > 1e-3  # the layer did change


def test_guard_refuses_an_adaptation_that_raises_the_held_back_eer():
    """The source ranks these files perfectly; a layer refitted on embeddings that carry no label
    information does worse on held-back folds, so the adaptation is refused."""
    rng = np.random.default_rng(3)
    y = np.array([1] * 10 + [0] * 10)
    emb = rng.standard_normal((20, 8))  # no relation to the labels
    source_scores = np.where(y == 1, -0.1, -3.0)  # EER 0 before
    prior = LinearHead(np.zeros(8), 0.0)
    with pytest.raises(adaptation.AdaptationRefused, match=r"EER would rise from 0\.00% \(source bundle\)"):
        adaptation.adapt_head(emb, y, source_scores, prior, AdaptSettings(l2=0.01))
    # embeddings that do carry the label, and a source that ranks nothing: accepted, held-back EER 0
    emb[:, 0] += 6.0 * y
    result = adaptation.adapt_head(emb, y, np.zeros(20), prior, AdaptSettings(l2=0.01))
    assert result.eer_before >= 0.5 and result.eer_held_back == 0.0
    assert result.calibration.scale > 0 and result.head.weight[0] > 0


@pytest.mark.parametrize("reaches_model", [True, False])
def test_guard_refuses_an_adaptation_that_accepts_a_sanity_signal(tiny_bundle, enrolment, monkeypatch, tmp_path,
                                                                  reaches_model):
    d, proto, items = enrolment
    # a "sanity signal" that is one of the bona fide recordings: the adapted layer accepts it, so the
    # adaptation is refused, unless the runtime's speech-presence check stops it before the model
    fake_sanity(monkeypatch, items[0][2], "impostor_tone", reaches_model)
    out = tmp_path / "adapted"
    res = adapt([str(tiny_bundle), "--protocol", str(proto), "--audio-dir", str(d), "-o", str(out), "--l2", "0.1"])
    if reaches_model:
        assert res.exit_code == ExitCode.REJECT, res.output
        assert "sanity set" in res.output and "impostor_tone" in res.output
        assert not out.exists()
    else:
        assert res.exit_code == 0, res.output
        assert load_bundle(out).manifest["adaptation"]["sanity"]["refused_before_the_model"] == 1


def test_the_speech_check_decides_which_sanity_signals_reach_the_model():
    pytest.importorskip("edge_detector.speech_presence", reason="this runtime has no speech-presence check")
    from edge_detector.sanity import tone

    assert adaptation.reaches_model(tone(5.0), SR, 64600) is False
    assert adaptation.reaches_model(speechlike(4.5, seed=3), SR, 64600) is True


def test_a_bundle_without_the_embedding_output_is_refused_with_exit_7(tiny_bundle, enrolment, tmp_path):
    d, proto, _ = enrolment
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    del m["onnx"]["embedding_output"], m["head"]
    write_manifest(tiny_bundle, m)
    windows = np.stack([first_window(speechlike(3.0, seed=1))])
    np.testing.assert_allclose(Detector(tiny_bundle).score_windows(windows),  # an old bundle still scores
                               embeddings_of(tiny_bundle, windows)[0], atol=1e-6)
    res = adapt([str(tiny_bundle), "--protocol", str(proto), "--audio-dir", str(d), "-o", str(tmp_path / "o")])
    assert res.exit_code == ExitCode.BAD_BUNDLE
    assert "no embedding output" in res.output and "Re-export" in res.output


def test_output_must_be_a_new_folder_and_never_the_source(tiny_bundle, enrolment, tmp_path):
    d, proto, _ = enrolment
    mine = tmp_path / "my-files"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for target, flags in ((mine, []), (mine, ["--overwrite"]), (tiny_bundle, ["--overwrite"])):
        res = adapt([str(tiny_bundle), "--protocol", str(proto), "--audio-dir", str(d), "-o", str(target), *flags])
        assert res.exit_code == ExitCode.USAGE, res.output
    assert (mine / "notes.txt").read_text() == "keep me"


def test_one_class_only_is_bad_data(tiny_bundle, enrolment, tmp_path):
    d, proto, _ = enrolment
    only_bona = tmp_path / "bona.txt"
    only_bona.write_text("".join(line + "\n" for line in proto.read_text().splitlines() if "bonafide" in line))
    res = adapt([str(tiny_bundle), "--protocol", str(only_bona), "--audio-dir", str(d), "-o", str(tmp_path / "o")])
    assert res.exit_code == ExitCode.BAD_AUDIO and "both classes" in res.output


def test_a_tampered_head_file_fails_verification(tiny_bundle, enrolment, lenient_sanity, tmp_path):
    d, proto, _ = enrolment
    out = tmp_path / "adapted"
    assert adapt([str(tiny_bundle), "--protocol", str(proto), "--audio-dir", str(d), "-o", str(out),
                  "--l2", "0.1"]).exit_code == 0
    head = load_head_file(out / "adapted_head.npz")
    np.savez(out / "adapted_head.npz", weight=-head.weight, bias=np.array([head.bias]))
    res = CliRunner().invoke(main, ["score", "--bundle", str(out), str(d / "B00.wav")])
    assert res.exit_code == ExitCode.BAD_BUNDLE


def test_head_file_must_be_listed_in_files(tiny_bundle, enrolment, lenient_sanity, tmp_path):
    from edge_detector.errors import BundleError

    d, proto, _ = enrolment
    out = tmp_path / "adapted"
    assert adapt([str(tiny_bundle), "--protocol", str(proto), "--audio-dir", str(d), "-o", str(out),
                  "--l2", "0.1"]).exit_code == 0
    m = json.loads((out / "manifest.json").read_text())
    del m["files"]["adapted_head.npz"]
    (out / "adapted_head.npz").rename(tmp_path / "elsewhere.npz")
    write_manifest(out, m)
    with pytest.raises(BundleError, match="no entry in 'files'"):
        Detector(out)


def test_shipped_head_of_an_old_manifest_names_the_fix():
    from edge_detector.errors import BundleError

    with pytest.raises(BundleError, match="Re-export"):
        shipped_head({"onnx": {}}, where="old")


def test_settings_refuse_a_zero_pull():
    with pytest.raises(ValueError):
        AdaptSettings(l2=0.0)


# ------------------------------------------------------------------------------------ enrolment recording


def test_listen_records_enrolment_only_when_asked(monkeypatch, tiny_bundle, tmp_path):
    import sys

    import soundfile as sf

    from edge_detector.protocol import read_protocol
    from fake_pyaudio import FakeDevice, FakeModule

    x = np.concatenate([np.zeros(int(0.3 * SR)), speechlike(4.5, seed=3), np.zeros(2 * SR)])
    pcm = np.round(x * 32767).astype("<i2")
    folder = tmp_path / "enrol"
    records = {}
    for flag in ([], ["--record-enrolment", str(folder)], ["--record-enrolment", str(folder)]):
        fake = FakeModule([FakeDevice("fake mic", default_rate=16000, rates=(16000,))], autoplay=pcm)
        monkeypatch.setitem(sys.modules, "pyaudio", fake.as_module())
        res = CliRunner().invoke(main, ["listen", "--bundle", str(tiny_bundle), "--once", "--min-speech", "1.0",
                                        *flag])
        assert res.exit_code in (ExitCode.ACCEPT, ExitCode.REJECT, ExitCode.UNCERTAIN), res.output
        rec = json.loads([line for line in res.stdout.splitlines() if line.startswith("{")][-1])
        records[len(records)] = rec
    assert "enrolment_file" not in records[0]  # off by default
    first, second = Path(records[1]["enrolment_file"]), Path(records[2]["enrolment_file"])
    assert first != second and first.parent == folder == second.parent  # a second session adds, never overwrites
    y, sr = sf.read(str(first), dtype="float32")
    start, end = (int(round(records[1][k] * SR)) for k in ("start", "end"))
    assert sr == SR and len(y) == end - start
    np.testing.assert_allclose(y, np.clip(x[start:end], -1, 1), atol=1.0 / 32767 + 1e-6)  # the decided segment
    entries = read_protocol(folder / "protocol.txt")
    assert [e.file_id for e in entries] == [first.stem, second.stem] and all(e.is_bonafide for e in entries)
