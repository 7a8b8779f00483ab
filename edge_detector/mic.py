"""Microphone capture with PyAudio (PortAudio): devices, format choice, a callback queue.

Conventions (DESIGN.md section 6) and why
-----------------------------------------
* **The PortAudio callback only copies bytes into a queue.** It runs on PortAudio's
  real-time thread; anything slow there (numpy, the model, a lock held by the main
  thread) makes the device overflow. Conversion, resampling, the VAD and inference run
  in the caller's thread (:meth:`Microphone.read`).
* **16 kHz when the device accepts it, else its native default rate**, resampled here
  with :class:`edge_detector.stream.StreamResampler`, which gives the very samples the
  offline resampler (used by `score`, training and calibration) would give: the device
  must not see a different signal from the one the model was trained on.
* **Overflows are counted, never fatal.** The callback's status flags carry
  ``paInputOverflow`` when the hardware dropped input; the count is reported with each
  decision. If the main thread falls more than ``queue_seconds`` behind, new chunks are
  dropped (and counted) instead of growing memory without bound.
* **Failures have their own errors**: no input device or an unknown name →
  :class:`~edge_detector.errors.NoMicrophoneError` listing the devices that exist; a
  stream that cannot open, stops, or goes silent (device unplugged, sound server gone)
  → :class:`~edge_detector.errors.MicrophoneFailedError`; PyAudio not installed →
  :class:`~edge_detector.errors.MissingExtraError` naming the extra to install.
* PyAudio is imported lazily: the rest of the runtime (`score`, `gate`) must work
  without it.
"""
from __future__ import annotations

import os
import queue
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np

from .audio import to_mono_float
from .errors import MicrophoneFailedError, MissingExtraError, NoMicrophoneError
from .stream import StreamResampler

__all__ = [
    "PROBE_RATES",
    "InputDevice",
    "DeviceNotFoundError",
    "CaptureConfig",
    "Chunk",
    "PortAudio",
    "Microphone",
    "import_pyaudio",
    "find_device",
    "format_devices",
]

#: Rates `edge-detect devices` probes with ``is_format_supported``.
PROBE_RATES: tuple[int, ...] = (8000, 16000, 22050, 44100, 48000)
#: Channel counts probed beyond these: the device's maximum (capture mixes any count to mono).
PROBE_CHANNELS: tuple[int, ...] = (1, 2, 4, 6, 8)
#: Seconds a freshly opened stream may take to deliver its first buffer.
FIRST_AUDIO_TIMEOUT = 5.0
#: Set to 1 to see PortAudio/ALSA/JACK start-up chatter (hidden by default).
ENV_AUDIO_DEBUG = "EDGE_DETECTOR_AUDIO_DEBUG"

INSTALL_HINT = (
    "live microphone input needs PyAudio: pip install 'edge-detector[mic]' "
    "(it builds against PortAudio: on Debian/Ubuntu/Raspberry Pi OS first run "
    "'sudo apt install portaudio19-dev', or use the distribution's package with "
    "'sudo apt install python3-pyaudio' and a venv created with --system-site-packages)"
)


def import_pyaudio() -> ModuleType:
    """Import PyAudio or raise MissingExtraError saying how to get it."""
    try:
        import pyaudio  # type: ignore[import-not-found]
    except ImportError:  # ModuleNotFoundError, or libportaudio missing at load time
        raise MissingExtraError(INSTALL_HINT) from None
    return pyaudio


@contextmanager
def quiet_native_stderr() -> Iterator[list[str]]:
    """Hide what C libraries print on fd 2 (ALSA "Unknown PCM", JACK "server not running").

    PortAudio probes every host API at start-up, and on a box without JACK or a sound
    card that prints dozens of harmless lines, which would bury our own messages on
    stderr. The text is kept (yielded list) so an error can still show it; set
    EDGE_DETECTOR_AUDIO_DEBUG=1 to let it through.
    """
    captured: list[str] = []
    if os.environ.get(ENV_AUDIO_DEBUG):
        yield captured
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield captured
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.extend(tmp.read().decode("utf-8", "replace").splitlines())


