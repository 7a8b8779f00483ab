"""Microphone path: a fake `pyaudio` for the edge cases, real PortAudio virtual devices for the rest.

Real-device tests (marked ``mic``) use no sound card (DESIGN.md section 6):

* the ALSA ``file`` plugin (deterministic, bit-exact, not paced): a known recording in
  → the same score and decision as `edge-detect score` on the same audio;
* one real-time test through a private PulseAudio daemon's null sink, fed by ``paplay``.

`edge-detect` runs in a subprocess with HOME pointing at the test's ``.asoundrc``
(PortAudio reads the ALSA configuration when it initialises).
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from audio_synth import speechlike
from conftest import set_thresholds
from fake_pyaudio import FakeDevice, FakeModule, paInputOverflow
from virtual_audio import (PulseServer, alsa_file_device, edge_detect, pulse_missing, read_raw, subprocess_env,
                           write_raw)

from edge_detector.errors import ExitCode, MicrophoneFailedError, MissingExtraError, NoMicrophoneError
from edge_detector.mic import CaptureConfig, DeviceNotFoundError, InputDevice, Microphone, find_device, import_pyaudio
from edge_detector.resample import resample

SR = 16000
PCM = "edgetest"


# =============================================================================================
# Without PortAudio: a fake pyaudio module


def test_missing_pyaudio_names_the_extra_and_the_pi_packages(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyaudio", None)  # makes `import pyaudio` raise ImportError
    with pytest.raises(MissingExtraError) as exc:
        import_pyaudio()
    msg = str(exc.value)
    assert "pip install 'edge-detector[mic]'" in msg
    assert "portaudio19-dev" in msg and "python3-pyaudio" in msg
    assert exc.value.exit_code == ExitCode.MISSING_EXTRA


def test_listen_without_pyaudio_exits_with_missing_extra(monkeypatch, tiny_bundle):
    from click.testing import CliRunner

    from edge_detector.cli import main

    monkeypatch.setitem(sys.modules, "pyaudio", None)
    res = CliRunner().invoke(main, ["listen", "--bundle", str(tiny_bundle), "--once"])
    assert res.exit_code == ExitCode.MISSING_EXTRA, res.output
    assert "edge-detector[mic]" in res.output


def test_listen_help_states_the_window_rule():
    from click.testing import CliRunner

    from edge_detector.cli import main

    res = CliRunner().invoke(main, ["listen", "--help"])
    text = " ".join(res.output.split())
    assert res.exit_code == 0
    assert "--min-speech seconds of speech" in text and "combined by the bundle's rule" in text
    assert "0 only on accept" in text and "11 no speech" in text and "130 interrupted" in text


def _devices() -> list[InputDevice]:
    return [InputDevice(0, "HDA Intel PCH: ALC892 Analog (hw:0,0)", "ALSA", 2, 44100),
            InputDevice(3, "USB PnP Sound Device: Audio (hw:1,0)", "ALSA", 1, 48000),
            InputDevice(5, "pulse", "ALSA", 32, 44100, is_default=True),
            InputDevice(6, "pulse_monitor", "ALSA", 32, 44100)]


def test_find_device_by_index_name_and_substring():
    devs = _devices()
    assert find_device(devs, None).name == "pulse"
    assert find_device(devs, "3").index == 3
    assert find_device(devs, 5).name == "pulse"
    assert find_device(devs, "PULSE").index == 5  # exact (case-insensitive) beats substring
    assert find_device(devs, "usb").index == 3
    assert find_device(devs, "hw:0,0").index == 0
    for spec, text in [("7", "no input device with index 7"), ("webcam", "no input device named 'webcam'"),
                       ("ALSA", "no input device named"), ("hw:", "ambiguous")]:
        with pytest.raises(DeviceNotFoundError) as exc:
            find_device(devs, spec)
        assert text in str(exc.value)
        assert exc.value.exit_code == ExitCode.NO_MICROPHONE
        assert len(exc.value.devices) == 4
    with pytest.raises(NoMicrophoneError, match="no audio input device"):
        find_device([], None)
    with pytest.raises(NoMicrophoneError, match="no default input"):
        find_device([d for d in devs if not d.is_default], None)


def _drain(mic: Microphone) -> list:
    out = []
    while True:
        c = mic.read(timeout=0.01)
        if c is None:
            return out
        out.append(c)


def test_device_without_16k_is_opened_at_its_rate_and_resampled():
    """A device that only runs at 48 kHz: capture at 48 kHz, resample in numpy == offline resample."""
    fake = FakeModule([FakeDevice("mic48", default_rate=48000, rates=(44100, 48000))])
    x = 0.5 * speechlike(1.0, sr=48000, seed=3)
    pcm = np.round(x * 32767).astype("<i2")
    with Microphone("mic48", 16000, pyaudio_module=fake.as_module()) as mic:
        assert (mic.rate, mic.channels) == (48000, 1)
        assert mic.buffer_frames == 2400  # 50 ms
        stream = fake.streams[0]
        for i in range(0, len(pcm), 2400):
            stream.deliver(pcm[i : i + 2400])
        chunks = _drain(mic)
        y = np.concatenate([c.samples for c in chunks] + [mic.resampler.flush()])
    ref = resample(pcm.astype(np.float64) / 32768.0, 48000, 16000)
    assert len(y) == len(ref) == 16000
    np.testing.assert_allclose(y, ref, atol=1e-6)
    assert stream.closed


def test_stereo_only_device_is_mixed_to_mono_and_16k_preferred():
    fake = FakeModule([FakeDevice("stereo", max_input_channels=2, default_rate=44100, rates=(16000, 44100),
                                  channels=(2,))])
    left = np.full(1600, 1000, "<i2")
    right = np.full(1600, 3000, "<i2")
    with Microphone(None, 16000, pyaudio_module=fake.as_module()) as mic:
        assert (mic.rate, mic.channels) == (16000, 2)
        fake.streams[0].deliver(np.stack([left, right], axis=1))
        (chunk,) = _drain(mic)
    np.testing.assert_allclose(chunk.samples, 2000 / 32768.0, rtol=1e-6)


def test_overflow_flags_are_counted_and_never_fatal():
    fake = FakeModule([FakeDevice("m", default_rate=16000, rates=(16000,))])
    cfg = CaptureConfig(buffer_frames=160, queue_seconds=0.05)  # room for 5 chunks
    with Microphone("m", 16000, cfg, pyaudio_module=fake.as_module()) as mic:
        s = fake.streams[0]
        flags = [0, paInputOverflow, 0, paInputOverflow | 1, paInputOverflow]
        for f in flags:
            assert s.deliver(np.zeros(160, "<i2"), status=f) == (None, 0)  # paContinue every time
        assert mic.overflows == 3
        got = _drain(mic)
        assert [c.status & paInputOverflow for c in got] == [f & paInputOverflow for f in flags]
        for _ in range(8):  # main thread "stuck": the queue fills, extra chunks are dropped and counted
            s.deliver(np.zeros(160, "<i2"), status=paInputOverflow)
        assert mic.overflows == 11
        assert mic.dropped_frames == 3 * 160
        assert len(_drain(mic)) == 5


def test_stream_that_stops_is_a_microphone_failure():
    fake = FakeModule([FakeDevice("m", default_rate=16000, rates=(16000,))])
    with Microphone("m", 16000, CaptureConfig(stall_timeout=0.2), pyaudio_module=fake.as_module()) as mic:
        fake.streams[0].deliver(np.zeros(800, "<i2"))
        assert mic.read(0.05) is not None
        fake.streams[0].active = False  # e.g. USB microphone unplugged
        t0 = time.monotonic()
        with pytest.raises(MicrophoneFailedError, match="stopped"):
            while time.monotonic() - t0 < 5:
                mic.read(0.05)
        assert time.monotonic() - t0 < 1.0


def test_unopenable_device_and_unsupported_rate_are_microphone_failures():
    fake = FakeModule([FakeDevice("busy", default_rate=16000, rates=(16000,))], open_error="[Errno -9985] Device unavailable")
    with pytest.raises(MicrophoneFailedError, match="Device unavailable"):
        Microphone("busy", 16000, pyaudio_module=fake.as_module()).open()
    fake = FakeModule([FakeDevice("m", default_rate=48000, rates=(48000,))])
    with pytest.raises(MicrophoneFailedError, match="accepts mono at \\[48000\\]"):
        Microphone("m", 16000, CaptureConfig(rate=16000), pyaudio_module=fake.as_module()).open()
    fake = FakeModule([FakeDevice("m")], default_input=None)
    with pytest.raises(NoMicrophoneError, match="no default input"):
        Microphone(None, 16000, pyaudio_module=fake.as_module()).open()


def test_profile_sections_feed_the_listener():
    from edge_detector.commands.listen import config_from_profile

    prof = SimpleNamespace(
        mic=SimpleNamespace(rate=48000, channels=2, buffer_frames=1024, device="usb"),
        stream=SimpleNamespace(hop_seconds=1.0),
        gate=SimpleNamespace(min_speech_seconds=2.0, windows=2, combine="bundle", uncertain="retry", retries=1),
    )
    cfg = config_from_profile(prof, 16000)
    assert cfg.device == "usb"
    assert cfg.capture == {"preferred_rate": 48000, "preferred_channels": 2, "buffer_frames": 1024}
    assert cfg.policy == {"hop": 16000, "min_speech": 2.0, "max_windows": 2}
    assert (cfg.uncertain, cfg.retries) == ("retry", 1)
    assert config_from_profile(SimpleNamespace(), 16000).policy == {}  # a profile without these sections


def test_listen_once_follows_the_profile_gate_policy(monkeypatch, tiny_bundle, tmp_path):
    """Profile `gate.uncertain`: "retry" listens again once, "reject" turns uncertain into exit 3."""
    pytest.importorskip("firmware_config", reason="profiles (firmware_config) are not in this checkout")
    from click.testing import CliRunner

    from edge_detector.cli import main
    from edge_detector.detector import Detector

    x = np.concatenate([np.zeros(int(0.3 * SR)), speechlike(4.5, seed=3), np.zeros(SR), speechlike(4.5, seed=4),
                        np.zeros(2 * SR)])
    llr0 = Detector(tiny_bundle).score_array(x, SR).calibrated  # first window, as the gate's first decision
    set_thresholds(tiny_bundle, accept=llr0 + 1.0, reject=llr0 - 1.0)  # a wide band: uncertain
    pcm = np.round(x * 32767).astype("<i2")
    outcomes = {}
    for policy, extra in [("retry", "retries = 1\n"), ("reject", "")]:
        prof = tmp_path / f"{policy}.toml"
        prof.write_text(f"[mic]\nrate = 16000\nchannels = 1\nbuffer_frames = 640\n"
                        f"[gate]\nmin_speech_seconds = 1.0\nwindows = 1\nuncertain = \"{policy}\"\n{extra}")
        fake = FakeModule([FakeDevice("fake mic", default_rate=16000, rates=(16000,))], autoplay=pcm)
        monkeypatch.setitem(sys.modules, "pyaudio", fake.as_module())
        res = CliRunner().invoke(main, ["listen", "--bundle", str(tiny_bundle), "--profile", str(prof), "--once"])
        outcomes[policy] = (res.exit_code, json_lines(res.stdout))
    code, recs = outcomes["retry"]
    assert code == ExitCode.UNCERTAIN, recs
    assert [r["decision"] for r in recs] == ["uncertain", "uncertain"]
    assert recs[0]["action"] == "retry" and "exit_code" not in recs[0] and recs[1]["exit_code"] == 4
    assert recs[0]["device"]["buffer_frames"] == 640  # the profile's mic section
    assert recs[0]["end"] == pytest.approx(64600 / SR) and recs[1]["start"] >= recs[0]["end"]
    code, recs = outcomes["reject"]
    assert code == ExitCode.REJECT
    assert len(recs) == 1 and recs[0]["decision"] == "uncertain" and recs[0]["exit_code"] == 3


# =============================================================================================
# Real PortAudio: ALSA file plugin (deterministic) and PulseAudio null sink (real time)


@pytest.fixture()
def pyaudio_available():
    try:
        import_pyaudio()
    except MissingExtraError:
        pytest.skip("PyAudio is not installed: pip install 'edge-detector[mic]' (needs apt portaudio19-dev)")


def run(args: list[str], env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(edge_detect(*args), env=env, capture_output=True, text=True, timeout=timeout)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def recording(tmp_path: Path, x: np.ndarray, sr: int = SR, name: str = "rec") -> tuple[Path, Path]:
    """Raw int16 for the file PCM + a WAV of exactly the same samples for `score`."""
    raw = write_raw(tmp_path / f"{name}.raw", x)
    wav = tmp_path / f"{name}.wav"
    sf.write(str(wav), read_raw(raw), sr, subtype="PCM_16")
    return raw, wav


def speech_recording(seconds: float = 4.5, sr: int = SR, seed: int = 3) -> np.ndarray:
    # Silence padding after the speech: the file PCM returns stale data once the file ends.
    return np.concatenate([np.zeros(int(0.3 * sr)), speechlike(seconds, sr=sr, seed=seed), np.zeros(3 * sr)])


@pytest.mark.mic
def test_listen_once_on_alsa_file_matches_score(pyaudio_available, tiny_bundle, tmp_path):
    """First-window bundle: the gate scores exactly the recording's first window, as `score` does."""
    raw, wav = recording(tmp_path, speech_recording())
    env = alsa_file_device(tmp_path / "home", PCM, raw)
    ref = json_lines(run(["score", "--bundle", str(tiny_bundle), str(wav)], env).stdout)[0]
    set_thresholds(tiny_bundle, accept=ref["llr"] - 0.05, reject=ref["llr"] - 0.1)  # → accept
    res = run(["listen", "--bundle", str(tiny_bundle), "--device", PCM, "--once", "--min-speech", "1.5"], env)
    (rec,) = json_lines(res.stdout)
    assert res.returncode == ExitCode.ACCEPT, res.stderr
    assert rec["decision"] == "accept" and rec["exit_code"] == 0
    assert rec["score"] == pytest.approx(ref["score"], abs=1e-5)
    assert rec["llr"] == pytest.approx(ref["llr"], abs=1e-5)
    assert (rec["start"], rec["end"]) == (0.0, pytest.approx(64600 / SR))
    assert rec["windows"][0]["score"] == pytest.approx(ref["windows"][0]["score"], abs=1e-5)
    assert rec["device"] == {"index": rec["device"]["index"], "name": PCM, "rate": 16000, "channels": 1,
                             "buffer_frames": 800}
    assert rec["overflows"] == 0 and rec["speech_s"] >= 1.5
    for key in ("time", "latency_ms", "end_of_speech_to_decision_ms", "trigger", "model_sha256"):
        assert key in rec


