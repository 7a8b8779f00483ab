"""Write the protocol splits the README's numbers come from: train / val / held-out.

Held-out = whole sources (speaker prefix before '_') never seen in training; val = the
stratified 15 % split `edge-detect train` makes itself with the same seed, written out so
that pruning, calibration and quantization use exactly the same files.

    python benchmarks/make_splits.py --protocol DATA/protocol.txt --holdout-sources VCTK,ARCTIC --out splits/
"""
from __future__ import annotations

import argparse
from pathlib import Path

from edge_detector.protocol import random_split, read_protocol, source_of, split_by_source, write_protocol


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", required=True)
    ap.add_argument("--holdout-sources", default="", help="comma-separated; empty = no held-out split")
    ap.add_argument("--exclude-sources", default="")
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    entries = read_protocol(a.protocol)
    excluded = {s for s in a.exclude_sources.split(",") if s}
    entries = [e for e in entries if source_of(e.speaker) not in excluded]
    holdout = [s for s in a.holdout_sources.split(",") if s]
    rest, held = split_by_source(entries, holdout) if holdout else (entries, [])
    train, val = random_split(rest, a.val_fraction, a.seed)
    out = Path(a.out)
    for name, part in (("train", train), ("val", val), ("heldout", held)):
        if not part:
            continue
        write_protocol(part, out / f"{name}.txt")
        bona = sum(e.is_bonafide for e in part)
        print(f"{name}: {len(part)} files ({bona} bona fide, {len(part) - bona} spoof) -> {out / (name + '.txt')}")


if __name__ == "__main__":
    main()
