"""`edge-detect listen`: decide on live microphone audio (continuously, or once as the gate).

The capture thread only queues bytes (:mod:`edge_detector.mic`); this command's main
thread converts, resamples, runs the VAD and the model (:mod:`edge_detector.stream`)
and prints one flushed JSON line per decision, so a supervising process sees each
decision the moment it is made.
"""
from __future__ import annotations

import datetime as _dt
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import click

from ..errors import (
    EdgeDetectorError,
    ExitCode,
    NoSpeechError,
    NotSpeechError,
    ProfileError,
)
from ..records import DECISION_CODES
from ..stream import NOT_SPEECH, RULE_TEXT, GatePolicy, StreamDecision, StreamGate
from ._common import build_detector, emit, exit_with, log, runtime_options
#: --seconds for --once when not given: a gate must not wait forever.
DEFAULT_ONCE_SECONDS = 20.0

LISTEN_HELP = f"""Listen to a microphone and decide whether the voice is live (bona fide).

Prints one JSON line per decision on stdout (flushed at once): time, the segment's
start/end on the stream clock, the windows and their scores, score, llr (calibrated),
decision, the VAD trigger, latency (end of speech to decision), overflows and dropped
audio. Logs go to stderr.

{RULE_TEXT}

\b
--once is the gate: listen until one decision (or --seconds), exit with its code.
Exit codes with --once (0 only on accept; every error fails closed):
   0  accept        llr >= accept threshold
   3  reject        llr <  reject threshold (also uncertain under a profile's
                    gate.uncertain = "reject")
   4  uncertain     between the two thresholds
  11  no speech     --seconds ran out before --min-speech seconds of speech
  13  not speech    --seconds ran out and what was heard held no speech (a tone, a
                    buzz, noise, clicks: refused before the model, listening goes on)
   9  no microphone no input device, or --device matches none (list on stderr)
  10  microphone failed  cannot open, stream stopped, device removed
   7  bad bundle    8  bad profile    12  PyAudio missing    1  internal error
 130  interrupted (Ctrl-C)
Without --once: decisions until Ctrl-C (exit 130) or --seconds (exit 0).
--seconds counts captured audio (the same as wall time on a real microphone).
"""


@dataclass
class ListenConfig:
    """Everything the listener needs besides the bundle (profile values, then CLI overrides)."""

    device: Any = None
    capture: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)
    uncertain: str = "report"  # report | reject | retry (a profile's gate.uncertain)
    retries: int = 0


def _get(obj: Any, *names: str) -> Any:
    """First attribute (or mapping key) of ``obj`` that is set: profiles are dataclasses, tests may pass dicts."""
    if obj is None:
        return None
    for n in names:
        v = obj.get(n) if isinstance(obj, dict) else getattr(obj, n, None)
        if v is not None:
            return v
    return None


def config_from_profile(prof: Any, sample_rate: int = 16000) -> ListenConfig:
    """Read the microphone, streaming and gate sections of a loaded profile (all optional)."""
    cfg = ListenConfig()
    mic, stream, gate = _get(prof, "mic"), _get(prof, "stream"), _get(prof, "gate")
    cfg.device = _get(mic, "device")
    rate, channels = _get(mic, "rate", "sample_rate"), _get(mic, "channels")
    buffer = _get(mic, "buffer_frames", "buffer", "frames_per_buffer")
    if rate is not None:
        cfg.capture["preferred_rate"] = int(rate)
    if channels is not None:
        cfg.capture["preferred_channels"] = int(channels)
    if buffer is not None:
        cfg.capture["buffer_frames"] = int(buffer)
    hop_s = _get(stream, "hop_seconds", "hop_s")
    if hop_s is not None:
        cfg.policy["hop"] = max(1, int(round(float(hop_s) * sample_rate)))
    min_speech = _get(gate, "min_speech_seconds", "min_speech")
    if min_speech is not None:
        cfg.policy["min_speech"] = max(0.02, float(min_speech))
    windows = _get(gate, "windows", "max_windows")
    if windows is not None:
        cfg.policy["max_windows"] = int(windows)
    combine = _get(gate, "combine")
    if combine not in (None, "bundle"):
        cfg.policy["combine"] = str(combine)
    cfg.uncertain = str(_get(gate, "uncertain") or "report")
    cfg.retries = int(_get(gate, "retries") or 0)
    return cfg


