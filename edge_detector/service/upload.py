"""Request bodies → audio bytes in memory: bounded reading, content types, multipart.

Nothing here touches the disk: the body is read into memory up to the size limit
(refused with 413 the moment it goes over, or at once when ``Content-Length`` says so)
and multipart/form-data is parsed from memory with python-multipart's streaming parser
(no spooled temporary files). Decoding itself is the runtime's (:func:`edge_detector.audio.load_audio`).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import AsyncIterator, Optional

from python_multipart.multipart import MultipartParser, parse_options_header

from .problems import BadRequestError, PayloadTooLargeError, RequestTimeoutError, UnsupportedMediaError

#: Raw-body content types taken as audio (soundfile recognises the format from the bytes).
AUDIO_TYPES = frozenset({
    "audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "audio/flac", "audio/x-flac", "audio/ogg",
    "audio/opus", "audio/mpeg", "audio/mp3", "audio/aiff", "audio/x-aiff", "audio/basic",
    "application/octet-stream", "application/ogg",
})
#: Multipart field names searched for the audio, in order (else the first part with a file name).
FILE_FIELDS = ("file", "audio")


@dataclass(frozen=True)
class Upload:
    """The audio bytes of one request and the name the client gave them (None: none given)."""

    data: bytes
    filename: Optional[str]


def media_type(content_type: Optional[str]) -> tuple[str, dict[str, str]]:
    """``"audio/wav; x=y"`` → ``("audio/wav", {"x": "y"})`` (lower-case type; empty string when absent)."""
    if not content_type:
        return "", {}
    kind, params = parse_options_header(content_type)
    return kind.decode("latin-1").lower(), {k.decode("latin-1").lower(): v.decode("latin-1")
                                            for k, v in params.items()}


async def read_body(chunks: AsyncIterator[bytes], content_length: Optional[str], max_bytes: int,
                    deadline: float) -> bytes:
    """Collect a request body of at most ``max_bytes`` before ``deadline`` (time.monotonic()).

    Raises PayloadTooLargeError (413) as soon as the declared or received size passes the
    limit, RequestTimeoutError (408) when the body has not arrived by the deadline,
    BadRequestError for a malformed Content-Length.
    """
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise BadRequestError(f"invalid Content-Length {content_length!r}") from None
        if declared > max_bytes:
            raise PayloadTooLargeError(f"body of {declared} bytes is larger than the {max_bytes}-byte limit")
    buf = bytearray()

    async def collect() -> None:
        async for chunk in chunks:
            buf.extend(chunk)
            if len(buf) > max_bytes:
                raise PayloadTooLargeError(f"body is larger than the {max_bytes}-byte limit")

    try:
        await asyncio.wait_for(collect(), timeout=max(0.0, deadline - time.monotonic()))
    except asyncio.TimeoutError:
        raise RequestTimeoutError(f"the body did not arrive in time ({len(buf)} bytes received)") from None
    return bytes(buf)


def extract_audio(content_type: Optional[str], body: bytes) -> Upload:
    """The audio in a request body: the body itself for an audio content type, or one multipart part.

    Raises UnsupportedMediaError (415) for other content types and BadRequestError (400)
    for a multipart body without an audio part or with a broken structure.
    """
    kind, params = media_type(content_type)
    if kind in AUDIO_TYPES or (kind.startswith("audio/") and kind != "audio/"):
        return Upload(body, None)
    if kind == "multipart/form-data":
        boundary = params.get("boundary")
        if not boundary:
            raise BadRequestError("multipart/form-data without a boundary")
        return _multipart_audio(boundary, body)
    shown = kind or "none"
    raise UnsupportedMediaError(
        f"content type {shown!r} is not audio: send the file as the body with its audio/* type "
        f"(or application/octet-stream), or as multipart/form-data field 'file'"
    )


def _multipart_audio(boundary: str, body: bytes) -> Upload:
    parts: list[dict] = []
    current: dict = {}
    header = {"field": b"", "value": b""}

    def on_part_begin() -> None:
        current.clear()
        current.update(headers={}, data=bytearray())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]

    def on_header_end() -> None:
        current["headers"][header["field"].decode("latin-1").lower()] = header["value"]
        header["field"], header["value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current["data"] += data[start:end]

    def on_part_end() -> None:
        parts.append(dict(current))

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_part_data": on_part_data, "on_part_end": on_part_end,
    })
    try:
        parser.write(body)
        parser.finalize()
    except Exception as exc:  # python-multipart raises MultipartParseError and friends
        raise BadRequestError(f"malformed multipart body ({exc})") from None
    named: dict[str, tuple[bytes, Optional[str]]] = {}
    first_file: Optional[tuple[bytes, Optional[str]]] = None
    for part in parts:
        _, disp = parse_options_header(part["headers"].get("content-disposition", b""))
        name = disp.get(b"name", b"").decode("utf-8", "replace")
        filename = disp.get(b"filename")
        entry = (bytes(part["data"]), filename.decode("utf-8", "replace") if filename is not None else None)
        named.setdefault(name, entry)
        if filename is not None and first_file is None:
            first_file = entry
    for field in FILE_FIELDS:
        if field in named:
            return Upload(*named[field])
    if first_file is not None:
        return Upload(*first_file)
    raise BadRequestError(f"multipart body has no audio part (send it as field {FILE_FIELDS[0]!r})")
