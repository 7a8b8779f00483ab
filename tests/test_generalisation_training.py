"""Training-side parts of the generalisation recipe: copy-synthesis, recording conditions,
family splits, pair-aware batches and the supervised contrastive term (issue 12)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")

from edge_detector.demo_audio import synthesize_vowels  # noqa: E402
from edge_detector.errors import DataError  # noqa: E402
from edge_detector.protocol import ProtocolEntry, read_protocol, write_protocol  # noqa: E402
from export.augment_codec import ConditionAugment, ConditionParams, codec_round_trip, same_condition, telephone_channel  # noqa: E402
from export.augment_channel import build_training_augment  # noqa: E402
from export.family_splits import SourceInfo, family_split, read_sources  # noqa: E402
from export.pair_training import BalancedSampler, aligned_crops, matched_index, pair_index, supervised_contrastive  # noqa: E402
from export.rawnet2 import fft_valid_conv  # noqa: E402

SR = 16000


def test_supervised_contrastive_matches_hand_computation():
    # z1 = z2 = (1, 0) class 0, z3 = (0, 1) class 1, tau = 1: only anchors 1 and 2 have a
    # positive; each: -(1 - log(e^1 + e^0)) = log(e + 1) - 1.
    z = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])  # normalised inside
    y = torch.tensor([0, 0, 1])
    got = float(supervised_contrastive(z, y, temperature=1.0))
    assert got == pytest.approx(math.log(math.e + 1) - 1, abs=1e-6)
    # a batch where nobody has a positive contributes nothing
    assert float(supervised_contrastive(z[1:], y[1:], 1.0)) == 0.0


def test_contrastive_term_is_lower_when_classes_separate():
    y = torch.tensor([0, 0, 1, 1])
    apart = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    mixed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]])
    assert float(supervised_contrastive(apart, y, 0.1)) < float(supervised_contrastive(mixed, y, 0.1)) - 1.0


def test_fft_sinc_convolution_equals_direct():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 5000, generator=g)
    w = torch.randn(3, 1, 129, generator=g)
    direct = torch.nn.functional.conv1d(x, w)
    assert direct.shape == fft_valid_conv(x, w).shape
    assert float((direct - fft_valid_conv(x, w)).abs().max()) < 1e-4 * float(direct.abs().max())


def _speechlike(seconds: float = 1.2, seed: int = 0) -> np.ndarray:
    return synthesize_vowels(seconds, seed=seed)


def test_same_condition_gives_both_members_the_identical_draw():
    aug = build_training_augment(rawboost=True, channel=True, seed=3, condition=True)
    x = _speechlike(4.1)
    a, b = same_condition(aug, x, x.copy())
    np.testing.assert_array_equal(a, b)
    c, _ = same_condition(aug, x, x)  # the generator moved on: the next pair gets another condition
    assert not np.array_equal(a, c)


def test_condition_augment_keeps_shape_and_hits_both_kinds():
    rng = np.random.default_rng(0)
    aug = ConditionAugment(rng, ConditionParams(p_room=1.0, p_codec=1.0, p_telephone=0.0, p_noise=1.0, rooms=2))
    x = _speechlike(2.0)
    y = aug(x)
    assert y.shape == x.shape and y.dtype == np.float32 and np.all(np.isfinite(y))
    assert np.max(np.abs(y)) <= 1.0
    assert np.corrcoef(x, y)[0, 1] < 0.99  # it did change the recording


def test_telephone_channel_removes_the_upper_band():
    rng = np.random.default_rng(1)
    x = np.random.default_rng(2).standard_normal(SR * 2).astype(np.float32) * 0.1
    y = telephone_channel(x, rng)
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / SR)
    in_band = spec[(f > 500) & (f < 3000)].mean()
    above = spec[f > 4500].mean()
    assert 10 * np.log10(in_band / above) > 30


def test_codec_round_trip_keeps_length():
    x = _speechlike(1.0)
    for fmt, sub in (("MP3", "MPEG_LAYER_III"), ("OGG", "VORBIS"), ("OGG", "OPUS")):
        y = codec_round_trip(x, fmt, sub, SR, 0.8)
        assert y.shape == x.shape
        assert np.corrcoef(x, y)[0, 1] > 0.5, fmt  # a lossy copy of the same signal, not noise


def _entries(n_speakers: int) -> tuple[list[ProtocolEntry], dict[str, SourceInfo]]:
    entries, sources = [], {}
    for k in range(n_speakers):
        for u in range(4):
            fid = f"B_{k}_{u}"
            entries.append(ProtocolEntry(f"BIG_s{k}", fid, "-", "bonafide"))
            sources[fid] = SourceInfo("bonafide", "BIG")
    for u in range(30):
        fid = f"S_{u}"
        entries.append(ProtocolEntry("ONE", fid, "-", "bonafide"))
        sources[fid] = SourceInfo("bonafide", "SOLO")
    for fam in ("vc", "tts", "zs", "vocoder"):
        for u in range(6):
            fid = f"{fam}_{u}"
            entries.append(ProtocolEntry("LJ", fid, f"{fam}_sys{u % 2}", "spoof"))
            sources[fid] = SourceInfo(fam, "LJ")
    return entries, sources


def test_family_split_holds_out_whole_families_and_speakers():
    entries, sources = _entries(40)
    split = family_split(entries, sources, ["vc"], ["zs"], bonafide_val=0.2, bonafide_test=0.2)
    fam = lambda side: {sources[e.file_id].family for e in side if not e.is_bonafide}  # noqa: E731
    assert fam(split.val) == {"vc"} and fam(split.test) == {"zs"} and fam(split.train) == {"tts", "vocoder"}
    assert len(split.train) + len(split.val) + len(split.test) == len(entries)
    speakers = [{e.speaker for e in side if e.is_bonafide and e.speaker.startswith("BIG")}
                for side in (split.train, split.val, split.test)]
    assert not (speakers[0] & speakers[1]) and not (speakers[0] & speakers[2]) and not (speakers[1] & speakers[2])
    solo = [sum(e.speaker == "ONE" for e in side) for side in (split.train, split.val, split.test)]
    assert all(n > 0 for n in solo)  # one-voice corpus split by file, present on every side
    again = family_split(entries, sources, ["vc"], ["zs"], bonafide_val=0.2, bonafide_test=0.2)
    assert [e.file_id for e in again.test] == [e.file_id for e in split.test]


def test_family_split_refuses_overlap_and_empty_sides():
    entries, sources = _entries(10)
    with pytest.raises(DataError, match="both in validation and test"):
        family_split(entries, sources, ["vc"], ["vc"])
    with pytest.raises(DataError, match="lacks a class"):
        family_split(entries, sources, ["vc"], ["no_such_family"])
    with pytest.raises(DataError, match="not in the sources"):
        family_split(entries + [ProtocolEntry("X", "unlisted", "-", "bonafide")], sources, ["vc"], ["zs"])


def test_read_sources_is_bom_tolerant(tmp_path):
    p = tmp_path / "SOURCES.tsv"
    p.write_text("\ufefffile_id\tlabel\tsystem\tfamily\tcorpus\nA\tbonafide\t-\t\tLS\nB\tspoof\tx\tvc\tLJ\n")
    s = read_sources(p)
    assert s["A"] == SourceInfo("bonafide", "LS") and s["B"] == SourceInfo("vc", "LJ")


def test_balanced_sampler_weights_groups_by_square_root_of_size():
    entries = [ProtocolEntry("LJ", f"a{i}", "big", "spoof") for i in range(100)]
    entries += [ProtocolEntry("LJ", "b0", "small", "spoof"), ProtocolEntry("LS_1", "c0", "-", "bonafide")]
    s = BalancedSampler(entries, np.random.default_rng(0))
    draws = s.draw(0, 20000)
    share_small = np.mean(draws == 100)
    assert share_small == pytest.approx(1 / 11, abs=0.01)  # sqrt(100) : sqrt(1) = 10 : 1
    assert set(s.draw(1, 50).tolist()) == {101}


def test_pair_index_and_aligned_crops():
    entries = [ProtocolEntry("S", "src", "-", "bonafide"), ProtocolEntry("S", "src__voc-world", "copysyn_world", "spoof"),
               ProtocolEntry("S", "other__voc-lpc", "copysyn_lpc", "spoof")]
    pairs = pair_index(entries, {"src__voc-world": "src", "other__voc-lpc": "other"})
    assert pairs == {0: [1]}
    x = np.arange(70000, dtype=np.float32)
    a, b = aligned_crops(x, x * 2, np.random.default_rng(0))
    assert len(a) == 64600 and np.array_equal(b, 2 * a)
    short_a, short_b = aligned_crops(x[:1000], x[:900], np.random.default_rng(0))
    assert len(short_a) == 64600 and np.array_equal(short_a[:900], short_b[:900])


def test_matched_index_couples_spoofs_with_bona_fide_of_their_own_source():
    entries = [ProtocolEntry("LJ", "lj_b0", "-", "bonafide"), ProtocolEntry("LJ", "lj_b1", "-", "bonafide"),
               ProtocolEntry("VCTK_p1", "v_b0", "-", "bonafide"),
               ProtocolEntry("LJ", "lj_s0", "tacotron", "spoof"), ProtocolEntry("LJ", "lj_s1", "tacotron", "spoof"),
               ProtocolEntry("LJ", "lj_s2", "glowtts", "spoof"), ProtocolEntry("VCTK_p9", "v_s0", "yourtts", "spoof"),
               ProtocolEntry("TTS", "x_s0", "espeak", "spoof"),  # no bona fide of its source: left out
               ProtocolEntry("LJ", "lj_b0__voc-world", "copysyn_world", "spoof")]  # a copy: matched by its pair
    pairs = pair_index(entries, {"lj_b0__voc-world": "lj_b0"})
    spoofs, weights, bona_of = matched_index(entries, pairs)
    assert spoofs.tolist() == [3, 4, 5, 6]
    assert bona_of[3].tolist() == [0, 1] and bona_of[6].tolist() == [2]  # same source (VCTK), other speaker
    # systems weighted 1/sqrt(size): tacotron's two files share sqrt(2) of the mass glowtts's one file has
    assert weights.sum() == pytest.approx(1.0)
    assert weights[0] == pytest.approx(weights[2] / np.sqrt(2))
    empty = matched_index(entries[:3], None)
    assert len(empty[0]) == 0 and empty[2] == {}


pyworld = pytest.importorskip("pyworld")


@pytest.mark.parametrize("vocoder", ["world", "mlsa", "lpc", "griffinlim"])
def test_copy_synthesis_is_deterministic_and_level_matched(vocoder):
    from export.vocode import copy_synthesis

    x = _speechlike(1.0, seed=4)
    y = copy_synthesis(x, vocoder, "utt1")
    assert y.shape == x.shape and np.all(np.isfinite(y))
    np.testing.assert_array_equal(y, copy_synthesis(x, vocoder, "utt1"))
    assert np.sqrt(np.mean(y**2)) == pytest.approx(np.sqrt(np.mean(x**2)), rel=1e-3)
    assert not np.allclose(y, x, atol=1e-3)
    # a copy of the same utterance, not noise: the envelopes (20 ms RMS) follow each other
    env = lambda s: np.sqrt(np.mean(s[: len(s) // 320 * 320].reshape(-1, 320) ** 2, axis=1))  # noqa: E731
    assert np.corrcoef(env(x), env(y))[0, 1] > 0.6


def test_vocode_command_writes_pairs_reuses_cache_and_survives_a_bad_file(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(2):
        sf.write(audio / f"b{i}.wav", _speechlike(0.8, seed=i), SR)
    sf.write(audio / "tiny.wav", np.zeros(400, dtype=np.float32), SR)  # 25 ms: too short to vocode
    sf.write(audio / "s0.wav", _speechlike(0.8, seed=9), SR)
    write_protocol([ProtocolEntry("A", "b0", "-", "bonafide"), ProtocolEntry("A", "b1", "-", "bonafide"),
                    ProtocolEntry("A", "tiny", "-", "bonafide"), ProtocolEntry("A", "s0", "sysX", "spoof")],
                   tmp_path / "protocol.txt")
    out = tmp_path / "voc"
    cmd = [sys.executable, "-m", "edge_detector.cli", "vocode", "--protocol", str(tmp_path / "protocol.txt"),
           "--audio-dir", str(audio), "--out", str(out), "--vocoders", "world,lpc"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["files"] == 4 and summary["written"] == 4 and len(summary["failed"]) == 2
    assert "too short" in r.stderr
    entries = read_protocol(out / "protocol.txt")
    assert sorted(e.file_id for e in entries) == ["b0__voc-lpc", "b0__voc-world", "b1__voc-lpc", "b1__voc-world"]
    assert {e.system for e in entries} == {"copysyn_world", "copysyn_lpc"} and all(e.speaker == "A" for e in entries)
    pairs = (out / "pairs.tsv").read_text().splitlines()
    assert pairs[0].startswith("file_id\tsource_file_id") and "b1__voc-lpc\tb1\tlpc\tA" in pairs
    before = (out / "b0__voc-world.flac").stat().st_mtime_ns
    r2 = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert json.loads(r2.stdout.strip().splitlines()[-1])["reused"] == 4
    assert (out / "b0__voc-world.flac").stat().st_mtime_ns == before
    # a later run with another vocoder into the same folder adds to the tables and drops nothing;
    # the pair table is replaced, not written through: a hard-linked copy of the folder keeps its own
    linked = tmp_path / "voc-copy"
    linked.mkdir()
    os.link(out / "pairs.tsv", linked / "pairs.tsv")
    r3 = subprocess.run(cmd[:-1] + ["mlsa"], capture_output=True, text=True, timeout=300)
    assert r3.returncode == 0, r3.stderr
    assert len(read_protocol(out / "protocol.txt")) == 6
    assert "b1__voc-mlsa\tb1\tmlsa\tA" in (out / "pairs.tsv").read_text().splitlines()
    assert (linked / "pairs.tsv").read_text().splitlines() == pairs


LYRA = Path(__file__).resolve().parents[2] / "shared" / "models" / "lyra"


def _need_lyra() -> None:
    if not (LYRA / "lyragan.tflite").is_file():
        pytest.skip(f"Lyra v2 model files not found in {LYRA} (the shared models folder is absent)")
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert (train extra) is not installed")


def test_lyra_resynthesis_is_frame_aligned_deterministic_and_bit_rate_dependent():
    _need_lyra()
    from export.lyra_codec import lyra_resynthesis
    from export.vocode import copy_synthesis

    x = (0.5 * synthesize_vowels(seconds=1.05, sr=SR, seed=3)).astype(np.float32)
    lo, hi = lyra_resynthesis(x, LYRA, 3.2), lyra_resynthesis(x, LYRA, 9.2)
    assert lo.shape == hi.shape == x.shape  # 1.05 s = 52.5 frames: the partial frame is padded and cut
    np.testing.assert_array_equal(lo, lyra_resynthesis(x, LYRA, 3.2))  # fresh state every call
    assert not np.allclose(lo, hi, atol=1e-3)
    # a coded copy of the same vowels, in time with them (no delay): the 20 ms envelopes follow each other
    env = lambda s: np.sqrt(np.mean(s[: len(s) // 320 * 320].reshape(-1, 320) ** 2, axis=1))  # noqa: E731
    assert np.corrcoef(env(x), env(hi))[0, 1] > 0.8
    y = copy_synthesis(x, "lyra", "utt7", lyra_dir=LYRA)
    assert np.sqrt(np.mean(y**2)) == pytest.approx(np.sqrt(np.mean(x**2)), rel=1e-3)
    with pytest.raises(ValueError, match="model folder"):
        copy_synthesis(x, "lyra", "utt7")
    with pytest.raises(ValueError, match="bit rate"):
        lyra_resynthesis(x, LYRA, 4.0)


def test_vocode_lyra_refuses_a_folder_without_the_model(tmp_path):
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert (train extra) is not installed")
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "b0.wav", _speechlike(0.5, seed=1), SR)
    write_protocol([ProtocolEntry("A", "b0", "-", "bonafide")], tmp_path / "protocol.txt")
    r = subprocess.run([sys.executable, "-m", "edge_detector.cli", "vocode", "--protocol", str(tmp_path / "protocol.txt"),
                        "--audio-dir", str(audio), "--out", str(tmp_path / "voc"), "--vocoders", "lyra",
                        "--lyra-dir", str(audio)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Lyra model files missing" in r.stderr


def test_pair_aware_training_runs_and_pairs_share_crop_and_condition(tmp_path):
    from export.dataset import Corpus
    from export.rawnet2 import RawNet2, RawNet2Config
    from export.train import TrainConfig, Trainer

    rng = np.random.default_rng(0)
    sig = [_speechlike(4.2, seed=i) for i in range(3)]
    entries = [ProtocolEntry("A", f"b{i}", "-", "bonafide") for i in range(3)]
    entries += [ProtocolEntry("A", f"b{i}__voc-world", "copysyn_world", "spoof") for i in range(3)]
    signals = sig + [s * 0.5 for s in sig]  # a stand-in "copy": aligned, same length
    train = Corpus(entries, signals)
    pairs = pair_index(entries, {f"b{i}__voc-world": f"b{i}" for i in range(3)})
    cfg = TrainConfig(epochs=1, batch_size=6, pair_fraction=0.67, nonspeech_fraction=0.17, contrastive_weight=0.5,
                      steps_per_epoch=2, augment=False, class_weights=(0.5, 0.5), fft_frontend=True)
    model = RawNet2(RawNet2Config(sinc_filters=4, stage1_channels=4, stage2_channels=8, gru_hidden=8, gru_layers=1,
                                  fc1_dim=8))
    bank = [rng.standard_normal(70000).astype(np.float32) * 0.1]
    trainer = Trainer(model, train, train, tmp_path, cfg, pairs=pairs, nonspeech=bank, log=lambda s: None)
    crops, ys = trainer._pair_batch(BalancedSampler(entries, trainer.rng))
    assert len(crops) == 6 and ys[:4].tolist() == [1, 0, 1, 0] and ys[4] == 0
    np.testing.assert_allclose(crops[1], crops[0] * 0.5, atol=1e-7)  # same span of source and copy
    result = trainer.fit()
    assert result["epochs"] == 1 and np.isfinite(result["history"][0]["loss"])
    with pytest.raises(ValueError, match="vocoded pairs"):
        Trainer(model, train, train, tmp_path, TrainConfig(pair_fraction=0.5), log=lambda s: None)


def test_matched_couples_enter_the_batch_from_one_source_under_one_condition(tmp_path):
    from export.dataset import Corpus
    from export.rawnet2 import RawNet2, RawNet2Config
    from export.train import TrainConfig, Trainer

    # The LJ spoof is the LJ bona fide signal itself, shorter than a window: both crops are the
    # same tiled signal, so they come out identical exactly when they share one condition draw.
    voice = _speechlike(1.5, seed=1)
    entries = [ProtocolEntry("LJ", "b0", "-", "bonafide"), ProtocolEntry("LS_1", "b1", "-", "bonafide"),
               ProtocolEntry("LJ", "s0", "tacotron", "spoof"), ProtocolEntry("TTS", "s1", "espeak", "spoof")]
    signals = [voice, _speechlike(4.2, seed=2), voice.copy(), _speechlike(4.2, seed=3)]
    train = Corpus(entries, signals)
    augment = build_training_augment(False, True, seed=3)  # band limit and gain on a shared generator
    cfg = TrainConfig(epochs=1, batch_size=8, matched_fraction=0.5, steps_per_epoch=1, augment=False,
                      class_weights=(0.5, 0.5))
    model = RawNet2(RawNet2Config(sinc_filters=4, stage1_channels=4, stage2_channels=8, gru_hidden=8, gru_layers=1,
                                  fc1_dim=8))
    trainer = Trainer(model, train, train, tmp_path, cfg, augment_fn=augment, log=lambda s: None)
    crops, ys = trainer._pair_batch(BalancedSampler(entries, trainer.rng))
    assert len(crops) == 8 and ys[:4].tolist() == [1, 0, 1, 0]
    np.testing.assert_array_equal(crops[0], crops[1])  # couple 1: b0 with s0, one condition
    np.testing.assert_array_equal(crops[2], crops[3])  # couple 2
    assert not np.array_equal(crops[0], crops[2])  # the two couples drew different conditions
    assert np.isfinite(trainer.fit()["history"][0]["loss"])
    with pytest.raises(ValueError, match="must not exceed 1"):
        Trainer(model, train, train, tmp_path, TrainConfig(matched_fraction=0.6, nonspeech_fraction=0.5),
                nonspeech=[signals[0]], log=lambda s: None)
    no_match = Corpus([entries[1], entries[3]], [signals[1], signals[3]])
    with pytest.raises(ValueError, match="same source|source also has bona fide"):
        Trainer(model, no_match, train, tmp_path, TrainConfig(matched_fraction=0.5), log=lambda s: None)
