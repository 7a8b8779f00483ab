"""ASVspoof 2019 LA protocol files: reading, writing, finding the audio, splitting.

A protocol line is ``SPEAKER FILE_ID - SYSTEM LABEL``, e.g.
``LA_0079 LA_T_1138215 - - bonafide`` or ``LJ DEV_00001 - hifigan_v2 spoof``. The
third column is always ``-`` in the LA track, SYSTEM is ``-`` for bona fide and the
attack / vocoder name for spoofs, LABEL is ``bonafide`` or ``spoof``.

The reader is strict on purpose: a shifted column or a typo in a label would otherwise
train a model on wrong targets without any error. Every problem raises DataError with
the file and line number.

Splits exist because a random split of a corpus whose spoofs mostly come from one
voice lets a model learn the *speaker* rather than the artefact; holding out whole
speakers, systems or sources is what measures generalisation.

Pure Python + pathlib: the device runtime uses this to evaluate labelled folders.
"""
from __future__ import annotations

import os
import random
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from edge_detector.errors import DataError, MissingFileError
from edge_detector.textio import read_text

__all__ = [
    "AUDIO_EXTENSIONS",
    "DEFAULT_HOLDOUT_SOURCES",
    "LABELS",
    "ProtocolEntry",
    "find_audio",
    "random_split",
    "read_protocol",
    "resolve_audio",
    "source_of",
    "split_by_source",
    "split_by_speaker",
    "split_by_system",
    "write_protocol",
]

PathLike = Union[str, "os.PathLike[str]"]

BONAFIDE = "bonafide"
SPOOF = "spoof"
LABELS = (BONAFIDE, SPOOF)
NO_SYSTEM = "-"

# Preference order when several encodings of one file exist: lossless first.
AUDIO_EXTENSIONS = (".flac", ".wav", ".mp3", ".ogg")
# ASVspoof distributes audio as ASVspoof2019_LA_<part>/flac/<FILE_ID>.flac.
_ASVSPOOF_SUBDIR = "flac"

# Sources of the dev corpus that are held out to check the model does not learn the
# speaker (see DESIGN.md, "Measuring").
DEFAULT_HOLDOUT_SOURCES = ("VCTK", "ARCTIC", "JSUT", "CSMSC", "LA")

_MAX_LISTED_MISSING = 10


def source_of(speaker: str) -> str:
    """Return the corpus a speaker belongs to: the speaker up to its first underscore.

    ``VCTK_p225`` -> ``VCTK``, ``ARCTIC_slt`` -> ``ARCTIC``, ``LJ`` -> ``LJ``,
    ``LA_0079`` -> ``LA``.
    """
    return speaker.split("_", 1)[0]


def _field_problem(speaker: str, file_id: str, system: str, label: str) -> str | None:
    """Return why these fields cannot form a protocol entry, or None if they can.

    Shared by the reader (which adds file and line) and the dataclass (which raises
    ValueError), so a hand-built entry obeys the same rules as a parsed one and always
    writes back to a readable line.
    """
    for name, value in (("speaker", speaker), ("file id", file_id),
                        ("system", system), ("label", label)):
        if not isinstance(value, str) or not value:
            return f"empty or non-text {name}: {value!r}"
        if len(value.split()) != 1 or value.strip() != value:
            return f"{name} contains whitespace: {value!r}"
    if label not in LABELS:
        return f"label must be 'bonafide' or 'spoof', got {label!r}"
    if label == BONAFIDE and system != NO_SYSTEM:
        return f"a bona fide entry must have system '-', got {system!r}"
    if label == SPOOF and system == NO_SYSTEM:
        return "a spoof entry must name its system (got '-')"
    # The file id becomes a file name: refuse anything that could leave audio_dir.
    if "/" in file_id or "\\" in file_id or file_id in (".", ".."):
        return f"file id must be a plain file name, got {file_id!r}"
    return None