def load_listen_profile(profile: Optional[str]) -> Any:
    """The profile object (None without --profile). Raises ProfileError."""
    if not profile:
        return None
    try:
        from firmware_config import load_profile
    except ImportError as exc:
        raise ProfileError(f"profiles are not available in this installation ({exc})") from None
    return load_profile(profile)


def run_listener(mic: Any, gate: StreamGate, *, max_seconds: Optional[float],
                 on_decision: Callable[[StreamDecision, Any], bool],
                 on_chunk: Optional[Callable[[Any, int, int], None]] = None) -> Optional[StreamDecision]:
    """Pump audio from ``mic`` through ``gate`` until ``on_decision`` returns True or time is up.

    ``on_decision(decision, chunk)`` is called for every decision with the chunk whose
    audio completed it; ``on_chunk(chunk, position_before, n_fed)`` sees every chunk (the
    benchmark records arrival times with it). At the time limit the gate decides on
    what it has (if that holds enough speech) and the last decision is returned, or
    None when there was none at all.
    """
    limit = None if not max_seconds else int(round(max_seconds * gate.sample_rate))
    last: Optional[StreamDecision] = None
    chunk = None
    while True:
        if limit is not None and gate.position >= limit:
            break
        chunk = mic.read(timeout=0.1)
        if chunk is None:
            continue
        x = chunk.samples
        if limit is not None:
            x = x[: max(0, limit - gate.position)]
        if on_chunk is not None:
            on_chunk(chunk, gate.position, len(x))
        for d in gate.feed(x):
            last = d
            if on_decision(d, chunk):
                return d
    d = gate.finish()
    if d is not None:
        last = d
        on_decision(d, chunk)
    return last


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def decision_record(d: StreamDecision, chunk: Any, mic: Any, detector: Any, gate: StreamGate,
                    position_after_chunk: int) -> dict[str, Any]:
    """The JSON line for one decision, with the latencies measured on the stream.

    ``latency_ms``: wall time from the arrival of the audio that completed the decision
    (its callback) to this record. ``end_of_speech_to_decision_ms``: from the end of
    the last speech frame to this record = the audio that had to arrive after it (the
    VAD hangover, the rest of that callback's buffer, the resampler's look-ahead) plus
    ``latency_ms``; on a real-time device that is the wall-clock delay a user waits
    after they stop speaking, PortAudio's input latency (``input_latency_ms``) aside.
    """
    now = time.monotonic()
    sr = float(gate.sample_rate)
    latency_ms = (now - chunk.arrival) * 1000.0 if chunk is not None else 0.0
    rec: dict[str, Any] = {"time": _utc_now(), "source": f"mic:{mic.device.name}" if mic.device else "mic"}
    rec.update(d.to_record())
    rec["latency_ms"] = round(latency_ms, 3)
    if d.speech_end is not None and d.trigger != "timeout":
        lag_s = (position_after_chunk - d.speech_end) / sr + (mic.resampler.delay_seconds if mic.resampler else 0.0)
        rec["end_of_speech_to_decision_ms"] = round(lag_s * 1000.0 + latency_ms, 3)
    else:
        rec["end_of_speech_to_decision_ms"] = None
    rec["input_latency_ms"] = round(mic.input_latency * 1000.0, 3)
    rec["overflows"] = int(mic.overflows)
    rec["dropped_s"] = round(mic.dropped_seconds, 3)
    rec["device"] = {"index": mic.device.index, "name": mic.device.name, "rate": mic.rate,
                     "channels": mic.channels, "buffer_frames": mic.buffer_frames} if mic.device else None
    rec["model_id"] = detector.bundle.model_id
    rec["model_sha256"] = detector.bundle.model_sha256
    rec["provider"] = detector.provider
    return rec


