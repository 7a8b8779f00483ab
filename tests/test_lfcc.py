"""LFCC front end (edge_detector/lfcc.py) against an independent scipy computation and hand-checked cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from audio_synth import speechlike
from edge_detector.errors import BundleError
from edge_detector.lfcc import LFCCFrontEnd, LFCCSpec, deltas

scipy_fft = pytest.importorskip("scipy.fft")
scipy_signal = pytest.importorskip("scipy.signal")


def reference_lfcc(x: np.ndarray) -> np.ndarray:
    """The baseline's recipe written independently: scipy window, FFT, DCT and lfilter deltas."""
    frame, hop, nfft, nfilt, hi, ncep, fs = 480, 240, 1024, 70, 4000.0, 20, 16000
    n_frames = math.ceil((len(x) - (frame - hop)) / hop)
    padded = np.zeros((n_frames - 1) * hop + frame)
    padded[: len(x)] = x
    frames = np.stack([padded[i * hop : i * hop + frame] for i in range(n_frames)])
    win = scipy_signal.get_window("hamming", frame, fftbins=False)
    power = np.abs(scipy_fft.rfft(frames * win, n=nfft, axis=1)) ** 2
    freqs = np.arange(nfft // 2 + 1) * fs / nfft
    used = freqs <= hi
    edges = np.linspace(0.0, hi, nfilt + 2)
    bank = np.stack([np.interp(freqs[used], edges[i : i + 3], [0.0, 1.0, 0.0], left=0.0, right=0.0)
                     for i in range(nfilt)], axis=1)
    logfb = np.log10(power[:, used] @ bank + np.finfo(float).eps)
    cep = scipy_fft.dct(logfb, type=2, norm="ortho", axis=1)[:, :ncep]

    def delta(c):  # HTK, +-1 frame, replicated edges: (c[t+1] - c[t-1]) / 2 via a FIR filter
        xx = np.concatenate([c[:1], c, c[-1:]])
        return scipy_signal.lfilter([1.0, 0.0, -1.0], [1.0], xx, axis=0)[2:] / 2.0

    d = delta(cep)
    return np.concatenate([cep, d, delta(d)], axis=1)


@pytest.mark.parametrize("n", [64600, 16000, 7777])
def test_matches_an_independent_scipy_computation(n):
    x = speechlike(n / 16000 + 0.01, seed=n)[:n].astype(np.float32)
    ours = LFCCFrontEnd(LFCCSpec())(x)
    ref = reference_lfcc(x.astype(np.float64))
    assert ours.shape == ref.shape == (math.ceil((n - 240) / 240), 60)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)


def test_frame_count_follows_matlab_buffer_nodelay():
    spec = LFCCSpec()
    # 30 ms frames every 15 ms; an incomplete last frame is kept, zero-padded
    assert [spec.n_frames(n) for n in (480, 719, 720, 721, 64600)] == [1, 2, 2, 3, 269]


def test_silence_gives_the_log_floor_in_c0_and_zeros_elsewhere():
    # log10(eps) in every filter: the orthonormal DCT puts sqrt(70) * log10(2.220446e-16) in c0
    feats = LFCCFrontEnd(LFCCSpec())(np.zeros(4800, np.float32))
    assert feats.shape == (19, 60)
    assert feats[:, 0] == pytest.approx(-130.96708, abs=1e-4)  # 8.3666003 * -15.6535598
    assert np.abs(feats[:, 1:]).max() < 1e-9


def test_deltas_of_a_ramp_by_hand():
    # c[t] = t: interior deltas (t+1 - (t-1)) / 2 = 1; replicated edges give 1/2
    ramp = np.arange(5, dtype=float)[:, None]
    assert deltas(ramp, 1)[:, 0].tolist() == [0.5, 1.0, 1.0, 1.0, 0.5]


def test_energy_lands_in_the_filter_centred_on_a_tone():
    # filter i peaks at edge i + 1 = (i + 1) * 4000 / 71 Hz; a tone there dominates that filter
    fe = LFCCFrontEnd(LFCCSpec())
    f0 = 11 * 4000 / 71
    t = np.arange(4800) / 16000
    frames = fe.frames(np.sin(2 * np.pi * f0 * t))
    power = np.abs(np.fft.rfft(frames * fe.window, n=1024, axis=1)) ** 2
    energies = power[:, : fe.bank.shape[0]] @ fe.bank
    assert int(np.argmax(energies[5])) == 10


def test_bad_parameters_are_refused():
    with pytest.raises(BundleError, match="cepstra 80 exceeds"):
        LFCCSpec(cepstra=80)
    with pytest.raises(BundleError, match="band"):
        LFCCSpec(high_hz=9000.0)
    with pytest.raises(BundleError, match="lacks"):
        LFCCSpec.from_manifest({"type": "lfcc-numpy", "sample_rate": 16000})