@pytest.mark.mic
def test_listen_once_all_windows_rejects_like_score_on_the_segment(pyaudio_available, tiny_bundle, tmp_path):
    raw, wav = recording(tmp_path, speech_recording())
    env = alsa_file_device(tmp_path / "home", PCM, raw)
    ref_full = json_lines(run(["score", "--bundle", str(tiny_bundle), str(wav)], env).stdout)[0]
    set_thresholds(tiny_bundle, accept=ref_full["llr"] + 0.5, reject=ref_full["llr"] + 0.5)  # → reject
    res = run(["listen", "--bundle", str(tiny_bundle), "--device", PCM, "--once", "--windows", "all",
               "--min-speech", "1.5"], env)
    (rec,) = json_lines(res.stdout)
    assert res.returncode == ExitCode.REJECT, res.stderr
    assert rec["decision"] == "reject" and rec["trigger"] == "end_of_speech" and rec["combine"] == "mean"
    assert len(rec["windows"]) == 2
    assert rec["speech_end"] == pytest.approx(4.8, abs=0.05)  # the recording's speech ends at 4.8 s
    # `score --windows all` on exactly the audio the gate scored:
    seg = read_raw(raw)[int(round(rec["start"] * SR)) : int(round(rec["end"] * SR))]
    seg_wav = tmp_path / "segment.wav"
    sf.write(str(seg_wav), seg, SR, subtype="PCM_16")
    ref = json_lines(run(["score", "--bundle", str(tiny_bundle), "--windows", "all", str(seg_wav)], env).stdout)[0]
    assert rec["score"] == pytest.approx(ref["score"], abs=1e-5)
    assert rec["decision"] == ref["decision"] == "reject"
    assert [w["score"] for w in rec["windows"]] == pytest.approx([w["score"] for w in ref["windows"]], abs=1e-5)