@click.command("listen", help=LISTEN_HELP)
@runtime_options
@click.option("--device", default=None, metavar="NAME|INDEX",
              help="Input device: index, exact name or unique part of it (default: the profile's, else the system default). "
                   "See `edge-detect devices`.")
@click.option("--once", is_flag=True, help="Gate mode: one decision, then exit with its code (0 only on accept).")
@click.option("--seconds", type=click.FloatRange(min=0), default=None,
              help=f"Stop after this much captured audio (default with --once: {DEFAULT_ONCE_SECONDS:g}; 0 = no limit).")
@click.option("--min-speech", type=click.FloatRange(min=0.02), default=None,
              help="Seconds of speech before a decision (default: the profile's, else 1.5).")
@click.option("--max-windows", type=click.IntRange(min=1), default=None,
              help="Longest segment in windows, with --windows all (default: the profile's gate.windows, else 3).")
@click.option("--windows", type=click.Choice(["first", "all"]), default=None,
              help="first: the segment's first window; all: windows every hop, combined (default: the bundle's).")
@click.option("--rate", type=click.IntRange(min=1000), default=None,
              help="Capture at exactly this rate (default: 16000 if the device accepts it, else its own rate, "
                   "resampled in numpy).")
@click.option("--record-enrolment", "enrolment_dir", type=click.Path(file_okay=False), default=None,
              help="Opt-in: write every utterance decided on (accepted or not) as a WAV to this folder and list it "
                   "as bona fide in its protocol.txt, for `edge-detect adapt`. Only your own live voice belongs there.")
