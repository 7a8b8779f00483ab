"""Device profiles for edge-detector (Raspberry Pi 4/5, Jetson Orin Nano / Nano, x86).

``load_profile("pi5")`` or ``load_profile("/etc/edge-detector/my.toml")`` returns a
validated :class:`Profile`; ``Profile.session_settings()`` turns it into
:class:`edge_detector.session.SessionSettings` and ``Profile.resolve_bundle(path)``
picks the bundle variant the profile wants. Never imports torch, onnx or scipy.
"""
from __future__ import annotations

from .profile import (
    KNOWN_PROVIDERS,
    PROFILES_DIR,
    VARIANTS,
    GateConfig,
    MicConfig,
    Profile,
    ProfileWarning,
    ProviderConfig,
    StreamConfig,
    list_profiles,
    load_profile,
    parse_profile,
    profile_path,
)

__all__ = [
    "KNOWN_PROVIDERS", "PROFILES_DIR", "VARIANTS", "GateConfig", "MicConfig", "Profile", "ProfileWarning",
    "ProviderConfig", "StreamConfig", "list_profiles", "load_profile", "parse_profile", "profile_path",
]
