"""Errors and exit codes shared by the runtime, the CLI and the gate.

Every failure the runtime can foresee has its own exception class and its own exit
code, so a shell script or a PAM hook can tell "the voice was rejected" from "the
microphone is gone" without parsing text. Only exit code 0 ever means *accept*:
each error below fails closed.
"""
from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of `edge-detect` (documented in the README and in `gate --help`)."""

    ACCEPT = 0
    INTERNAL_ERROR = 1
    USAGE = 2
    REJECT = 3
    UNCERTAIN = 4
    BAD_AUDIO = 5
    MISSING_FILE = 6
    BAD_BUNDLE = 7
    BAD_PROFILE = 8
    NO_MICROPHONE = 9
    MICROPHONE_FAILED = 10
    NO_SPEECH = 11
    MISSING_EXTRA = 12
    NOT_SPEECH = 13
    INTERRUPTED = 130


class EdgeDetectorError(Exception):
    """Base class: a foreseen failure with a one-line message and an exit code."""

    exit_code: ExitCode = ExitCode.INTERNAL_ERROR
    kind: str = "error"


class AudioError(EdgeDetectorError):
    """The audio could not be used for a decision (unreadable, empty, silent, ...)."""

    exit_code = ExitCode.BAD_AUDIO
    kind = "bad_audio"


class AudioDecodeError(AudioError):
    kind = "unreadable_audio"


class FileReadError(AudioError):
    """The file exists but cannot be read (permission denied, I/O error): not a decoding problem."""

    kind = "unreadable_file"


class EmptyAudioError(AudioError):
    kind = "empty_audio"


class SilentAudioError(AudioError):
    kind = "silent_audio"


class TooShortAudioError(AudioError):
    kind = "too_short"


class TooLongAudioError(AudioError):
    kind = "too_long"


class NonFiniteAudioError(AudioError):
    kind = "non_finite_samples"


class MissingFileError(EdgeDetectorError):
    exit_code = ExitCode.MISSING_FILE
    kind = "missing_file"


class BundleError(EdgeDetectorError):
    """The model bundle is missing, tampered with, or not understood by this runtime."""

    exit_code = ExitCode.BAD_BUNDLE
    kind = "bad_bundle"


class ProfileError(EdgeDetectorError):
    exit_code = ExitCode.BAD_PROFILE
    kind = "bad_profile"


class NoMicrophoneError(EdgeDetectorError):
    exit_code = ExitCode.NO_MICROPHONE
    kind = "no_microphone"


class MicrophoneFailedError(EdgeDetectorError):
    exit_code = ExitCode.MICROPHONE_FAILED
    kind = "microphone_failed"


class NoSpeechError(EdgeDetectorError):
    exit_code = ExitCode.NO_SPEECH
    kind = "no_speech"


class NotSpeechError(AudioError):
    """Audio is present but holds no speech (a tone, a buzz, noise, clicks, an offset): refused before the
    model is asked (:mod:`edge_detector.speech_presence`). ``evidence`` carries the measured cues."""

    exit_code = ExitCode.NOT_SPEECH
    kind = "not_speech"
    evidence: dict = {}


class MissingExtraError(EdgeDetectorError):
    """A training-side command needs an optional dependency that is not installed."""

    exit_code = ExitCode.MISSING_EXTRA
    kind = "missing_extra"


class OutputRefusedError(EdgeDetectorError):
    """An output path this command must not write or replace (exists, not a bundle, the cwd, ...)."""

    exit_code = ExitCode.USAGE
    kind = "output_refused"


class DataError(EdgeDetectorError):
    """A protocol or data folder is malformed (line number in the message)."""

    exit_code = ExitCode.BAD_AUDIO
    kind = "bad_data"