def listen_command(bundle_path: Optional[str], profile: Optional[str], threads: Optional[int], device: Optional[str],
                   once: bool, seconds: Optional[float], min_speech: Optional[float], max_windows: Optional[int],
                   windows: Optional[str], rate: Optional[int], enrolment_dir: Optional[str] = None) -> None:
    from ..mic import CaptureConfig, DeviceNotFoundError, Microphone, format_devices

    code = ExitCode.INTERNAL_ERROR
    mic: Optional[Microphone] = None
    failure: Optional[dict[str, Any]] = None
    try:
        prof = load_listen_profile(profile)
        detector = build_detector(bundle_path, profile, threads)
        cfg = config_from_profile(prof, detector.bundle.sample_rate) if prof is not None else ListenConfig()
        if min_speech is not None:
            cfg.policy["min_speech"] = min_speech
        if max_windows is not None:
            cfg.policy["max_windows"] = max_windows
        if windows is not None:
            cfg.policy["mode"] = windows
        if rate is not None:
            cfg.capture["rate"] = rate
        try:
            policy = GatePolicy(**cfg.policy)
            capture = CaptureConfig(**cfg.capture)
        except (TypeError, ValueError) as exc:
            raise ProfileError(f"{profile}: {exc}") from None
        gate = StreamGate.from_detector(detector, policy)
        recorder = None
        if enrolment_dir is not None:
            from ..enrolment import EnrolmentRecorder

            recorder = EnrolmentRecorder(enrolment_dir, gate.sample_rate)
        limit = seconds if seconds is not None else (DEFAULT_ONCE_SECONDS if once else None)
        mic = Microphone(device if device is not None else cfg.device, detector.bundle.sample_rate, capture)
        mic.open()
        assert mic.device is not None
        r = gate.rule
        log(f"listening on {mic.device.name!r} (index {mic.device.index}, {mic.rate} Hz, {mic.channels} ch, "
            f"buffer {mic.buffer_frames}{', resampled to %d Hz' % gate.sample_rate if mic.rate != gate.sample_rate else ''}); "
            f"windows {r.mode}: {r.window / gate.sample_rate:.2f} s, hop {r.hop / gate.sample_rate:.2f} s, "
            f"combine {r.combine}, up to {policy.max_windows if r.mode == 'all' else 1} window(s); "
            f"decide after {policy.min_speech:g} s of speech"
            f"{'' if not limit else f'; limit {limit:g} s'}")
        retries_left = cfg.retries if cfg.uncertain == "retry" else 0
        final: dict[str, Any] = {}
        position = {"after": 0}

        def on_chunk(chunk: Any, before: int, n_fed: int) -> None:
            position["after"] = before + n_fed

        def on_decision(d: StreamDecision, chunk: Any) -> bool:
            nonlocal retries_left
            rec = decision_record(d, chunk, mic, detector, gate, max(position["after"], d.position))
            if d.decision == NOT_SPEECH:  # refused before the model; a gate keeps listening for a voice
                final["not_speech"] = rec
                emit(rec)
                log(f"{d.start / gate.sample_rate:.2f}-{d.end / gate.sample_rate:.2f} s: not speech; listening on")
                return False
            if recorder is not None:
                try:
                    rec["enrolment_file"] = str(recorder.write(gate.ring.read(d.start, d.end), d.decision))
                except (OSError, ValueError) as exc:  # a full disk must not change the decision
                    log(f"enrolment recording failed: {exc}")
            if once and d.decision == "uncertain" and cfg.uncertain == "retry" and retries_left > 0:
                retries_left -= 1
                rec["action"] = "retry"
                emit(rec)
                log(f"uncertain (llr {d.llr:.3f}); listening again ({retries_left} retr{'y' if retries_left == 1 else 'ies'} left)")
                return False
            if once:
                outcome = d.decision
                if d.decision == "uncertain" and cfg.uncertain == "reject":
                    outcome = "reject"
                rec["exit_code"] = int(DECISION_CODES[outcome])
                final["code"] = DECISION_CODES[outcome]
            emit(rec)
            log(f"{d.start / gate.sample_rate:.2f}-{d.end / gate.sample_rate:.2f} s: {d.decision} "
                f"(llr {d.llr:.3f}, accept >= {gate.accept:.3f}, reject < {gate.reject:.3f}; {d.trigger})")
            return once

        run_listener(mic, gate, max_seconds=limit, on_decision=on_decision, on_chunk=on_chunk)
        if once:
            if "code" not in final and "not_speech" in final:
                raise NotSpeechError(f"no speech in {limit:g} s of audio: what was heard was refused "
                                     f"({gate.refusals} segment(s); see their records)")
            if "code" not in final:
                heard = gate.speech_samples / gate.sample_rate
                raise NoSpeechError(f"heard {heard:.1f} s of speech in {limit:g} s of audio; "
                                    f"a decision needs {policy.min_speech:g} s")
            code = final["code"]
        else:
            code = ExitCode.ACCEPT
        if mic.overflows or mic.dropped_frames:
            log(f"input overflows: {mic.overflows}; dropped {mic.dropped_seconds:.2f} s of audio")
    except DeviceNotFoundError as exc:
        code = exc.exit_code
        log(f"edge-detect listen: {exc}")
        log("input devices:\n" + format_devices(exc.devices))
        failure = {"error": exc.kind, "message": str(exc), "devices": [d.to_dict() for d in exc.devices]}
    except EdgeDetectorError as exc:
        code = exc.exit_code
        log(f"edge-detect listen: {exc}")
        failure = {"error": exc.kind, "message": str(exc)}
    except KeyboardInterrupt:
        code = ExitCode.INTERRUPTED
        log("edge-detect listen: interrupted")
        failure = {"error": "interrupted", "message": "interrupted"}
    except Exception as exc:  # fail closed on anything unforeseen
        code = ExitCode.INTERNAL_ERROR
        log("edge-detect listen: internal error\n" + traceback.format_exc())
        failure = {"error": "internal_error", "message": repr(exc)}
    finally:
        if mic is not None:
            try:
                mic.close()
            except KeyboardInterrupt:  # a second Ctrl-C while closing: still exit cleanly
                code = ExitCode.INTERRUPTED
    if failure is not None:
        rec = {"time": _utc_now(), "decision": "error", **failure, "exit_code": int(code)}
        if mic is not None:
            rec["overflows"] = int(mic.overflows)
        emit(rec)
    exit_with(code)
