"""Decoding is bounded by what the window rule needs, never by what a header declares (issue 16 item 3).

* first-window rule: only the source frames the first 64 600 output samples depend on are
  decoded (about 4.04 s plus the resampler's half-width), and those samples equal a
  whole-file decode exactly, at any rate (also ratios that do not reduce) and channel count;
* a file whose header declares minutes of 8-channel 192 kHz audio is read in blocks of at most
  BLOCK_FRAMES frames, and only as far as needed;
* ``--windows all``: the whole file is decoded block by block and resampled as a stream,
  equal to a one-shot decode, and refused once the decoded length passes the limit.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_detector import audio
from edge_detector.audio import BLOCK_FRAMES, load_audio, to_mono_float
from edge_detector.errors import TooLongAudioError
from edge_detector.resample import resample

W = 64600
REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, seconds: float, rate: int, channels: int = 1, seed: int = 0, subtype: str = "PCM_16") -> Path:
    x = 0.3 * np.random.default_rng(seed).standard_normal((int(seconds * rate), channels))
    sf.write(str(path), x, rate, subtype=subtype)
    return path


class _ReadSpy:
    """Counts the frames soundfile is asked for (and the largest single request)."""

    def __init__(self, monkeypatch):
        self.total = 0
        self.largest = 0
        real = sf.SoundFile.read

        def read(f, frames=-1, *a, **k):
            assert frames > 0, "a read without a frame count decodes the whole file"
            self.total += frames
            self.largest = max(self.largest, frames)
            return real(f, frames, *a, **k)

        monkeypatch.setattr(sf.SoundFile, "read", read)


@pytest.mark.parametrize("rate,channels", [(8000, 1), (16000, 1), (44100, 2), (44101, 1), (48000, 2)])
def test_first_window_equals_the_whole_file_decode(rate, channels, tmp_path):
    path = _write(tmp_path / "x.wav", 5.0, rate, channels, seed=rate)
    whole = load_audio(path)
    first = load_audio(path, first_samples=W)
    assert whole.complete and not first.complete
    assert len(first.samples) == W
    np.testing.assert_array_equal(first.samples, whole.samples[:W])
    assert first.declared_seconds == pytest.approx(5.0)
    # and the whole file, block by block, equals one-shot decoding + resampling
    data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    np.testing.assert_array_equal(whole.samples, np.clip(resample(to_mono_float(data), rate, 16000), -1, 1))


def test_short_file_is_decoded_whole_under_the_first_window_rule(tmp_path):
    path = _write(tmp_path / "s.flac", 1.5, 22050, 2, subtype="PCM_24")
    d = load_audio(path, first_samples=W)
    assert d.complete and len(d.samples) == len(load_audio(path).samples) == 24000


def test_first_window_reads_only_what_it_needs(tmp_path, monkeypatch):
    rate = 48000
    path = _write(tmp_path / "long.wav", 60.0, rate, 2)
    spy = _ReadSpy(monkeypatch)
    d = load_audio(path, first_samples=W)
    assert len(d.samples) == W and not d.complete
    # W outputs at 1/3 of the rate + the filter half-width (~172 taps): ~4.05 s of 60 s
    assert W * 3 <= spy.total <= W * 3 + 400
    assert spy.largest <= BLOCK_FRAMES


def test_a_tiny_file_declaring_8_channels_at_192k_decodes_in_bounded_blocks(tmp_path, monkeypatch):
    """Issue 16: a small FLAC of near-silence declaring long 8-channel 192 kHz audio."""
    rate, channels, seconds = 192000, 8, 12.0
    path = tmp_path / "big.flac"
    with sf.SoundFile(str(path), "w", rate, channels, subtype="PCM_16") as f:
        block = np.zeros((rate, channels))
        for _ in range(int(seconds)):
            f.write(block)
    assert path.stat().st_size < 2_000_000  # compressed silence: small file, 30 M samples declared
    spy = _ReadSpy(monkeypatch)
    d = load_audio(path, first_samples=W)
    assert d.declared_seconds == pytest.approx(seconds) and not d.complete
    assert spy.total <= W * 12 + 800 and spy.largest <= BLOCK_FRAMES  # ~4.04 s of the 12 s


def test_windows_all_refuses_once_more_than_the_limit_was_decoded(tmp_path):
    """The limit holds on what is decoded, not only on the header's claim (checked before any decoding)."""
    path = _write(tmp_path / "l.wav", 3.0, 16000)
    with pytest.raises(TooLongAudioError):
        audio._decode_blocks(str(path), "l.wav", 16000, 16000, 2.0, None)
    samples, ended = audio._decode_blocks(str(path), "l.wav", 16000, 16000, 3.5, None)
    assert ended and len(samples) == 48000


def test_score_records_the_declared_duration_and_what_was_decoded(tmp_path):
    from audio_synth import speechlike

    x = np.concatenate([speechlike(4.0, sr=44100, seed=s) for s in range(3)])  # 12 s at 44.1 kHz
    path = tmp_path / "long.wav"
    sf.write(str(path), x, 44100)
    res = subprocess.run([sys.executable, "-m", "edge_detector.cli", "score", str(path)],
                         capture_output=True, text=True, timeout=300, cwd=str(REPO))
    rec = json.loads(res.stdout.strip().splitlines()[-1])
    assert rec["duration"] == pytest.approx(12.0, abs=1e-3)
    assert rec["decoded_seconds"] == pytest.approx(W / 16000)
    assert rec["source_rate"] == 44100 and len(rec["windows"]) == 1