@pytest.mark.mic
def test_listen_resamples_a_48k_device_like_score_resamples_the_file(pyaudio_available, tiny_bundle, tmp_path):
    raw, wav = recording(tmp_path, speech_recording(sr=48000), sr=48000, name="rec48")
    env = alsa_file_device(tmp_path / "home", PCM, raw)
    res = run(["listen", "--bundle", str(tiny_bundle), "--device", PCM, "--once", "--rate", "48000"], env)
    ref = json_lines(run(["score", "--bundle", str(tiny_bundle), str(wav)], env).stdout)[0]
    (rec,) = json_lines(res.stdout)
    assert rec["device"]["rate"] == 48000, res.stderr
    assert "resampled to 16000 Hz" in res.stderr
    assert rec["score"] == pytest.approx(ref["score"], abs=1e-4)
    assert rec["decision"] == ref["decision"]
    assert res.returncode == {"accept": 0, "reject": 3, "uncertain": 4}[ref["decision"]]


@pytest.mark.mic
def test_devices_lists_the_virtual_device_with_its_rates(pyaudio_available, tmp_path):
    raw, _ = recording(tmp_path, np.zeros(SR))
    env = alsa_file_device(tmp_path / "home", PCM, raw)
    res = run(["devices", "--json"], env)
    assert res.returncode == 0, res.stderr
    devs = {d["name"]: d for d in json_lines(res.stdout)}
    assert PCM in devs
    assert set(devs[PCM]["rates"]) == {8000, 16000, 22050, 44100, 48000}
    assert devs[PCM]["max_input_channels"] >= 1
    text = run(["devices"], env)
    assert PCM in text.stdout and "16000" in text.stdout
    assert "ALSA lib" not in text.stderr  # PortAudio's start-up chatter stays hidden


