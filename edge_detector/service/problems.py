"""Errors the HTTP service adds to the runtime's, and the HTTP status of every error kind.

The service answers with the same error records as the CLI (``error`` = the kind,
``exit_code`` = what `edge-detect score` / `gate` would have exited with), so a client
handles "bad audio" the same way whether it ran the CLI or asked the service. The
errors below exist only over HTTP (an oversize body, a full queue, a missing token);
each still carries a CLI-style exit code, never 0, so a gate fails closed on them.
"""
from __future__ import annotations

from ..errors import AudioError, EdgeDetectorError, ExitCode, MissingFileError


class ServiceError(EdgeDetectorError):
    """A request the service refuses before any audio is decoded. ``status`` is the HTTP status."""

    status: int = 400
    kind = "bad_request"
    exit_code = ExitCode.USAGE


class BadRequestError(ServiceError):
    """Malformed request: bad query value, multipart body without an audio part, bad stream header."""


class UnauthorizedError(ServiceError):
    status = 401
    kind = "unauthorized"


class RequestTimeoutError(ServiceError):
    """The body did not arrive within the request time-out (a stalled or very slow client)."""

    status = 408
    kind = "request_timeout"


class PayloadTooLargeError(ServiceError):
    """The body is larger than ``--max-body-mb`` (refused while reading: never buffered whole)."""

    status = 413
    kind = "too_large"
    exit_code = ExitCode.BAD_AUDIO


class UnsupportedMediaError(ServiceError):
    """The content type is not audio (nor multipart/form-data with an audio part)."""

    status = 415
    kind = "unsupported_media_type"
    exit_code = ExitCode.BAD_AUDIO


class BusyError(ServiceError):
    """Every inference slot and queue place is taken: try again after ``Retry-After`` seconds."""

    status = 503
    kind = "busy"
    exit_code = ExitCode.INTERNAL_ERROR


class InferenceTimeoutError(ServiceError):
    """The request waited or ran longer than the request time-out (the slot is freed when the work ends)."""

    status = 503
    kind = "timeout"
    exit_code = ExitCode.INTERNAL_ERROR


#: Exit codes whose errors are "the audio cannot give a decision": HTTP 422.
_UNPROCESSABLE = {ExitCode.BAD_AUDIO, ExitCode.NO_SPEECH}


def http_status(exc: BaseException) -> int:
    """HTTP status for an error: a service error's own, 422 for unusable audio, 503 for the model, 500 else."""
    if isinstance(exc, ServiceError):
        return exc.status
    if isinstance(exc, AudioError) or getattr(exc, "exit_code", None) in _UNPROCESSABLE:
        return 422
    if isinstance(exc, MissingFileError):
        return 400
    if isinstance(exc, EdgeDetectorError) and exc.exit_code == ExitCode.BAD_BUNDLE:
        return 503
    return 500
