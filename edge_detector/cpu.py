"""What this CPU can do, as the OS reports it (for `edge-detect doctor` and the benchmarks).

int8 inference is only fast with the right instructions: dot-product (``asimddp``: Pi 5,
Jetson Orin) on arm64, VNNI (``avx512_vnni`` / ``avx_vnni``) on x86. The Pi 4's
Cortex-A72 has neither, so a profile that picks int8 there buys size, not speed. This
module reads ``/proc/cpuinfo`` and, on arm64, the ELF auxiliary vector (what onnxruntime
itself consults; under qemu-user it reflects ``QEMU_CPU`` while ``/proc/cpuinfo`` shows
the host), and falls back to :mod:`platform` elsewhere. numpy-free, stdlib only.
"""
from __future__ import annotations

import os
import platform
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

#: ARM "CPU part" numbers (implementer 0x41) of the cores this project targets.
ARM_PARTS = {
    0xD03: "Cortex-A53", 0xD04: "Cortex-A35", 0xD05: "Cortex-A55", 0xD07: "Cortex-A57", 0xD08: "Cortex-A72",
    0xD09: "Cortex-A73", 0xD0A: "Cortex-A75", 0xD0B: "Cortex-A76", 0xD0C: "Neoverse-N1", 0xD0D: "Cortex-A77",
    0xD41: "Cortex-A78", 0xD42: "Cortex-A78AE", 0xD44: "Cortex-X1", 0xD46: "Cortex-A510", 0xD47: "Cortex-A710",
    0xD40: "Neoverse-V1", 0xD49: "Neoverse-N2", 0xD4F: "Neoverse-V2",
}
#: Linux arm64 HWCAP / HWCAP2 bits (arch/arm64/include/uapi/asm/hwcap.h) worth reporting.
ARM64_HWCAP = {"fp": 0, "asimd": 1, "aes": 3, "crc32": 7, "atomics": 8, "fphp": 9, "asimdhp": 10,
               "asimdrdm": 12, "asimddp": 20, "sve": 22}
ARM64_HWCAP2 = {"sve2": 1, "i8mm": 13, "bf16": 14}
AT_HWCAP, AT_HWCAP2 = 16, 26
#: Features that matter for this project's kernels, in report order.
INTERESTING = ("asimd", "asimddp", "asimdhp", "i8mm", "sve", "sve2", "bf16",
               "sse4_2", "fma", "avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")


@dataclass
class CpuInfo:
    """The CPU as the OS describes it."""

    machine: str
    model: str
    cores: int  # logical CPUs this process may run on
    cores_total: int  # logical CPUs in the machine
    features: list[str] = field(default_factory=list)  # INTERESTING ∩ what the OS reports
    board: Optional[str] = None  # /proc/device-tree/model (Raspberry Pi, Jetson)
    l4t: Optional[str] = None  # /etc/nv_tegra_release first line on a Jetson
    source: str = "/proc/cpuinfo"

    @property
    def dot_product(self) -> bool:
        return "asimddp" in self.features

    @property
    def vnni(self) -> bool:
        return "avx512_vnni" in self.features or "avx_vnni" in self.features

    @property
    def avx2(self) -> bool:
        return "avx2" in self.features

    @property
    def int8_fast_path(self) -> bool:
        """Whether onnxruntime has int8 dot-product kernels for this CPU (else int8 ≈ size only)."""
        return self.dot_product or self.vnni or "i8mm" in self.features

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(dot_product=self.dot_product, vnni=self.vnni, avx2=self.avx2, int8_fast_path=self.int8_fast_path)
        return d


def parse_cpuinfo(text: str) -> tuple[str, set[str]]:
    """Model name and feature flags from /proc/cpuinfo text (x86 ``flags``, arm64 ``Features``)."""
    model = ""
    features: set[str] = set()
    part: Optional[int] = None
    implementer: Optional[int] = None
    hardware = ""
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key in ("model name", "cpu model") and not model:
            model = value
        elif key in ("flags", "features") and not features:
            features = set(value.split())
        elif key == "cpu part" and part is None:
            try:
                part = int(value, 16)
            except ValueError:
                pass
        elif key == "cpu implementer" and implementer is None:
            try:
                implementer = int(value, 16)
            except ValueError:
                pass
        elif key in ("hardware", "model") and not hardware:
            hardware = value
    if not model and implementer == 0x41 and part is not None:
        model = ARM_PARTS.get(part, f"ARM part {part:#x}")
    if not model:
        model = hardware
    return model, features


def arm64_hwcaps() -> set[str]:
    """arm64 features from the auxiliary vector (empty elsewhere or when unreadable)."""
    if platform.machine() not in ("aarch64", "arm64"):
        return set()
    try:
        raw = Path("/proc/self/auxv").read_bytes()
    except OSError:
        return set()
    n = len(raw) // 8
    words = struct.unpack(f"<{n}Q", raw[: n * 8])
    aux = dict(zip(words[0::2], words[1::2]))
    found = {name for name, bit in ARM64_HWCAP.items() if aux.get(AT_HWCAP, 0) >> bit & 1}
    found |= {name for name, bit in ARM64_HWCAP2.items() if aux.get(AT_HWCAP2, 0) >> bit & 1}
    return found


def _read_first_line(path: str) -> Optional[str]:
    try:
        text = Path(path).read_bytes().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return None
    return text.splitlines()[0].strip() if text else None


def cpu_info(cpuinfo_path: str = "/proc/cpuinfo") -> CpuInfo:
    """Describe this machine's CPU. Never raises: unknown fields stay empty."""
    machine = platform.machine() or "unknown"
    try:
        text = Path(cpuinfo_path).read_text(encoding="utf-8", errors="replace")
        source = cpuinfo_path
    except OSError:
        text, source = "", "platform"
    model, flags = parse_cpuinfo(text)
    hw = arm64_hwcaps()
    if hw:
        # The auxiliary vector is what the kernel (or qemu-user, which shows the *host's*
        # /proc/cpuinfo) grants this process, and what onnxruntime checks: it wins.
        flags = hw
        source = "auxv (model from /proc/cpuinfo)" if text else "auxv"
    model = model or platform.processor() or machine
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    return CpuInfo(
        machine=machine, model=model, cores=usable, cores_total=os.cpu_count() or usable,
        features=[f for f in INTERESTING if f in flags], board=_read_first_line("/proc/device-tree/model"),
        l4t=_read_first_line("/etc/nv_tegra_release"), source=source,
    )
