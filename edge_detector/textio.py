"""Reading the text files users hand us (protocols, profiles, manifests, score lists).

One function, so every text input is read the same way: UTF-8, with a leading byte-order
mark (BOM, U+FEFF, which Windows editors such as Notepad write) removed. Without this the
first field of the first line silently becomes ``"\\ufeffALPHA_s0"`` (a different speaker
or source) or a ``#`` comment on line 1 stops being a comment. Windows line endings
(CRLF) need nothing here: callers split with ``str.splitlines`` or a JSON/TOML parser,
which accept them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

BOM = "\ufeff"


def read_text(path: Union[str, os.PathLike]) -> str:
    """The file's text, decoded as UTF-8 with one leading BOM dropped.

    Raises FileNotFoundError / OSError like :meth:`pathlib.Path.read_text`, and
    UnicodeDecodeError when the bytes are not UTF-8 (callers turn both into their own
    errors naming the file).
    """
    return Path(path).read_bytes().decode("utf-8-sig")
