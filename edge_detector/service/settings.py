"""Limits and access rules of the scoring service, and the rule for where it may listen.

Safe by default: the service listens on 127.0.0.1 only. Listening on any other address
exposes a gate decision to the network, so it needs a bearer token (``--token`` or
``EDGE_DETECT_TOKEN``), compared in constant time (:func:`hmac.compare_digest`).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional

from ..errors import EdgeDetectorError, ExitCode

#: Shortest accepted token: 16 characters (e.g. ``openssl rand -hex 16`` gives 32).
MIN_TOKEN_LENGTH = 16
TOKEN_ENV = "EDGE_DETECT_TOKEN"


class BindRefusedError(EdgeDetectorError):
    """The service would listen where it must not (a non-loopback address without a token)."""

    exit_code = ExitCode.USAGE
    kind = "bind_refused"


@dataclass
class ServiceSettings:
    """What one service process accepts. Sizes in bytes, durations in seconds.

    ``max_concurrent`` inferences run at once (threads sharing the one onnxruntime
    session); ``max_queue`` more requests may wait for a slot. A request beyond that is
    answered 503 with ``Retry-After: retry_after`` at once, before its body is read, so
    memory is bounded by ``(max_concurrent + max_queue) * max_body_bytes`` plus the
    decoded audio (at most ``max_seconds`` at the model rate per request).
    ``request_timeout`` bounds reading the body plus waiting plus inference.
    """

    max_body_bytes: int = 16 * 1024 * 1024
    max_seconds: float = 120.0
    max_concurrent: int = 1
    max_queue: int = 4
    request_timeout: float = 30.0
    retry_after: int = 1
    token: Optional[str] = None
    windows: Optional[str] = None  # default window mode for /v1/score and /v1/gate (None: the bundle's)
    max_streams: int = 2
    max_stream_seconds: float = 600.0  # audio per WebSocket stream
    stream_idle_timeout: float = 30.0  # longest wait for the next stream message
    max_message_bytes: int = 1024 * 1024  # one WebSocket message
    enrolment_dir: Optional[str] = None  # opt-in: keep every decided utterance here for `edge-detect adapt`

    def __post_init__(self) -> None:
        if self.max_body_bytes <= 0 or self.max_message_bytes <= 0:
            raise ValueError("size limits must be positive")
        if self.max_seconds <= 0 or self.request_timeout <= 0 or self.max_stream_seconds <= 0 \
                or self.stream_idle_timeout <= 0:
            raise ValueError("duration limits must be positive")
        if self.max_concurrent < 1 or self.max_queue < 0 or self.max_streams < 0 or self.retry_after < 1:
            raise ValueError("max_concurrent and retry_after must be >= 1, max_queue and max_streams >= 0")
        if self.windows not in (None, "first", "all"):
            raise ValueError("windows must be 'first' or 'all'")
        if self.token is not None and len(self.token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"the token must be at least {MIN_TOKEN_LENGTH} characters")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and literal loopback addresses (127.0.0.0/8, ::1); False for any other name."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name could resolve anywhere: treat it as exposed


def check_bind(host: str, token: Optional[str]) -> None:
    """Refuse to listen on a non-loopback ``host`` without a token (raises :class:`BindRefusedError`)."""
    if not is_loopback(host) and not token:
        raise BindRefusedError(
            f"refusing to listen on {host!r} without a token: any other address than loopback needs "
            f"--token or ${TOKEN_ENV} (clients then send 'Authorization: Bearer <token>')"
        )
