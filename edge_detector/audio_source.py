"""Where audio comes from: a path (any bytes the OS allows), a pipe or FIFO, or standard input.

- **Regular files** are handed to soundfile by the OS's own bytes (``os.fsencode``), so
  a name that is not valid UTF-8 (a Latin-1 byte, allowed on Linux) opens like any other.
- **Non-seekable inputs** (``-`` for standard input, ``/dev/stdin``, a FIFO, a character
  device) are read *once*, up to :data:`STREAM_LIMIT_BYTES`, into memory and decoded from
  there: soundfile needs to seek, and opening a pipe a second time finds it empty.
- **Failures stay distinct**: no such file (:class:`MissingFileError`, exit 6), a file
  that exists but cannot be read (:class:`FileReadError`, kind ``unreadable_file``), and
  audio that cannot be decoded (:class:`AudioDecodeError`, kind ``unreadable_audio``).

**Names in records.** A JSON record's ``file`` is the name as text: valid UTF-8 names as
they are; otherwise the bytes decoded as UTF-8 with each invalid byte written as the four
characters ``\\xNN`` (Python's ``backslashreplace``), and the record gets one more field,
``file_bytes_hex``, the exact bytes of the name in hexadecimal
(``bytes.fromhex(record["file_bytes_hex"])`` is the path to open). Messages use the
same escaped text, so printing them never fails.
"""
from __future__ import annotations

import io
import os
import stat
import sys
from typing import Any, BinaryIO, Optional, Union

from .errors import AudioDecodeError, FileReadError, MissingFileError, TooLongAudioError

PathLike = Union[str, os.PathLike]

#: Most bytes read from a non-seekable input (a pipe, a FIFO, standard input) into memory.
#: 256 MiB holds 600 s (the default limit) of 16-bit stereo WAV at 96 kHz.
STREAM_LIMIT_BYTES = 256 * 1024 * 1024
STDIN_NAME = "-"


def display_name(name: Union[str, bytes, os.PathLike]) -> str:
    """The name as printable text: invalid UTF-8 bytes become ``\\xNN`` (see the module docstring)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def name_fields(name: Union[str, bytes, os.PathLike]) -> dict[str, str]:
    """``{"file": text}``, plus ``file_bytes_hex`` when the name is not valid UTF-8 (lossless)."""
    raw = os.fsencode(name)
    try:
        return {"file": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"file": raw.decode("utf-8", "backslashreplace"), "file_bytes_hex": raw.hex()}


def with_name_fields(record: dict[str, Any], name: Union[str, bytes, os.PathLike]) -> dict[str, Any]:
    """``record`` with its ``file`` field replaced by :func:`name_fields` (in place; returned)."""
    record.update(name_fields(name))
    return record


def read_stream(stream: BinaryIO, name: str, limit: int = STREAM_LIMIT_BYTES) -> io.BytesIO:
    """Read a non-seekable binary stream once, at most ``limit`` bytes, into a BytesIO.

    Raises TooLongAudioError when the stream holds more than ``limit`` bytes (nothing more
    is read), FileReadError when reading fails.
    """
    buf = io.BytesIO()
    try:
        while True:
            block = stream.read(min(1 << 20, limit + 1 - buf.tell()))
            if not block:
                break
            buf.write(block)
            if buf.tell() > limit:
                raise TooLongAudioError(f"{name}: more than {limit / 2**20:.0f} MiB from a stream; "
                                        "give a file instead")
    except OSError as exc:
        raise FileReadError(f"{name}: cannot read ({exc.strerror or exc})") from None
    buf.seek(0)
    return buf


def read_stdin(limit: int = STREAM_LIMIT_BYTES) -> io.BytesIO:
    """Standard input, read once into memory (``-`` on the command line)."""
    return read_stream(sys.stdin.buffer, STDIN_NAME, limit)


def open_source(path: PathLike, name: Optional[str] = None) -> tuple[Union[bytes, io.BytesIO], str]:
    """``path`` → (what soundfile should open, the name for messages).

    A regular file gives its OS-level bytes path; a FIFO, pipe or character device is
    read once into a BytesIO. Raises MissingFileError (no such file), FileReadError
    (permission denied, or another OS error) or AudioDecodeError (a directory).
    """
    raw = os.fsencode(path)
    shown = display_name(name if name is not None else raw)
    try:
        st = os.stat(raw)
    except FileNotFoundError:
        raise MissingFileError(f"{shown}: no such file") from None
    except OSError as exc:
        raise FileReadError(f"{shown}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioDecodeError(f"{shown}: is a directory, not an audio file")
    try:
        fd = os.open(raw, os.O_RDONLY)
    except FileNotFoundError:
        raise MissingFileError(f"{shown}: no such file") from None
    except OSError as exc:
        raise FileReadError(f"{shown}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISREG(st.st_mode):
        os.close(fd)
        return raw, shown
    with os.fdopen(fd, "rb") as stream:  # a pipe, FIFO or device: this is the one read
        return read_stream(stream, shown), shown


def cli_input(raw: Union[str, os.PathLike]) -> tuple[Union[str, os.PathLike, io.BytesIO], Optional[str]]:
    """A command-line audio argument → (what ``Detector.score_file`` takes, the name to report).

    ``-`` is standard input, read once into memory (a file literally named ``-`` is ``./-``);
    anything else is passed on as a path, reported by :func:`display_name`.
    """
    if os.fspath(raw) == STDIN_NAME:
        return read_stdin(), STDIN_NAME
    return raw, None
