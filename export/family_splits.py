"""Splits that measure generalisation to *unseen spoofing families* (training side).

A checkpoint picked on systems it was trained on says nothing about a cloned voice it has
never heard. Here whole spoof families (e.g. all voice conversion, all zero-shot TTS) are
kept out of training: one group of families validates (checkpoint selection), another is
the test, seen by nothing but the final report. Bona fide files are split too, so the
validation and test humans are unseen as well: by speaker inside corpora with at least
``min_speakers`` speakers, by file inside the others (a corpus with one voice cannot be
split by speaker without leaving that recording condition out of training entirely).

The family of a spoofing system comes from a sources table (the dev corpus's
``SOURCES.tsv``: tab-separated with a header holding at least ``file_id``, ``label``,
``system``, ``family``, ``corpus``).
"""
from __future__ import annotations

import csv
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from edge_detector.errors import DataError
from edge_detector.protocol import ProtocolEntry


@dataclass(frozen=True)
class SourceInfo:
    family: str  # spoof family, "bonafide" for bona fide files
    corpus: str


def read_sources(path: str | Path) -> dict[str, SourceInfo]:
    """``SOURCES.tsv`` → {file id: (family, corpus)}. BOM-tolerant.

    Raises DataError when a required column is missing.
    """
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        need = {"file_id", "label", "family", "corpus"}
        missing = need - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        out = {}
        for row in reader:
            fam = "bonafide" if row["label"] == "bonafide" else (row["family"] or "unknown")
            out[row["file_id"]] = SourceInfo(fam, row["corpus"] or "unknown")
    return out


def _bucket(key: str, seed: int) -> float:
    """A stable pseudo-random number in [0, 1) for ``key`` (same on every machine)."""
    return (zlib.crc32(f"{seed}|{key}".encode()) & 0xFFFFFFFF) / 2**32


@dataclass
class FamilySplit:
    train: list[ProtocolEntry]
    val: list[ProtocolEntry]
    test: list[ProtocolEntry]

    def summary(self, sources: dict[str, SourceInfo]) -> dict:
        def count(entries: Sequence[ProtocolEntry]) -> dict:
            c: dict[str, int] = defaultdict(int)
            for e in entries:
                c[sources[e.file_id].family if e.file_id in sources else "unlisted"] += 1
            return dict(sorted(c.items()))

        return {"train": count(self.train), "val": count(self.val), "test": count(self.test)}


def family_split(
    entries: Iterable[ProtocolEntry],
    sources: dict[str, SourceInfo],
    val_families: Sequence[str],
    test_families: Sequence[str],
    bonafide_val: float = 0.12,
    bonafide_test: float = 0.12,
    min_speakers: int = 5,
    exclude_corpora: Sequence[str] = (),
    seed: int = 1234,
) -> FamilySplit:
    """Split protocol entries into train / validation / test by spoof family.

    Spoofs of ``val_families`` go to validation, of ``test_families`` to test, all other
    spoofs to training. Bona fide files go to validation / test with the given shares,
    by speaker (corpora with ≥ ``min_speakers`` speakers) or by file (others), with a
    stable hash so the split is the same everywhere. Files of ``exclude_corpora`` are
    dropped (e.g. non-commercial material).

    Raises DataError when a family is named twice, a file is missing from ``sources``, or
    a side ends up without both classes.
    """
    val_f, test_f = set(val_families), set(test_families)
    if val_f & test_f:
        raise DataError(f"families both in validation and test: {', '.join(sorted(val_f & test_f))}")
    entries = list(entries)
    unknown = [e.file_id for e in entries if e.file_id not in sources]
    if unknown:
        raise DataError(f"{len(unknown)} protocol file(s) not in the sources table, e.g. {unknown[:3]}")
    speakers: dict[str, set] = defaultdict(set)
    for e in entries:
        if e.is_bonafide:
            speakers[sources[e.file_id].corpus].add(e.speaker)
    split = FamilySplit([], [], [])
    for e in entries:
        info = sources[e.file_id]
        if info.corpus in exclude_corpora:
            continue
        if not e.is_bonafide:
            side = split.val if info.family in val_f else split.test if info.family in test_f else split.train
            side.append(e)
            continue
        key = e.speaker if len(speakers[info.corpus]) >= min_speakers else e.file_id
        u = _bucket(f"{info.corpus}|{key}", seed)
        side = split.val if u < bonafide_val else split.test if u < bonafide_val + bonafide_test else split.train
        side.append(e)
    for name, side in (("train", split.train), ("val", split.val), ("test", split.test)):
        labels = {e.label for e in side}
        if labels != {"bonafide", "spoof"}:
            raise DataError(f"the {name} side of the family split lacks a class (has {sorted(labels) or 'nothing'})")
    return split


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m export.family_splits``: write train / val / test protocols of a family split."""
    import argparse
    import json

    from edge_detector.protocol import read_protocol, write_protocol

    ap = argparse.ArgumentParser(description=family_split.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", required=True)
    ap.add_argument("--sources", required=True, help="SOURCES.tsv (file_id, label, family, corpus columns)")
    ap.add_argument("--val-families", required=True, help="comma-separated spoof families for checkpoint selection")
    ap.add_argument("--test-families", required=True, help="comma-separated spoof families for the final report")
    ap.add_argument("--exclude-corpora", default="", help="comma-separated corpora dropped entirely")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    csv_list = lambda v: [x.strip() for x in v.split(",") if x.strip()]  # noqa: E731
    sources = read_sources(a.sources)
    split = family_split(read_protocol(a.protocol), sources, csv_list(a.val_families), csv_list(a.test_families),
                         exclude_corpora=csv_list(a.exclude_corpora), seed=a.seed)
    out = Path(a.out)
    for name in ("train", "val", "test"):
        write_protocol(getattr(split, name), out / f"{name}.txt")
    print(json.dumps(split.summary(sources)))


if __name__ == "__main__":
    main()
