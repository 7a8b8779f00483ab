"""A stand-in for the `pyaudio` module: devices, format support and a stream whose callback the test drives.

It lets tests reach the paths a real sound card would need (a device that only runs at
48 kHz, stereo-only devices, overflow flags, a stream that stops) deterministically;
the real PortAudio paths are covered by the virtual devices in test_mic.py.
"""
from __future__ import annotations

import threading
import types
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

paInt16 = 8
paContinue = 0
paInputUnderflow = 1
paInputOverflow = 2


@dataclass
class FakeDevice:
    name: str
    max_input_channels: int = 1
    default_rate: int = 48000
    rates: tuple[int, ...] = (48000,)
    channels: tuple[int, ...] = (1,)  # channel counts accepted
    max_output_channels: int = 0


@dataclass
class FakeStream:
    callback: Any
    rate: int
    channels: int
    frames_per_buffer: int
    active: bool = True
    closed: bool = False
    frames_sent: int = 0

    def deliver(self, pcm: np.ndarray, status: int = 0) -> Any:
        """Call the callback as PortAudio's thread would, with int16 frames ``[n]`` or ``[n, channels]``."""
        pcm = np.asarray(pcm, dtype="<i2")
        n = pcm.shape[0]
        self.frames_sent += n
        return self.callback(pcm.tobytes(), n, {"input_buffer_adc_time": 0.0}, status)

    def is_active(self) -> bool:
        return self.active and not self.closed

    def stop_stream(self) -> None:
        self.active = False

    def close(self) -> None:
        self.closed = True

    def get_input_latency(self) -> float:
        return self.frames_per_buffer / self.rate


@dataclass
class FakePyAudio:
    module: "FakeModule"
    terminated: bool = False

    def get_device_count(self) -> int:
        return len(self.module.devices)

    def get_device_info_by_index(self, i: int) -> dict:
        d = self.module.devices[i]
        return {"index": i, "name": d.name, "hostApi": 0, "maxInputChannels": d.max_input_channels,
                "maxOutputChannels": d.max_output_channels, "defaultSampleRate": float(d.default_rate)}

    def get_default_input_device_info(self) -> dict:
        if self.module.default_input is None:
            raise IOError("No Default Input Device Available")
        return self.get_device_info_by_index(self.module.default_input)

    def get_host_api_info_by_index(self, i: int) -> dict:
        return {"index": 0, "name": "FakeAPI"}

    def is_format_supported(self, rate, input_device=None, input_channels=None, input_format=None, **kw) -> bool:
        d = self.module.devices[input_device]
        if d.max_input_channels < 1 or rate not in d.rates or input_channels not in d.channels:
            raise ValueError(("Invalid sample rate", -9997))
        return True

    def open(self, rate, channels, format, input=False, input_device_index=None, frames_per_buffer=1024,
             stream_callback=None, start=True, **kw) -> FakeStream:
        if self.module.open_error:
            raise OSError(self.module.open_error)
        s = FakeStream(stream_callback, rate, channels, frames_per_buffer)
        self.module.streams.append(s)
        if self.module.autoplay is not None:
            threading.Thread(target=self._autoplay, args=(s, self.module.autoplay), daemon=True).start()
        return s

    @staticmethod
    def _autoplay(s: FakeStream, pcm: np.ndarray) -> None:
        """Deliver ``pcm`` buffer by buffer from a thread, as PortAudio would (not paced), then stop."""
        for i in range(0, len(pcm), s.frames_per_buffer):
            if s.closed or not s.active:
                return
            s.deliver(pcm[i : i + s.frames_per_buffer])
        s.active = False

    def terminate(self) -> None:
        self.terminated = True


@dataclass
class FakeModule:
    devices: list[FakeDevice]
    default_input: Optional[int] = 0
    open_error: Optional[str] = None
    autoplay: Optional[np.ndarray] = None  # int16 frames every opened stream delivers from a thread
    streams: list[FakeStream] = field(default_factory=list)

    def as_module(self) -> types.ModuleType:
        mod = types.ModuleType("pyaudio")
        mod.paInt16 = paInt16
        mod.paContinue = paContinue
        mod.paInputOverflow = paInputOverflow
        mod.paInputUnderflow = paInputUnderflow
        mod.PyAudio = lambda: FakePyAudio(self)
        mod.fake = self
        return mod
