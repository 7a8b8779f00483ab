"""Virtual PortAudio input devices without a sound card (DESIGN.md section 6).

* :func:`alsa_file_device`: a ``.asoundrc`` in a private HOME defining a PCM of ``type
  file`` whose capture side reads raw 16-bit little-endian samples from ``infile``
  (slave ``null``). Deterministic and bit-exact, but not paced: PortAudio reads it as
  fast as it can, and after the file ends it returns stale data, so callers pad with
  silence and read only the known length.
* :class:`PulseServer`: a private PulseAudio daemon with a null sink and a remapped
  source over its monitor; ``paplay`` into the sink is captured in real time from the
  ``pulse`` ALSA device (libasound2-plugins).

Used by tests/test_mic.py and benchmarks/mic_latency.py.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def write_raw(path: Path, x: np.ndarray) -> Path:
    """Float samples in [-1, 1] → raw int16 little-endian mono (what the file PCM plays)."""
    pcm = np.clip(np.round(np.asarray(x, dtype=np.float64) * 32767.0), -32768, 32767).astype("<i2")
    pcm.tofile(str(path))
    return path


def read_raw(path: Path) -> np.ndarray:
    """The raw file back as float32, scaled like soundfile reads PCM_16 (÷ 32768)."""
    return (np.fromfile(str(path), dtype="<i2").astype(np.float64) / 32768.0).astype(np.float32)


def alsa_file_device(home: Path, pcm_name: str, infile: Path) -> dict[str, str]:
    """Write ``home/.asoundrc`` defining capture PCM ``pcm_name`` reading ``infile``; return an env for subprocesses."""
    home.mkdir(parents=True, exist_ok=True)
    (home / ".asoundrc").write_text(
        f"""pcm.{pcm_name} {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{infile}"
    format "raw"
}}
""",
        encoding="utf-8",
    )
    return subprocess_env(home)


def subprocess_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for a child `edge-detect`: private HOME (ALSA reads ~/.asoundrc at PortAudio init)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSE_", "XDG_RUNTIME_DIR", "ALSA_"))}
    env["HOME"] = str(home)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def edge_detect(*args: str) -> list[str]:
    """Command line running the CLI of this checkout with this interpreter."""
    return [sys.executable, "-m", "edge_detector.cli", *args]


PULSE_BINARIES = ("pulseaudio", "pactl", "paplay")


def pulse_missing() -> Optional[str]:
    """Why a PulseAudio null-sink test cannot run here, or None if it can."""
    missing = [b for b in PULSE_BINARIES if shutil.which(b) is None]
    if missing:
        return (f"PulseAudio binaries missing ({', '.join(missing)}): "
                "apt install pulseaudio pulseaudio-utils libasound2-plugins")
    if not any(Path(p).exists() for p in ("/usr/lib/x86_64-linux-gnu/alsa-lib/libasound_module_pcm_pulse.so",
                                          "/usr/lib/aarch64-linux-gnu/alsa-lib/libasound_module_pcm_pulse.so",
                                          "/usr/lib/alsa-lib/libasound_module_pcm_pulse.so",
                                          "/usr/lib64/alsa-lib/libasound_module_pcm_pulse.so")):
        return "the ALSA 'pulse' plugin is missing: apt install libasound2-plugins"
    return None


class PulseServer:
    """A private PulseAudio daemon: null sink ``edge_sink`` (48 kHz mono), source ``edge_mic`` over its monitor.

    Runs as the current user (root works, with a warning) with its own runtime dir and
    HOME, so it neither needs nor touches a desktop session. ``env`` is what clients
    (paplay, PyAudio via the ALSA ``pulse`` device) need to reach it. Always call
    :meth:`stop` (context manager does).
    """

    def __init__(self, root: Path, sink_rate: int = 48000) -> None:
        self.root = Path(root)
        self.home = self.root / "home"
        self.runtime = self.root / "runtime"
        self.sink_rate = sink_rate
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = self.root / "pulseaudio.log"

    @property
    def env(self) -> dict[str, str]:
        return subprocess_env(self.home, XDG_RUNTIME_DIR=str(self.runtime), PULSE_RUNTIME_PATH=str(self.runtime),
                              PULSE_SERVER=f"unix:{self.runtime / 'native'}")

    def start(self, timeout: float = 15.0) -> "PulseServer":
        self.home.mkdir(parents=True, exist_ok=True)
        self.runtime.mkdir(parents=True, exist_ok=True)
        os.chmod(self.runtime, 0o700)
        script = self.root / "edge.pa"
        script.write_text(
            "load-module module-native-protocol-unix\n"
            f"load-module module-null-sink sink_name=edge_sink rate={self.sink_rate} channels=1\n"
            "load-module module-remap-source source_name=edge_mic master=edge_sink.monitor channels=1\n"
            "set-default-sink edge_sink\n"
            "set-default-source edge_mic\n",
            encoding="utf-8",
        )
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            ["pulseaudio", "--system=false", "--exit-idle-time=-1", "--daemonize=no", "-n", "-F", str(script),
             "--disallow-exit", "--log-target=stderr"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pulseaudio exited with {self.proc.returncode}: {self.log_tail()}")
            ok = subprocess.run(["pactl", "info"], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if ok.returncode == 0:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"pulseaudio did not answer within {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def play(self, wav: Path) -> subprocess.Popen:
        """Start ``paplay`` of ``wav`` into the null sink (returns at once)."""
        return subprocess.Popen(["paplay", "--device=edge_sink", str(wav)], env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> "PulseServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
