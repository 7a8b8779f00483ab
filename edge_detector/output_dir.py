"""Output folders: never replace anything but one of our own bundles, and publish atomically.

Every command that writes a bundle folder (`export`, `quantize`, `convert-fp16`,
`calibrate -o`) builds it in a temporary sibling folder and moves it into place only
once it is complete, so an interrupted or failed run never leaves a complete-looking
output. ``--overwrite`` may only replace a folder that is itself a bundle written by
this project: a ``manifest.json`` of format ``edge-detector-bundle`` and no file or
folder that the manifest does not list. Anything else (a folder of the user's, the
working directory, the home folder, a file, a symlink) is refused with exit code 2.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

from .errors import OutputRefusedError
from .textio import read_text

PathLike = Union[str, os.PathLike]
MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "edge-detector-bundle"
# Files this project writes next to a sealed manifest (not listed in it): name → the "format"
# their JSON carries. Such a file counts as ours only when it also names the bundle's model id.
SIDECARS = {"selfcheck.json": "edge-detector-selfcheck"}


def _our_sidecar(entry: os.DirEntry, model_id: object) -> bool:
    """Whether ``entry`` is one of :data:`SIDECARS`, written by us for this very bundle."""
    if entry.name not in SIDECARS or entry.is_symlink() or not entry.is_file(follow_symlinks=False):
        return False
    try:
        doc = json.loads(read_text(entry.path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(doc, dict) and doc.get("format") == SIDECARS[entry.name] and doc.get("model_id") == model_id


def _protected(out: Path) -> Optional[str]:
    """Why ``out`` may never be replaced (the cwd, home, /, or a folder above them), else None."""
    resolved = out.resolve()
    if resolved == Path(resolved.anchor):
        return "it is the file system root"
    for label, place in (("the working directory", Path.cwd().resolve()), ("your home folder", Path.home().resolve())):
        if resolved == place:
            return f"it is {label}"
        if resolved in place.parents:
            return f"it holds {label}"
    return None


def bundle_problem(folder: PathLike) -> Optional[str]:
    """Why ``folder`` is not a replaceable bundle (None when it is one of ours and holds nothing else).

    A replaceable bundle is a real folder (not a symlink) whose ``manifest.json`` is a JSON
    object with ``format == "edge-detector-bundle"`` and a ``files`` mapping of plain names,
    and whose entries are exactly that manifest plus (a subset of) the listed regular files,
    plus our own side files (:data:`SIDECARS`, e.g. ``selfcheck.json`` for the same model id),
    plus, for a fusion bundle, the member sub-folders its manifest names (``fusion.members``),
    each itself a replaceable bundle. The manifest must carry a valid seal (``manifest_sha256``,
    which every writer of ours stores): a hand-written look-alike is not ours to delete.
    """
    from .bundle import MANIFEST_DIGEST_FIELD, manifest_digest

    p = Path(folder)
    if p.is_symlink():
        return "it is a symbolic link"
    if not p.is_dir():
        return "it is not a folder"
    try:
        manifest = json.loads(read_text(p / MANIFEST_NAME))
    except FileNotFoundError:
        return f"it has no {MANIFEST_NAME}"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return f"its {MANIFEST_NAME} is not a readable JSON manifest"
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        return f"its {MANIFEST_NAME} is not an edge-detector bundle manifest"
    try:
        sealed = manifest.get(MANIFEST_DIGEST_FIELD) == manifest_digest(manifest)
    except (TypeError, ValueError):
        sealed = False
    if not sealed:
        return f"its {MANIFEST_NAME} carries no valid seal ({MANIFEST_DIGEST_FIELD}): not written by this project as it is"
    files = manifest.get("files")
    if not isinstance(files, dict):
        return f"its {MANIFEST_NAME} lists no files"
    allowed = {MANIFEST_NAME} | {n for n in files if isinstance(n, str) and "/" not in n and "\\" not in n}
    fusion = manifest.get("fusion") if isinstance(manifest.get("fusion"), dict) else {}
    members = {n for n in fusion.get("members", []) if isinstance(n, str) and "/" not in n and "\\" not in n
               and n not in (".", "..")}
    foreign = []
    for entry in os.scandir(p):
        if entry.name in members and entry.is_dir(follow_symlinks=False):
            if bundle_problem(entry.path) is not None:
                foreign.append(entry.name)
        elif entry.name not in allowed or entry.is_symlink() or not entry.is_file(follow_symlinks=False):
            if not _our_sidecar(entry, manifest.get("model_id")):
                foreign.append(entry.name)
    if foreign:
        shown = ", ".join(repr(n) for n in sorted(foreign)[:5]) + (" ..." if len(foreign) > 5 else "")
        return f"it holds {len(foreign)} item(s) the bundle's manifest does not list ({shown})"
    return None


def check_output_dir(out: PathLike, overwrite: bool, inputs: Iterable[PathLike] = (),
                     can_overwrite: bool = True) -> Path:
    """Refuse an output folder this command must not write; return it as a Path.

    Allowed: a path that does not exist, or (with ``overwrite``) an existing bundle of
    ours that is not one of ``inputs``. Raises OutputRefusedError (exit 2) otherwise,
    saying why (``can_overwrite``: whether the command has an ``--overwrite`` option to
    suggest). Call it before any long work, and again (through :func:`publish_dir`) at
    the moment of replacing.
    """
    p = Path(out)
    why = _protected(p)
    if why:
        raise OutputRefusedError(f"{out}: refusing to write a bundle here: {why}")
    for src in inputs:
        try:
            same = os.path.samefile(p, src)
        except OSError:  # one of them does not exist
            same = False
        if same:
            raise OutputRefusedError(f"{out}: the output is the input bundle; choose another -o folder")
    if not os.path.lexists(p):
        return p
    if not overwrite:
        hint = " (--overwrite replaces it only if it is a bundle)" if can_overwrite else "; choose a new folder"
        raise OutputRefusedError(f"{out}: already exists{hint}")
    why = bundle_problem(p)
    if why:
        raise OutputRefusedError(f"{out}: refusing to replace it: {why}. --overwrite only replaces a bundle "
                                 "folder; choose a new -o folder or move your files first")
    return p


def staging_dir(out: PathLike, prefix: str = ".bundle-") -> Path:
    """A new empty hidden folder next to ``out`` (same file system, so the final rename is atomic)."""
    parent = Path(out).parent
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=str(parent)))


@contextmanager
def staged_dir(out: PathLike, prefix: str = ".bundle-") -> Iterator[Path]:
    """A :func:`staging_dir` for building ``out`` in, removed on leaving the block unless it was
    published (renamed away) inside it: a failed build leaves nothing of ours behind."""
    tmp = staging_dir(out, prefix=prefix)
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def publish_dir(staging: PathLike, out: PathLike) -> None:
    """Move the complete folder ``staging`` to ``out``, replacing ``out`` only if it is a bundle of ours.

    The old bundle is first renamed to a hidden sibling, the new one renamed into place,
    then the old one deleted: at every instant ``out`` is either absent, the complete old
    bundle or the complete new one. Raises OutputRefusedError when ``out`` became
    something else since :func:`check_output_dir` ran.
    """
    staging, out = Path(staging), Path(out)
    if not os.path.lexists(out):
        staging.rename(out)
        return
    check_output_dir(out, overwrite=True)
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=str(out.parent)))
    os.rmdir(old)  # only the unique name is wanted
    out.rename(old)
    try:
        staging.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)
