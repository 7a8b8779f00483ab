"""SHA-256 for bundle verification without loading OpenSSL.

Why: ``import hashlib`` loads OpenSSL's libcrypto through ``_hashlib``; measured here
(CPython 3.11, x86-64) that is 3.6 MB of resident memory, about 5 % of what a process
that scores with an edge bundle needs in all, and the edge runtime hashes nothing but
its own bundle files (well under a few MB, milliseconds with either implementation).
CPython ships its own SHA-256 (``_sha2`` from 3.12, ``_sha256`` before), which is what
this module uses; where neither exists (another interpreter), it falls back to hashlib.
The digests are the same bytes either way (tested against hashlib).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

__all__ = ["sha256", "sha256_source"]


def _builtin_sha256() -> tuple[Callable[..., Any], str]:
    for name in ("_sha2", "_sha256"):
        try:
            return getattr(importlib.import_module(name), "sha256"), name
        except (ImportError, AttributeError):
            continue
    import hashlib

    return hashlib.sha256, "hashlib"


_SHA256, _SOURCE = _builtin_sha256()


def sha256(data: bytes = b"") -> Any:
    """A new SHA-256 object (``update``/``hexdigest``, as ``hashlib.sha256``)."""
    return _SHA256(data)


def sha256_source() -> str:
    """Which implementation is in use: ``_sha2``, ``_sha256`` or ``hashlib``."""
    return _SOURCE