@dataclass(frozen=True)
class InputDevice:
    """An input-capable PortAudio device."""

    index: int
    name: str
    host_api: str
    max_input_channels: int
    default_rate: int
    is_default: bool = False
    rates: tuple[int, ...] = ()  # rates accepted (int16, at any channel count), when probed
    #: (rate, channel counts accepted at that rate), when probed; capture mixes any count to mono
    formats: tuple[tuple[int, tuple[int, ...]], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rates"] = list(self.rates)
        d["formats"] = [{"rate": r, "channels": list(ch)} for r, ch in self.formats]
        return d

    def describe(self) -> str:
        if self.formats:
            rates = ", ".join(f"{r} ({'/'.join(str(c) for c in ch)} ch)" for r, ch in self.formats)
        else:
            rates = ",".join(str(r) for r in self.rates) if self.rates else "-"
        star = " (default)" if self.is_default else ""
        return (f"{self.index:>3}  {self.name}{star}  [{self.host_api}, {self.max_input_channels} ch, "
                f"default {self.default_rate} Hz, accepts {rates}]")


def format_devices(devices: Sequence[InputDevice]) -> str:
    """Human-readable device list for error messages and `edge-detect devices`."""
    if not devices:
        return "  (no input devices found)"
    return "\n".join("  " + d.describe() for d in devices)


class DeviceNotFoundError(NoMicrophoneError):
    """No (matching) input device; carries the devices that do exist."""

    def __init__(self, message: str, devices: Sequence[InputDevice] = ()) -> None:
        super().__init__(message)
        self.devices = list(devices)


def find_device(devices: Sequence[InputDevice], spec: Union[str, int, None]) -> InputDevice:
    """Pick an input device by index, exact name, or unique name substring (case-insensitive).

    ``None`` means the system's default input. Raises :class:`DeviceNotFoundError`.
    """
    if not devices:
        raise DeviceNotFoundError("no audio input device found (is a microphone connected? `edge-detect devices`)",
                                  devices)
    if spec is None or (isinstance(spec, str) and spec.strip() == ""):
        for d in devices:
            if d.is_default:
                return d
        raise DeviceNotFoundError("no default input device; choose one with --device NAME|INDEX", devices)
    text = str(spec).strip()
    if text.lstrip("-").isdigit():
        idx = int(text)
        for d in devices:
            if d.index == idx:
                return d
        raise DeviceNotFoundError(f"no input device with index {idx}", devices)
    low = text.lower()
    exact = [d for d in devices if d.name.lower() == low]
    if len(exact) == 1:
        return exact[0]
    partial = exact or [d for d in devices if low in d.name.lower()]
    if len(partial) == 1:
        return partial[0]
    if not partial:
        raise DeviceNotFoundError(f"no input device named {text!r}", devices)
    names = ", ".join(f"{d.index}: {d.name}" for d in partial)
    raise DeviceNotFoundError(f"device name {text!r} is ambiguous ({names}); pass the index", devices)


class PortAudio:
    """Owns one ``pyaudio.PyAudio`` instance (PortAudio initialised once, terminated on close)."""

    def __init__(self, pyaudio_module: Optional[ModuleType] = None) -> None:
        self.mod = pyaudio_module or import_pyaudio()
        with quiet_native_stderr() as chatter:
            try:
                self.pa = self.mod.PyAudio()
            except Exception as exc:  # PortAudio could not initialise at all
                detail = "; ".join(chatter[-3:])
                raise MicrophoneFailedError(f"PortAudio failed to initialise ({exc}){': ' + detail if detail else ''}") from None
        self.chatter = chatter

    def close(self) -> None:
        try:
            self.pa.terminate()
        except Exception:
            pass

    def __enter__(self) -> "PortAudio":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def supports(self, index: int, rate: int, channels: int) -> bool:
        """``is_format_supported`` for 16-bit input; False instead of ValueError."""
        try:
            with quiet_native_stderr():
                return bool(self.pa.is_format_supported(rate, input_device=index, input_channels=channels,
                                                        input_format=self.mod.paInt16))
        except (ValueError, OSError):
            return False

    def input_devices(self, probe_rates: bool = False) -> list[InputDevice]:
        """Devices with at least one input channel (optionally with the rates they accept)."""
        try:
            default_index: Optional[int] = int(self.pa.get_default_input_device_info()["index"])
        except (IOError, OSError, KeyError, ValueError):
            default_index = None
        out = []
        with quiet_native_stderr():
            count = self.pa.get_device_count()
        for i in range(count):
            try:
                info = self.pa.get_device_info_by_index(i)
            except (IOError, OSError, ValueError):
                continue
            if int(info.get("maxInputChannels", 0)) < 1:
                continue
            try:
                api = str(self.pa.get_host_api_info_by_index(info["hostApi"])["name"])
            except Exception:
                api = "?"
            idx = int(info.get("index", i))
            max_ch = int(info["maxInputChannels"])
            formats: tuple[tuple[int, tuple[int, ...]], ...] = ()
            if probe_rates:
                formats = self.probe_formats(idx, max_ch)
            rates = tuple(r for r, _ in formats)
            out.append(InputDevice(index=idx, name=str(info["name"]), host_api=api,
                                   max_input_channels=int(info["maxInputChannels"]),
                                   default_rate=int(round(float(info.get("defaultSampleRate", 0) or 0))),
                                   is_default=idx == default_index, rates=rates, formats=formats))
        return out

    def probe_formats(self, index: int, max_channels: int) -> tuple[tuple[int, tuple[int, ...]], ...]:
        """Every probed rate the device accepts, with the channel counts it accepts at that rate.

        Channel counts tried: :data:`PROBE_CHANNELS` up to ``max_channels``, and
        ``max_channels`` itself (a 48 kHz stereo-only microphone is usable: capture mixes to
        mono and resamples). Rates with no accepted count are left out.
        """
        counts = sorted({c for c in PROBE_CHANNELS if c <= max_channels} | {max_channels})
        out = []
        for rate in PROBE_RATES:
            ok = tuple(c for c in counts if c >= 1 and self.supports(index, rate, c))
            if ok:
                out.append((rate, ok))
        return tuple(out)


@dataclass(frozen=True)
class CaptureConfig:
    """How to open the device (a profile's `mic` section fills these; None = choose)."""

    rate: Optional[int] = None  # exactly this rate (--rate), or fail
    channels: Optional[int] = None  # exactly this many channels, or fail
    preferred_rate: Optional[int] = None  # tried first, then the automatic choice (a profile's mic.rate)
    preferred_channels: Optional[int] = None  # likewise for channels (a profile's mic.channels)
    buffer_frames: Optional[int] = None  # None: 50 ms of audio per callback
    queue_seconds: float = 30.0  # the main thread may fall this far behind before chunks are dropped
    stall_timeout: float = 3.0  # seconds without audio before the device counts as gone

    def __post_init__(self) -> None:
        for name in ("rate", "channels", "preferred_rate", "preferred_channels", "buffer_frames"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.queue_seconds <= 0 or self.stall_timeout <= 0:
            raise ValueError("queue_seconds and stall_timeout must be positive")


@dataclass
class Chunk:
    """Audio delivered by one callback, converted to mono float32 at the target rate."""

    samples: np.ndarray
    arrival: float  # time.monotonic() when the callback queued it
    frames: int  # device frames in this callback
    status: int  # PortAudio status flags of this callback
    info: dict[str, Any] = field(default_factory=dict)


class Microphone:
    """An open input stream that yields 16 kHz mono float32 chunks.

    Use as a context manager; :meth:`read` returns the next :class:`Chunk` (or None on a
    short timeout) and raises MicrophoneFailedError when the device stops delivering.
    """

    def __init__(self, device: Union[str, int, None] = None, target_rate: int = 16000,
                 config: Optional[CaptureConfig] = None, pyaudio_module: Optional[ModuleType] = None) -> None:
        self.spec = device
        self.target_rate = int(target_rate)
        self.config = config or CaptureConfig()
        self._module = pyaudio_module
        self.portaudio: Optional[PortAudio] = None
        self.stream: Any = None
        self.device: Optional[InputDevice] = None
        self.rate = 0
        self.channels = 0
        self.buffer_frames = 0
        self.overflows = 0
        self.dropped_frames = 0
        self.frames_received = 0
        self.resampler: Optional[StreamResampler] = None
        self._q: "queue.Queue[tuple[bytes, int, float, Any]]" = queue.Queue()
        self._last_data = 0.0
        self._overflow_flag = 2  # paInputOverflow; replaced by the module's constant on open

    # -- opening ----------------------------------------------------------------------------
    def _choose_format(self, pa: PortAudio, dev: InputDevice) -> tuple[int, int]:
        cfg = self.config
        # Automatic choice: mono at the model rate (no resampling), else the device's own
        # default rate (what it runs at natively), else common rates; mixing to mono and
        # resampling happen in numpy exactly as for files.
        if cfg.channels is not None:
            channel_options = [cfg.channels]
        else:
            channel_options = [c for c in (cfg.preferred_channels, 1, 2, dev.max_input_channels)
                               if c is not None and 1 <= c <= dev.max_input_channels]
            channel_options = list(dict.fromkeys(channel_options))
        if cfg.rate is not None:
            rate_options = [cfg.rate]
        else:
            rate_options = [cfg.preferred_rate, self.target_rate, dev.default_rate, 48000, 44100, 32000, 22050]
            rate_options = list(dict.fromkeys(r for r in rate_options if r is not None and r > 0))
        for rate in rate_options:
            for ch in channel_options:
                if pa.supports(dev.index, rate, ch):
                    return rate, ch
        accepted = [r for r in PROBE_RATES if pa.supports(dev.index, r, 1)]
        raise MicrophoneFailedError(
            f"{dev.name}: no usable 16-bit input format (tried rates {rate_options}, channels {channel_options}); "
            f"the device accepts mono at {accepted or 'none of ' + str(list(PROBE_RATES))}"
        )

    def open(self) -> "Microphone":
        pa = PortAudio(self._module)
        self.portaudio = pa
        try:
            devices = pa.input_devices(probe_rates=False)
            try:
                dev = find_device(devices, self.spec)
            except DeviceNotFoundError as exc:  # list what exists, with the rates each accepts
                exc.devices = pa.input_devices(probe_rates=True)
                raise
            self.device = dev
            self.rate, self.channels = self._choose_format(pa, dev)
            self.buffer_frames = self.config.buffer_frames or max(64, self.rate // 20)
            self.resampler = StreamResampler(self.rate, self.target_rate)
            max_chunks = max(4, int(self.config.queue_seconds * self.rate / self.buffer_frames))
            self._q = queue.Queue(maxsize=max_chunks)
            self._overflow_flag = int(getattr(pa.mod, "paInputOverflow", 2))
            self._continue = getattr(pa.mod, "paContinue", 0)
            with quiet_native_stderr() as chatter:
                try:
                    self.stream = pa.pa.open(rate=self.rate, channels=self.channels, format=pa.mod.paInt16, input=True,
                                             input_device_index=dev.index, frames_per_buffer=self.buffer_frames,
                                             stream_callback=self._callback, start=True)
                except Exception as exc:
                    detail = "; ".join(chatter[-2:])
                    raise MicrophoneFailedError(
                        f"cannot open input device {dev.index} ({dev.name}) at {self.rate} Hz, {self.channels} ch: "
                        f"{exc}{' (' + detail + ')' if detail else ''}") from None
            self._last_data = time.monotonic()
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> "Microphone":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- PortAudio's thread ------------------------------------------------------------------
    def _callback(self, in_data: Optional[bytes], frame_count: int, time_info: Any, status: int):
        """Runs on PortAudio's thread: count the flags, copy the bytes, return at once."""
        if status & self._overflow_flag:
            self.overflows += 1
        try:
            self._q.put_nowait((in_data or b"", int(status), time.monotonic(), time_info))
        except queue.Full:
            self.dropped_frames += int(frame_count)
        return (None, self._continue)

    # -- caller's thread ---------------------------------------------------------------------
    @property
    def input_latency(self) -> float:
        """PortAudio's estimate of the input latency (seconds), 0 if unknown."""
        try:
            return float(self.stream.get_input_latency())
        except Exception:
            return 0.0

    def _is_active(self) -> bool:
        try:
            return bool(self.stream.is_active())
        except Exception:
            return False

    def read(self, timeout: float = 0.1) -> Optional[Chunk]:
        """Next chunk, or None if none came within ``timeout``.

        Raises MicrophoneFailedError once no audio has come for ``stall_timeout``
        seconds: the stream stopped (device unplugged, sound server died) or hangs.
        """
        if self.stream is None:
            raise MicrophoneFailedError("microphone is not open")
        try:
            data, status, arrival, info = self._q.get(timeout=timeout)
        except queue.Empty:
            silent_for = time.monotonic() - self._last_data
            # Some devices (Bluetooth, USB waking up) take seconds to deliver their first buffer.
            allowed = self.config.stall_timeout if self.frames_received else max(self.config.stall_timeout,
                                                                                  FIRST_AUDIO_TIMEOUT)
            if silent_for > allowed:
                name = self.device.name if self.device else "input device"
                if not self._is_active():
                    raise MicrophoneFailedError(f"{name}: the input stream stopped (device removed or sound server gone)") from None
                raise MicrophoneFailedError(f"{name}: no audio for {silent_for:.1f} s (device stalled or removed)") from None
            return None
        self._last_data = time.monotonic()
        frames = np.frombuffer(data, dtype="<i2")
        n = len(frames) // max(1, self.channels)
        self.frames_received += n
        if self.channels > 1:
            mono = to_mono_float(frames[: n * self.channels].reshape(n, self.channels))
        else:
            mono = to_mono_float(frames)
        assert self.resampler is not None
        return Chunk(samples=self.resampler.push(mono), arrival=arrival, frames=n, status=status,
                     info=dict(info) if isinstance(info, dict) else {})

    @property
    def dropped_seconds(self) -> float:
        return self.dropped_frames / self.rate if self.rate else 0.0

    def close(self) -> None:
        """Stop and close the stream and terminate PortAudio; safe to call twice."""
        stream, self.stream = self.stream, None
        if stream is not None:
            for op in ("stop_stream", "close"):
                try:
                    getattr(stream, op)()
                except Exception:
                    pass
        pa, self.portaudio = self.portaudio, None
        if pa is not None:
            pa.close()