@pytest.mark.mic
def test_unknown_device_exits_no_microphone_and_lists_devices(pyaudio_available, tiny_bundle, tmp_path):
    raw, _ = recording(tmp_path, np.zeros(SR))
    env = alsa_file_device(tmp_path / "home", PCM, raw)
    res = run(["listen", "--bundle", str(tiny_bundle), "--device", "no-such-mic", "--once"], env)
    assert res.returncode == ExitCode.NO_MICROPHONE
    assert "no input device named 'no-such-mic'" in res.stderr
    assert "input devices:" in res.stderr and PCM in res.stderr
    (rec,) = json_lines(res.stdout)
    assert rec["error"] == "no_microphone" and PCM in [d["name"] for d in rec["devices"]]
    # No input device at all (no sound card, no ALSA/Pulse device defined): the same code.
    empty = tmp_path / "empty-home"
    empty.mkdir()
    env = subprocess_env(empty)
    if run(["devices"], env).returncode != ExitCode.NO_MICROPHONE:
        return  # this machine has a real input device: nothing more to check here
    res = run(["listen", "--bundle", str(tiny_bundle), "--once"], env)
    assert res.returncode == ExitCode.NO_MICROPHONE, res.stderr
    assert "no audio input device found" in res.stderr


@pytest.mark.mic
def test_silence_only_gives_no_speech_after_the_time_limit(pyaudio_available, tiny_bundle, tmp_path):
    raw, _ = recording(tmp_path, np.zeros(4 * SR))
    env = alsa_file_device(tmp_path / "home", PCM, raw)
    res = run(["listen", "--bundle", str(tiny_bundle), "--device", PCM, "--once", "--seconds", "2"], env)
    assert res.returncode == ExitCode.NO_SPEECH, res.stderr
    (rec,) = json_lines(res.stdout)
    assert rec["error"] == "no_speech" and "0.0 s of speech in 2 s" in rec["message"]