@dataclass(frozen=True)
class ProtocolEntry:
    """One labelled trial of a protocol file."""

    speaker: str
    file_id: str
    system: str
    label: str

    def __post_init__(self) -> None:
        problem = _field_problem(self.speaker, self.file_id, self.system, self.label)
        if problem is not None:
            raise ValueError(problem)

    @property
    def is_bonafide(self) -> bool:
        return self.label == BONAFIDE

    @property
    def target(self) -> int:
        """Training target: 1 = bona fide, 0 = spoof (RawNet2's class order)."""
        return 1 if self.label == BONAFIDE else 0

    @property
    def source(self) -> str:
        """The corpus of the speaker (see `source_of`)."""
        return source_of(self.speaker)

    def to_line(self) -> str:
        """The protocol line of this entry, without newline."""
        return f"{self.speaker} {self.file_id} {NO_SYSTEM} {self.system} {self.label}"


def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise MissingFileError(f"{what} not found: {path}")
    try:
        return read_text(path)  # UTF-8, a leading BOM dropped
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: {what} is not UTF-8 text ({exc})") from exc


def read_protocol(path: PathLike) -> list[ProtocolEntry]:
    """Parse a protocol file into entries, in file order.

    Blank lines and lines starting with ``#`` are ignored. A malformed line, an
    unknown label, an inconsistent system column, a duplicate file id or a file with
    no entries raises DataError naming the file and line. A missing file raises
    MissingFileError.
    """
    path = Path(path)
    text = _read_text(path, "protocol file")
    entries: list[ProtocolEntry] = []
    first_line: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}, line {lineno}"
        fields = line.split()
        if len(fields) != 5:
            raise DataError(
                f"{where}: expected 5 fields 'SPEAKER FILE_ID - SYSTEM LABEL', "
                f"got {len(fields)}: {line!r}"
            )
        speaker, file_id, dash, system, label = fields
        if dash != NO_SYSTEM:
            raise DataError(f"{where}: third field must be '-', got {dash!r}: {line!r}")
        problem = _field_problem(speaker, file_id, system, label)
        if problem is not None:
            raise DataError(f"{where}: {problem}")
        if file_id in first_line:
            raise DataError(
                f"{where}: duplicate file id {file_id!r} (first on line "
                f"{first_line[file_id]})"
            )
        first_line[file_id] = lineno
        entries.append(ProtocolEntry(speaker, file_id, system, label))
    if not entries:
        raise DataError(f"{path}: protocol file has no entries")
    return entries


def write_protocol(entries: Iterable[ProtocolEntry], path: PathLike) -> Path:
    """Write entries as a protocol file that `read_protocol` reads back identically.

    Used to save the subsets a split produced, so a training run can name the exact
    file list it saw. Duplicate file ids raise DataError rather than writing a file
    that could not be read back. The file is written to a temporary name first and
    then renamed, so an interrupted run never leaves half a protocol behind.
    """
    path = Path(path)
    lines: list[str] = []
    seen: set[str] = set()
    for entry in entries:
        if entry.file_id in seen:
            raise DataError(f"cannot write {path}: duplicate file id {entry.file_id!r}")
        seen.add(entry.file_id)
        lines.append(entry.to_line())
    if not lines:
        raise DataError(f"cannot write {path}: no entries")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- audio


def _candidates(audio_dir: Path, file_id: str) -> list[Path]:
    """Locations tried for one file id, most preferred first.

    Files directly in audio_dir win over the ASVspoof ``flac/`` sub-folder; within a
    folder the extension order of AUDIO_EXTENSIONS applies.
    """
    folders = (audio_dir, audio_dir / _ASVSPOOF_SUBDIR)
    return [folder / f"{file_id}{ext}" for folder in folders for ext in AUDIO_EXTENSIONS]


def _check_dir(audio_dir: PathLike) -> Path:
    folder = Path(audio_dir)
    if not folder.is_dir():
        raise MissingFileError(f"audio folder not found: {folder}")
    return folder


