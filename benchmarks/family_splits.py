"""Write train / val / held-out protocols that hold out whole spoof *families* (SOURCES.tsv).

Bona fide audio has no family, so the held-out set is: every spoof of the held-out families
+ the bona fide files of the validation split (never trained on). The remaining entries are
split train / val exactly as `edge-detect train` splits a protocol itself
(:func:`edge_detector.protocol.random_split`, same fraction and seed).

    python benchmarks/family_splits.py --protocol DATA/protocol.txt --sources DATA/SOURCES.tsv \\
        --holdout-families vc,tts_multispeaker --out /tmp/splits

Then: ``edge-detect train --protocol /tmp/splits/train.txt --val-protocol /tmp/splits/val.txt
--heldout-protocol /tmp/splits/heldout.txt ...``. The protocols name corpus files: keep them
out of the repository.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from edge_detector.protocol import random_split, read_protocol, write_protocol


def read_families(sources_tsv: Path) -> dict[str, str]:
    """``file_id → family`` from a SOURCES.tsv with columns ``file_id`` and ``family``."""
    with open(sources_tsv, newline="", encoding="utf-8") as f:
        return {row["file_id"]: row["family"] for row in csv.DictReader(f, delimiter="\t")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", required=True)
    ap.add_argument("--sources", required=True, help="SOURCES.tsv (file_id, family columns)")
    ap.add_argument("--holdout-families", required=True, help="comma-separated spoof families")
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    families = read_families(Path(a.sources))
    wanted = {f.strip() for f in a.holdout_families.split(",") if f.strip()}
    entries = read_protocol(a.protocol)
    unknown = sorted(wanted - set(families.values()))
    if unknown:
        raise SystemExit(f"no spoof family {unknown} in {a.sources}")
    held_spoof = [e for e in entries if not e.is_bonafide and families.get(e.file_id) in wanted]
    held_ids = {e.file_id for e in held_spoof}
    rest = [e for e in entries if e.file_id not in held_ids]
    train, val = random_split(rest, a.val_fraction, a.seed)
    heldout = [e for e in val if e.is_bonafide] + held_spoof
    out = Path(a.out)
    for name, part in (("train", train), ("val", val), ("heldout", heldout)):
        write_protocol(part, out / f"{name}.txt")
        bona = sum(e.is_bonafide for e in part)
        print(f"{name}: {len(part)} files ({bona} bona fide, {len(part) - bona} spoof) -> {out / (name + '.txt')}")


if __name__ == "__main__":
    main()