class _Listener:
    """`edge-detect listen` in the background; collects stderr lines so a test can wait for readiness."""

    def __init__(self, args: list[str], env: dict) -> None:
        # SIGINT at its default disposition in the child: a test run started in the background
        # inherits it ignored, and Python then never raises KeyboardInterrupt (the Ctrl-C test would hang).
        self.proc = subprocess.Popen(edge_detect(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.err: list[str] = []
        self.out: list[str] = []
        self.ready = threading.Event()
        self._t = threading.Thread(target=self._pump, daemon=True)
        self._t.start()
        self._o = threading.Thread(target=lambda: self.out.extend(self.proc.stdout), daemon=True)
        self._o.start()

    def _pump(self) -> None:
        for line in self.proc.stderr:
            self.err.append(line)
            if line.startswith("listening on"):
                self.ready.set()
        self.ready.set()

    def wait_ready(self, timeout: float = 30) -> None:
        assert self.ready.wait(timeout), "listener did not start"
        assert self.proc.poll() is None, "".join(self.err)

    def finish(self, timeout: float = 30) -> tuple[int, str, str]:
        """Wait at most ``timeout`` s for the exit (TimeoutExpired, never a hang), then collect the output."""
        rc = self.proc.wait(timeout)
        self._o.join(5)
        self._t.join(5)
        return rc, "".join(self.out), "".join(self.err)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.mark.mic
def test_ctrl_c_ends_cleanly_with_130(pyaudio_available, tiny_bundle, tmp_path):
    raw, _ = recording(tmp_path, np.zeros(2 * SR))
    env = alsa_file_device(tmp_path / "home", PCM, raw)
    lis = _Listener(["listen", "--bundle", str(tiny_bundle), "--device", PCM], env)
    try:
        lis.wait_ready()
        time.sleep(0.3)
        lis.proc.send_signal(signal.SIGINT)
        rc, out, err = lis.finish(timeout=15)
    finally:
        lis.kill()
    assert rc == ExitCode.INTERRUPTED, err
    assert "Traceback" not in err
    assert json_lines(out)[-1]["error"] == "interrupted"


@pytest.mark.mic
def test_pulseaudio_null_sink_real_time(pyaudio_available, tiny_bundle, tmp_path):
    """paplay → null sink → monitor → remap source → ALSA 'pulse' → PyAudio → one decision, in real time.

    Then the sound server goes away under a running listener: a clear MICROPHONE_FAILED.
    """
    reason = pulse_missing()
    if reason:
        pytest.skip(reason)
    x = np.concatenate([np.zeros(int(0.5 * SR)), speechlike(2.5, seed=5), np.zeros(int(1.5 * SR))])
    wav = tmp_path / "utterance.wav"
    sf.write(str(wav), x, SR, subtype="PCM_16")
    srv = PulseServer(tmp_path / "pulse")
    lis = None
    try:
        srv.start()
        lis = _Listener(["listen", "--bundle", str(tiny_bundle), "--device", "pulse", "--once", "--seconds", "20",
                         "--min-speech", "1.0"], srv.env)
        lis.wait_ready()
        play = srv.play(wav)
        assert play.wait(20) == 0, play.stderr.read()
        rc, out, err = lis.finish(timeout=30)
        recs = json_lines(out)
        assert recs, err
        rec = recs[-1]
        assert rec["decision"] == ("accept" if rec["llr"] >= 0.0 else "reject"), rec  # the tiny bundle: thresholds 0/0
        assert rc == {"accept": 0, "reject": 3}[rec["decision"]]
        assert rec["device"]["name"] == "pulse" and isinstance(rec["overflows"], int)
        assert rec["trigger"] == "end_of_speech"
        assert 0 < rec["end_of_speech_to_decision_ms"] < 5000
        assert rec["speech_s"] >= 1.0

        # The device disappears mid-stream: exit 10 with a message, not a hang or a traceback.
        lis = _Listener(["listen", "--bundle", str(tiny_bundle), "--device", "pulse"], srv.env)
        lis.wait_ready()
        srv.stop()
        rc, out, err = lis.finish(timeout=30)
        assert rc == ExitCode.MICROPHONE_FAILED, err
        assert "Traceback" not in err
        assert json_lines(out)[-1]["error"] == "microphone_failed"
    finally:
        if lis is not None:
            lis.kill()
        srv.stop()