def find_audio(audio_dir: PathLike, file_id: str) -> Path:
    """Return the audio file of `file_id` in `audio_dir`, or raise MissingFileError.

    Looks for FILE_ID.flac, .wav, .mp3, .ogg (in that order) directly in audio_dir,
    then in audio_dir/flac/ (the layout of the ASVspoof distribution).
    """
    folder = _check_dir(audio_dir)
    for candidate in _candidates(folder, file_id):
        if candidate.is_file():
            return candidate
    raise MissingFileError(
        f"no audio for {file_id!r} in {folder} (tried "
        f"{', '.join(AUDIO_EXTENSIONS)} there and in {_ASVSPOOF_SUBDIR}/)"
    )


def _files_in(folder: Path) -> set[str]:
    if not folder.is_dir():
        return set()
    with os.scandir(folder) as it:
        return {e.name for e in it if _is_readable_entry(e)}


def _is_readable_entry(entry: os.DirEntry) -> bool:
    """A regular file, or a FIFO (audio streamed in by another process, read once when scored)."""
    try:
        return entry.is_file() or stat.S_ISFIFO(entry.stat().st_mode)
    except OSError:  # a dangling symlink
        return False


def resolve_audio(entries: Iterable[ProtocolEntry], audio_dir: PathLike) -> dict[str, Path]:
    """Map every entry's file id to its audio file, or fail listing what is missing.

    Checks the whole protocol before training starts, so a missing file is reported
    in seconds instead of crashing a data loader hours later. The folder is listed
    once (a stat per file would be slow on network storage with 100k files); the
    preference order is that of `find_audio`. Raises MissingFileError naming up to 10
    missing ids and how many are missing in total.
    """
    folder = _check_dir(audio_dir)
    present = {
        folder: _files_in(folder),
        folder / _ASVSPOOF_SUBDIR: _files_in(folder / _ASVSPOOF_SUBDIR),
    }
    resolved: dict[str, Path] = {}
    missing: list[str] = []
    total = 0
    for entry in entries:
        total += 1
        for candidate in _candidates(folder, entry.file_id):
            if candidate.name in present[candidate.parent]:
                resolved[entry.file_id] = candidate
                break
        else:
            missing.append(entry.file_id)
    if missing:
        shown = ", ".join(missing[:_MAX_LISTED_MISSING])
        more = len(missing) - _MAX_LISTED_MISSING
        suffix = f" and {more} more" if more > 0 else ""
        raise MissingFileError(
            f"{len(missing)} of {total} audio files missing in {folder}: {shown}{suffix}"
        )
    return resolved


# --------------------------------------------------------------------------- splits


def _normalise_holdout(values: str | Iterable[str]) -> list[str]:
    # A bare string is one value, not a sequence of characters.
    if isinstance(values, str):
        return [values]
    return list(dict.fromkeys(values))


def _split(
    entries: Sequence[ProtocolEntry],
    holdout: str | Iterable[str],
    key: Callable[[ProtocolEntry], str],
    what: str,
) -> tuple[list[ProtocolEntry], list[ProtocolEntry]]:
    wanted = _normalise_holdout(holdout)
    if not wanted:
        raise DataError(f"no {what} given to hold out")
    available = {key(e) for e in entries}
    unknown = [v for v in wanted if v not in available]
    if unknown:
        raise DataError(
            f"held-out {what} not in the protocol: {', '.join(unknown)} "
            f"(available: {', '.join(sorted(available))})"
        )
    held = set(wanted)
    train = [e for e in entries if key(e) not in held]
    heldout = [e for e in entries if key(e) in held]
    if not train:
        raise DataError(f"holding out {what} {', '.join(wanted)} leaves nothing to train on")
    if not heldout:  # unreachable after the check above, kept for clarity
        raise DataError(f"holding out {what} {', '.join(wanted)} selects nothing")
    return train, heldout


