"""Decoding (edge_detector.audio): every format soundfile writes, bad files, limits.

Every file here is written with soundfile at test time; every check reads it back
through the one preprocessing the device and training use (`load_audio`).
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from edge_detector.audio import (
    MODEL_SAMPLE_RATE,
    SILENCE_PEAK,
    DecodedAudio,
    check_scorable,
    load_audio,
    prepare_array,
)
from edge_detector.errors import (
    AudioDecodeError,
    AudioError,
    EmptyAudioError,
    MissingFileError,
    NonFiniteAudioError,
    SilentAudioError,
    TooLongAudioError,
    TooShortAudioError,
)

SR = 16000


def tone(seconds: float = 1.0, sr: int = SR, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# --------------------------------------------------------------------------- formats

# subtype -> largest |decoded - written| allowed (one quantisation step of the format)
WAV_SUBTYPES = {
    "PCM_U8": 1 / 128,
    "PCM_16": 1 / 32768,
    "PCM_24": 1 / 2**23,
    "PCM_32": 1e-7,  # float32 output resolution, finer than the format
    "FLOAT": 0.0,
    "DOUBLE": 0.0,
}


@pytest.mark.parametrize("subtype", list(WAV_SUBTYPES))
def test_wav_subtypes_decode_to_float32_mono(tmp_path, subtype):
    x = tone()
    path = tmp_path / f"x_{subtype}.wav"
    sf.write(str(path), x, SR, subtype=subtype)
    d = load_audio(path)
    assert isinstance(d, DecodedAudio)
    assert d.samples.dtype == np.float32 and d.samples.ndim == 1
    assert d.sample_rate == MODEL_SAMPLE_RATE and d.source_rate == SR and d.source_channels == 1
    assert d.source_format == f"WAV/{subtype}"
    assert len(d.samples) == len(x)
    err = float(np.max(np.abs(d.samples - x)))
    assert err <= WAV_SUBTYPES[subtype] + 1e-9, (subtype, err)
    # Integer formats are scaled to [-1, 1] by value, not left as raw integers.
    assert 0.45 < float(np.max(np.abs(d.samples))) <= 0.5 + WAV_SUBTYPES[subtype]


def test_flac(tmp_path):
    x = tone(1.3)
    path = tmp_path / "x.flac"
    sf.write(str(path), x, SR, subtype="PCM_16")
    d = load_audio(path)
    assert d.source_format == "FLAC/PCM_16"
    assert len(d.samples) == len(x)
    assert np.max(np.abs(d.samples - x)) <= 1 / 32768 + 1e-9


def _best_correlation(a: np.ndarray, b: np.ndarray, max_lag: int) -> float:
    """Highest normalised correlation of a and b over lags (lossy codecs add delay)."""
    best = -1.0
    core = b[max_lag:-max_lag]
    for lag in range(-max_lag, max_lag + 1):
        seg = a[max_lag + lag : max_lag + lag + len(core)]
        if len(seg) != len(core):
            continue
        best = max(best, float(np.corrcoef(seg, core)[0, 1]))
    return best


def test_ogg_vorbis(tmp_path):
    x = tone(1.5, amp=0.4)
    path = tmp_path / "x.ogg"
    sf.write(str(path), x, SR, format="OGG", subtype="VORBIS")
    d = load_audio(path)
    assert d.source_format == "OGG/VORBIS"
    assert abs(len(d.samples) - len(x)) <= 2048
    n = min(len(d.samples), len(x))
    assert _best_correlation(d.samples[:n], x[:n], 64) > 0.99


def test_mp3(tmp_path):
    if "MP3" not in sf.available_formats():
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} has no MP3 support")
    x = tone(1.5, amp=0.4)
    path = tmp_path / "x.mp3"
    try:
        sf.write(str(path), x, SR, format="MP3", subtype="MPEG_LAYER_III")
    except Exception as exc:  # pragma: no cover - depends on the libsndfile build
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} cannot write MP3: {exc}")
    d = load_audio(path)
    assert d.source_format.startswith("MP3/")
    assert abs(len(d.samples) - len(x)) <= 2 * 1152  # at most two MPEG frames of delay/padding
    n = min(len(d.samples), len(x))
    assert _best_correlation(d.samples[:n], x[:n], 1200) > 0.95


def test_six_channels_mix_to_channel_mean(tmp_path):
    n = SR
    t = np.arange(n) / SR
    chans = np.stack([0.3 * np.sin(2 * np.pi * f * t) for f in (200, 300, 500, 700, 1100, 1300)], axis=1)
    chans[:, 5] += 0.2  # a DC offset on one channel: the mean must carry it too
    chans = chans.astype(np.float32)
    path = tmp_path / "six.wav"
    sf.write(str(path), chans, SR, subtype="FLOAT")
    d = load_audio(path)
    assert d.source_channels == 6
    expected = chans.astype(np.float64).mean(axis=1)
    np.testing.assert_allclose(d.samples, expected, atol=1e-6)
    # not just the first channel
    assert np.max(np.abs(d.samples - chans[:, 0])) > 0.1


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampled_to_16k_with_correct_length(tmp_path, rate):
    seconds = 1.25
    x = tone(seconds, sr=rate, freq=1000.0, amp=0.5)
    path = tmp_path / f"r{rate}.wav"
    sf.write(str(path), x, rate, subtype="PCM_16")
    d = load_audio(path)
    assert d.source_rate == rate and d.sample_rate == SR
    assert len(d.samples) == int(np.ceil(len(x) * SR / rate))
    assert len(d.samples) == 20000  # 1.25 s at 16 kHz
    # The tone keeps its frequency, amplitude and phase (zero-delay resampler).
    ref = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(len(d.samples)) / SR)
    mid = slice(400, -400)
    assert np.max(np.abs(d.samples[mid] - ref[mid])) < 2e-3


def test_float_beyond_full_scale_is_clipped(tmp_path):
    x = tone(1.0, amp=0.5)
    x[1000:1100] = 1.7
    x[2000:2100] = -2.5
    path = tmp_path / "hot.wav"
    sf.write(str(path), x, SR, subtype="FLOAT")
    d = load_audio(path)
    assert float(d.samples.max()) == 1.0 and float(d.samples.min()) == -1.0
    np.testing.assert_array_equal(d.samples[1000:1100], 1.0)
    np.testing.assert_array_equal(d.samples[2000:2100], -1.0)
    np.testing.assert_array_equal(d.samples[:1000], x[:1000])  # in-range samples untouched


def test_full_scale_square_at_44k1_stays_in_range_after_resampling(tmp_path):
    """Resampling a full-scale square wave overshoots (Gibbs); the output is still in [-1, 1]."""
    sr = 44100
    t = np.arange(sr) / sr
    x = np.sign(np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    path = tmp_path / "square.wav"
    sf.write(str(path), x, sr, subtype="FLOAT")
    d = load_audio(path)
    assert float(np.max(np.abs(d.samples))) <= 1.0
    assert float(np.max(np.abs(d.samples))) > 0.99


# --------------------------------------------------------------------------- bad files


def test_missing_file(tmp_path):
    with pytest.raises(MissingFileError, match="no such file"):
        load_audio(tmp_path / "nope.wav")


def test_directory(tmp_path):
    (tmp_path / "d.wav").mkdir()
    with pytest.raises(AudioDecodeError, match="directory"):
        load_audio(tmp_path / "d.wav")


def test_garbage_bytes_named_wav(tmp_path):
    path = tmp_path / "garbage.wav"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioDecodeError) as info:
        load_audio(path)
    assert "garbage.wav" in str(info.value) and "\n" not in str(info.value)


def test_text_file_named_wav(tmp_path):
    path = tmp_path / "readme.wav"
    path.write_text("this is not audio\n" * 100)
    with pytest.raises(AudioDecodeError):
        load_audio(path)


def test_truncated_wav_decodes_what_is_there(tmp_path):
    """The header claims 1 s; half the data is gone. libsndfile 1.2 reads the frames that
    exist: we must return exactly those (or refuse with AudioDecodeError), never crash."""
    x = tone(1.0)
    full = tmp_path / "full.wav"
    sf.write(str(full), x, SR, subtype="PCM_16")
    reference = load_audio(full).samples
    raw = full.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(raw[: len(raw) // 2 + 1])  # odd cut: half a sample at the end
    try:
        d = load_audio(cut)
    except AudioDecodeError:
        return
    assert 0 < len(d.samples) < len(reference)
    np.testing.assert_array_equal(d.samples, reference[: len(d.samples)])
    assert len(d.samples) >= (len(raw) // 2 - 44) // 2 - 1


@pytest.mark.parametrize("keep", [0, 10, 30, 44, 45, 46, 100, 1001])
def test_truncated_at_any_point_never_crashes(tmp_path, keep):
    x = tone(0.2)
    full = tmp_path / "full.wav"
    sf.write(str(full), x, SR, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[:keep])
    try:
        d = load_audio(cut)
    except AudioError as exc:
        assert str(exc).startswith(str(cut))
    else:
        assert d.samples.dtype == np.float32 and len(d.samples) > 0


def test_zero_byte_file(tmp_path):
    path = tmp_path / "zero.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioDecodeError):
        load_audio(path)


def test_valid_header_with_no_frames(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(str(path), np.zeros(0, np.float32), SR, subtype="PCM_16")
    with pytest.raises(EmptyAudioError, match="no samples"):
        load_audio(path)


@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path, subtype, bad):
    x = tone(1.0)
    x[1234] = bad
    path = tmp_path / "nonfinite.wav"
    sf.write(str(path), x, SR, subtype=subtype)
    with pytest.raises(NonFiniteAudioError, match="nonfinite.wav"):
        load_audio(path)


def test_too_long_is_refused_before_reading(tmp_path):
    """700 s at 8 kHz: the header says it is too long, so nothing is decoded.

    Reading it would allocate >= 22 MB of float32 (plus the resampled copy); the refusal
    must cost next to no memory.
    """
    path = tmp_path / "long.wav"
    n = 700 * 8000
    x = np.zeros(n, np.float32)
    x[::50] = 0.1
    sf.write(str(path), x, 8000, subtype="PCM_U8")
    del x
    tracemalloc.start()
    try:
        with pytest.raises(TooLongAudioError, match="600 s limit"):
            load_audio(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, f"peak {peak} bytes: the file was read before being refused"


def test_max_seconds_argument(tmp_path):
    path = tmp_path / "two.wav"
    sf.write(str(path), tone(2.0), SR)
    with pytest.raises(TooLongAudioError):
        load_audio(path, max_seconds=1.0)
    assert len(load_audio(path, max_seconds=3.0).samples) == 2 * SR


# --------------------------------------------------------------------------- check_scorable


def test_check_scorable_all_zero_is_silent():
    with pytest.raises(SilentAudioError):
        check_scorable(np.zeros(SR, np.float32), SR, 0.5, name="z")


def test_check_scorable_below_silence_peak_is_silent():
    with pytest.raises(SilentAudioError):
        check_scorable(np.full(SR, SILENCE_PEAK / 2, np.float32), SR, 0.5)


def test_check_scorable_too_short():
    x = tone(0.49)
    with pytest.raises(TooShortAudioError, match="0.49 s"):
        check_scorable(x, SR, 0.5)
    check_scorable(tone(0.5), SR, 0.5)  # exactly the minimum is fine


def test_check_scorable_empty():
    with pytest.raises(EmptyAudioError):
        check_scorable(np.zeros(0, np.float32), SR, 0.5)


def test_silent_file_decodes_but_is_not_scorable(tmp_path):
    path = tmp_path / "silent.wav"
    sf.write(str(path), np.zeros(SR, np.float32), SR, subtype="PCM_16")
    d = load_audio(path)
    with pytest.raises(SilentAudioError):
        check_scorable(d.samples, d.sample_rate, 0.5)


# --------------------------------------------------------------------------- prepare_array


def test_prepare_array_matches_the_file_path(tmp_path):
    x = tone(1.0, sr=44100, freq=700.0)
    path = tmp_path / "x.wav"
    sf.write(str(path), x, 44100, subtype="FLOAT")
    np.testing.assert_array_equal(prepare_array(x, 44100), load_audio(path).samples)


def test_prepare_array_integer_inputs_are_scaled_by_value():
    x = np.array([0, 16384, -32768, 32767], np.int16)
    np.testing.assert_allclose(prepare_array(x, SR), [0.0, 0.5, -1.0, 32767 / 32768], atol=1e-7)
    # unsigned 8-bit audio is centred on 128 (as in 8-bit WAV)
    u = np.array([128, 192, 0, 255], np.uint8)
    np.testing.assert_allclose(prepare_array(u, SR), [0.0, 0.5, -1.0, 127 / 128], atol=1e-7)


def test_prepare_array_integer_channels_are_scaled_then_mixed():
    stereo = np.array([[16384, -16384], [32767, 32767], [-32768, 0]], np.int16)
    np.testing.assert_allclose(prepare_array(stereo, SR), [0.0, 32767 / 32768, -0.5], atol=1e-7)


def test_prepare_array_six_channels_at_48k():
    x = np.stack([tone(1.0, sr=48000, freq=1000.0, amp=0.1 * (k + 1)) for k in range(6)], axis=1)
    y = prepare_array(x, 48000)
    assert y.shape == (SR,) and y.dtype == np.float32
    ref = 0.35 * np.sin(2 * np.pi * 1000.0 * np.arange(SR) / SR)  # mean of the amplitudes
    assert np.max(np.abs(y[400:-400] - ref[400:-400])) < 1e-3


def test_prepare_array_rejects_bad_input():
    with pytest.raises(NonFiniteAudioError):
        prepare_array(np.array([0.0, np.nan, 0.1]), SR)
    with pytest.raises(EmptyAudioError):
        prepare_array(np.zeros(0), SR)
    with pytest.raises(AudioDecodeError):
        prepare_array(np.zeros(10), 0)
    with pytest.raises(AudioDecodeError):
        prepare_array(np.zeros((2, 2, 2)), SR)
