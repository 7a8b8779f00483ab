"""VAD, ring buffer, streaming resampler and the listen decision rule, with arrays only (no PortAudio)."""
from __future__ import annotations

import numpy as np
import pytest

from audio_synth import speechlike
from edge_detector.detector import ACCEPT, REJECT, UNCERTAIN, decide
from edge_detector.resample import resample
from edge_detector.stream import DecisionLatch, GatePolicy, RingBuffer, StreamGate, StreamResampler
from edge_detector.vad import EnergyVAD, VadConfig, frame_db
from edge_detector.windows import WindowRule, combine_scores, make_windows

SR = 16000


def noise(seconds: float, dbfs: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * SR)) * 10 ** (dbfs / 20)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SR)), np.float32)


def fake_scorer(calls: list):
    """A deterministic stand-in for the model: depends on every sample of the window."""

    def score(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        b = np.asarray(batch, dtype=np.float64)
        return (b * np.linspace(-1, 1, b.shape[1])).sum(axis=1) / 100.0 + b.std(axis=1)

    return score


def make_gate(window: float = 1.0, hop: float = 0.5, mode: str = "all", combine: str = "mean", calls=None,
              accept: float = 0.0, reject: float = 0.0, **policy) -> StreamGate:
    rule = WindowRule(window=int(window * SR), hop=int(hop * SR), mode=mode, combine=combine)
    return StreamGate(fake_scorer(calls if calls is not None else []), lambda s: 2.0 * s + 0.1, accept, reject, rule,
                      sample_rate=SR, policy=GatePolicy(**policy))


def feed_chunks(gate: StreamGate, x: np.ndarray, sizes=(800,)) -> list:
    out, i, k = [], 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        out += gate.feed(x[i : i + n])
        i, k = i + n, k + 1
    return out


def expected_score(gate: StreamGate, seg: np.ndarray) -> float:
    """What `score` computes on the same audio: make_windows + combine + calibrate."""
    batch, _ = make_windows(seg, gate.rule)
    return combine_scores(fake_scorer([])(batch), gate.rule.combine)


# ---------------------------------------------------------------------------------------------
# VAD


def test_vad_speech_silence_and_stationary_noise():
    flags = EnergyVAD(SR).label(speechlike(3.0, seed=1))
    assert flags.mean() > 0.6, flags.mean()
    assert not EnergyVAD(SR).label(silence(3.0)).any()
    # Loud stationary noise sets its own floor: never speech, even right at the start.
    assert EnergyVAD(SR).label(noise(3.0, -30.0)).mean() < 0.02
    # Quiet noise, then speech: only the speech part is labelled.
    x = np.concatenate([noise(1.5, -60.0, seed=2), speechlike(2.0, seed=3) + noise(2.0, -60.0, seed=4)])
    flags = EnergyVAD(SR).label(x)
    n1 = int(1.5 * SR) // 320
    assert not flags[:n1].any()
    assert flags[n1:].mean() > 0.6
    # Speech over a steady -40 dBFS background still counts (floor adapts to the room).
    y = np.concatenate([noise(1.0, -40.0, seed=5), speechlike(2.0, seed=6) + noise(2.0, -40.0, seed=7)])
    flags = EnergyVAD(SR).label(y)
    assert flags[: SR // 320].mean() < 0.05 and flags[SR // 320 :].mean() > 0.4


def test_vad_hangover_bridges_pauses_and_reports_the_end():
    vad = EnergyVAD(SR, VadConfig(hangover_s=0.3))
    x = np.concatenate([speechlike(1.0, seed=1), silence(0.1), speechlike(1.0, seed=2), silence(1.0)])
    events = [vad.process(x[i : i + 320]) for i in range(0, len(x) - 319, 320)]
    onsets = [e.index for e in events if e.onset]
    ends = [e for e in events if e.ended]
    assert len(onsets) == 1, "a 0.1 s pause must be bridged by the 0.3 s hangover"
    assert len(ends) == 1
    end = ends[0]
    assert end.index - end.last_loud == vad.hangover_frames + 1
    assert abs((end.last_loud + 1) * 320 / SR - 2.1) < 0.1  # the speech ends at 2.1 s
    assert frame_db(np.zeros(320)) == -200.0
    assert abs(frame_db(np.full(320, 0.5)) - 20 * np.log10(0.5)) < 1e-9


# ---------------------------------------------------------------------------------------------
# ring buffer and resampler


def test_ring_buffer_wraparound():
    rng = np.random.default_rng(0)
    ring = RingBuffer(1000)
    written = []
    for n in [300, 450, 999, 1, 2500, 77, 640, 1000, 13]:
        x = rng.standard_normal(n).astype(np.float32)
        ring.write(x)
        written.append(x)
        allx = np.concatenate(written)
        assert ring.total == len(allx)
        lo = ring.oldest
        assert lo == max(0, len(allx) - 1000)
        np.testing.assert_array_equal(ring.read(lo, len(allx)), allx[lo:])
        mid = (lo + len(allx)) // 2
        np.testing.assert_array_equal(ring.read(mid, mid + 10), allx[mid : mid + 10])
    with pytest.raises(ValueError):
        ring.read(ring.oldest - 1, ring.total)
    with pytest.raises(ValueError):
        ring.read(ring.total - 5, ring.total + 1)


@pytest.mark.parametrize("orig", [48000, 44100, 8000, 16000])
def test_stream_resampler_equals_offline(orig):
    """Device at 48 kHz (or 44.1 / 8 kHz) → 16 kHz in chunks == resample() on the whole signal."""
    rng = np.random.default_rng(orig)
    x = (0.3 * speechlike(1.3, sr=orig, seed=1) + 0.01 * rng.standard_normal(int(round(1.3 * orig)))).astype(np.float32)
    rs = StreamResampler(orig, SR)
    parts, i = [], 0
    for n in rng.integers(1, 3000, size=10_000):
        if i >= len(x):
            break
        parts.append(rs.push(x[i : i + n]))
        i += n
    parts.append(rs.flush())
    y = np.concatenate(parts)
    ref = resample(x, orig, SR)
    assert len(y) == len(ref)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-6)
    if orig != SR:
        assert 0 < rs.delay_seconds < 0.02


# ---------------------------------------------------------------------------------------------
# decisions


def test_two_thresholds_and_hysteresis_latch():
    assert decide(1.0, 1.0, -1.0) == ACCEPT
    assert decide(0.999, 1.0, -1.0) == UNCERTAIN
    assert decide(-1.0, 1.0, -1.0) == UNCERTAIN
    assert decide(-1.001, 1.0, -1.0) == REJECT
    assert decide(float("nan"), 1.0, -1.0) == REJECT
    latch = DecisionLatch(accept=1.0, reject=-1.0)
    seq = [0.0, 2.0, 0.0, -0.5, -2.0, 0.5, 0.99, 1.0, -1.0]
    states = [latch.update(v) for v in seq]
    assert states == [UNCERTAIN, ACCEPT, ACCEPT, ACCEPT, REJECT, REJECT, REJECT, ACCEPT, ACCEPT]
    with pytest.raises(ValueError):
        DecisionLatch(accept=0.0, reject=1.0)


def test_gate_decides_at_end_of_speech_like_score_on_the_segment():
    x = np.concatenate([silence(0.8), speechlike(2.0, seed=1), silence(1.5)])
    gate = make_gate(window=1.0, hop=0.5, mode="all", min_speech=1.0, preroll=0.5, max_windows=8)
    ds = feed_chunks(gate, x, sizes=(800, 317, 2400))
    assert len(ds) == 1
    d = ds[0]
    assert d.trigger == "end_of_speech"
    assert 0.3 * SR <= d.start <= 0.45 * SR  # 0.5 s pre-roll before the first speech frame (0.8 s or just after)
    assert d.start % 320 == 0
    assert abs(d.speech_end / SR - 2.8) < 0.1
    assert 0.3 <= (d.end - d.speech_end) / SR <= 0.36  # hangover + one frame
    seg = x[d.start : d.end]
    assert d.score == pytest.approx(expected_score(gate, seg), abs=1e-9)
    assert d.llr == pytest.approx(2.0 * d.score + 0.1)
    starts = [w[0] - d.start for w in d.windows]
    assert starts == make_windows(seg, gate.rule)[1]
    assert gate.finish() is None  # nothing left


def test_gate_needs_min_speech_and_never_decides_on_silence_or_noise():
    gate = make_gate(min_speech=1.5)
    bursts = np.concatenate([np.concatenate([speechlike(0.3, seed=i), silence(2.0)]) for i in range(4)])
    assert feed_chunks(gate, bursts) == []  # 0.3 s bursts never add up within one segment
    assert gate.finish() is None
    for x in (silence(5.0), noise(5.0, -30.0)):
        g = make_gate(min_speech=0.5)
        assert feed_chunks(g, x) == []
        assert g.finish() is None


def test_short_utterance_extends_back_to_one_full_window():
    x = np.concatenate([silence(5.0), speechlike(0.8, seed=2), silence(1.0)])
    gate = make_gate(window=3.0, hop=1.5, mode="first", min_speech=0.5)
    (d,) = feed_chunks(gate, x)
    assert d.end - d.start == 3 * SR  # one full window ending at the trigger
    assert d.trigger == "end_of_speech"
    assert d.score == pytest.approx(expected_score(gate, x[d.start : d.end]), abs=1e-9)


def test_young_stream_waits_for_the_first_window():
    x = np.concatenate([silence(0.1), speechlike(1.5, seed=4), silence(4.0)])
    gate = make_gate(window=4.0, hop=2.0, mode="first", min_speech=1.0)
    (d,) = feed_chunks(gate, x)
    assert (d.start, d.end) == (0, 4 * SR)
    assert d.trigger == "end_of_speech"
    assert d.score == pytest.approx(expected_score(gate, x[: 4 * SR]), abs=1e-9)


def test_long_speech_decides_at_max_length_with_prescored_windows():
    calls: list = []
    x = speechlike(7.0, seed=5)
    gate = make_gate(window=1.0, hop=0.5, mode="all", combine="min", calls=calls, min_speech=0.5, max_windows=3,
                     preroll=0.0)
    ds = feed_chunks(gate, x, sizes=(1600,))
    assert len(ds) >= 3
    for a, b in zip(ds, ds[1:]):
        assert b.start == a.end  # continuous mode: contiguous segments
    for d in ds:
        assert d.trigger == "max_length"
        assert d.end - d.start == 2 * SR  # window + 2 hops
        assert len(d.windows) == 3 and d.combine == "min"
        assert d.score == pytest.approx(expected_score(gate, x[d.start : d.end]), abs=1e-9)
    # Windows are scored one at a time as they complete (only the one ending at the trigger
    # is left for the decision), and none twice.
    assert all(n == 1 for n in calls)
    assert 3 * len(ds) <= sum(calls) <= 3 * (len(ds) + 1)


def test_chunking_does_not_change_decisions():
    x = np.concatenate([silence(0.5), speechlike(2.5, seed=7), silence(1.0), speechlike(2.0, seed=8), silence(1.0)])
    runs = []
    for sizes in [(320,), (1, 999, 4096), (len(x),)]:
        g = make_gate(window=1.0, hop=0.5, mode="all", min_speech=1.0, max_windows=8)
        runs.append([(d.start, d.end, round(d.score, 12), d.decision) for d in feed_chunks(g, x, sizes=sizes)])
    assert len(runs[0]) == 2
    assert runs[0] == runs[1] == runs[2]


def test_timeout_decides_on_enough_speech_else_nothing():
    gate = make_gate(window=1.0, hop=0.5, mode="all", min_speech=1.0, max_windows=8)
    x = np.concatenate([silence(0.3), speechlike(1.6, seed=9)])
    assert feed_chunks(gate, x) == []  # still speaking, segment not at its longest
    d = gate.finish()
    assert d is not None and d.trigger == "timeout"
    assert d.end == len(x) // 320 * 320
    assert d.score == pytest.approx(expected_score(gate, x[d.start : d.end]), abs=1e-9)
    g2 = make_gate(min_speech=1.0)
    feed_chunks(g2, np.concatenate([silence(0.3), speechlike(0.5, seed=9), silence(0.5)]))
    assert g2.finish() is None


def test_band_gives_uncertain_and_latch_holds():
    x = np.concatenate([silence(0.5), speechlike(2.0, seed=1), silence(1.0)])
    probe = make_gate(window=1.0, hop=0.5, min_speech=1.0)
    (d0,) = feed_chunks(probe, x)
    gate = make_gate(window=1.0, hop=0.5, min_speech=1.0, accept=d0.llr + 1.0, reject=d0.llr - 1.0)
    gate.latch.state = ACCEPT
    (d,) = feed_chunks(gate, x)
    assert d.decision == UNCERTAIN and d.state == ACCEPT
    gate = make_gate(window=1.0, hop=0.5, min_speech=1.0, accept=d0.llr + 2.0, reject=d0.llr + 1.0)
    (d,) = feed_chunks(gate, x)
    assert d.decision == REJECT and d.state == REJECT


def test_gate_matches_detector_on_the_tiny_bundle(tiny_bundle):
    """Real model, windows 'all': the gate's score equals Detector.score_samples on the segment."""
    from edge_detector.detector import Detector
    from edge_detector.session import SessionSettings

    det = Detector(tiny_bundle, SessionSettings(intra_op_threads=1))
    gate = StreamGate.from_detector(det, GatePolicy(min_speech=1.0, mode="all"))
    x = np.concatenate([silence(0.4), speechlike(5.0, seed=11), silence(1.0)])
    (d,) = feed_chunks(gate, x, sizes=(800,))
    seg = x[d.start : d.end]
    ref = det.score_samples(seg, windows="all")
    assert len(d.windows) == len(ref.windows) == 2
    assert d.score == pytest.approx(ref.score, abs=1e-5)
    assert d.llr == pytest.approx(ref.calibrated, abs=1e-5)
    assert d.decision == ref.decision