def split_by_speaker(
    entries: Sequence[ProtocolEntry], holdout_speakers: str | Iterable[str]
) -> tuple[list[ProtocolEntry], list[ProtocolEntry]]:
    """Return (train, heldout) where heldout holds every trial of the given speakers."""
    return _split(entries, holdout_speakers, lambda e: e.speaker, "speakers")


def split_by_system(
    entries: Sequence[ProtocolEntry], holdout_systems: str | Iterable[str]
) -> tuple[list[ProtocolEntry], list[ProtocolEntry]]:
    """Return (train, heldout) where heldout holds every trial of the given systems.

    Holding out attack systems measures detection of unseen attacks, as the ASVspoof
    2019 evaluation set does (A07-A19 are absent from training).
    """
    return _split(entries, holdout_systems, lambda e: e.system, "systems")


def split_by_source(
    entries: Sequence[ProtocolEntry],
    holdout_prefixes: str | Iterable[str] = DEFAULT_HOLDOUT_SOURCES,
) -> tuple[list[ProtocolEntry], list[ProtocolEntry]]:
    """Return (train, heldout) where heldout holds every trial of the given sources.

    The source of an entry is its speaker up to the first underscore (`source_of`):
    a whole corpus is held out, so the score cannot come from recognising a voice
    or a recording set-up seen in training.
    """
    return _split(entries, holdout_prefixes, lambda e: e.source, "sources")


def random_split(
    entries: Sequence[ProtocolEntry], fraction: float, seed: int = 0
) -> tuple[list[ProtocolEntry], list[ProtocolEntry]]:
    """Return (train, validation) with about `fraction` of each label in validation.

    Stratified by label so a small validation set still has both classes in the
    corpus's proportion (an EER needs both). Each label with at least two entries
    gets at least one entry on each side. Deterministic for a given seed; both
    outputs keep the protocol's order. Raises ValueError for a fraction outside
    (0, 1) and DataError if a side would be empty.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be strictly between 0 and 1, got {fraction!r}")
    rng = random.Random(seed)
    valid_idx: set[int] = set()
    for label in LABELS:
        indices = [i for i, e in enumerate(entries) if e.label == label]
        n = len(indices)
        if n == 0:
            continue
        k = int(round(fraction * n))
        if n >= 2:
            k = min(max(k, 1), n - 1)
        rng.shuffle(indices)
        valid_idx.update(indices[:k])
    train = [e for i, e in enumerate(entries) if i not in valid_idx]
    valid = [e for i, e in enumerate(entries) if i in valid_idx]
    if not train or not valid:
        raise DataError(
            f"random split of {len(entries)} entries with fraction {fraction} "
            "leaves one side empty"
        )
    return train, valid


def csv_values(value: Optional[str]) -> list[str]:
    """``"A, B,,C"`` → ``["A", "B", "C"]`` (for comma-separated command-line options)."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def training_splits(
    protocol_path: PathLike,
    exclude_sources: Optional[str] = None,
    holdout_sources: Optional[str] = None,
    val_protocol: Optional[PathLike] = None,
    val_fraction: float = 0.15,
    seed: int = 1234,
) -> tuple[list[ProtocolEntry], list[ProtocolEntry], list[ProtocolEntry]]:
    """(train, validation, held-out) exactly as `train` and `prune` make them.

    One function so that pruning and fine-tuning never see the validation files the
    source model was selected on, and held-out sources stay out of both.
    """
    entries = read_protocol(protocol_path)
    excluded = set(csv_values(exclude_sources))
    if excluded:
        entries = [e for e in entries if source_of(e.speaker) not in excluded]
    heldout: list[ProtocolEntry] = []
    if holdout_sources:
        entries, heldout = split_by_source(entries, csv_values(holdout_sources))
    if val_protocol:
        return entries, read_protocol(val_protocol), heldout
    train, val = random_split(entries, val_fraction, seed)
    return train, val, heldout
