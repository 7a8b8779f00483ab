#!/usr/bin/env python3
"""Write the held-out protocol subset the benchmark scores (whole sources, not random files).

The dev corpus is confounded: most spoofs are the LJSpeech voice and LibriSpeech is
bona fide only, so a model can score well by recognising the speaker. The benchmark
therefore scores only sources the model never trained on (DESIGN.md section 8), the
same split ``edge-detect train --holdout-sources`` holds out, written with the
project's own reader/writer so the subset is byte-for-byte reproducible.

Usage: python benchmarks/make_protocol.py --protocol P --sources VCTK,ARCTIC,JSUT,CSMSC,LA --out F
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter

from edge_detector.protocol import DEFAULT_HOLDOUT_SOURCES, read_protocol, split_by_source, write_protocol


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", required=True, help="Full protocol file.")
    ap.add_argument("--sources", default=",".join(DEFAULT_HOLDOUT_SOURCES),
                    help="Comma-separated sources (speaker prefix before '_') to keep.")
    ap.add_argument("--out", required=True, help="Protocol file to write.")
    args = ap.parse_args(argv)
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    _, held = split_by_source(read_protocol(args.protocol), sources)
    write_protocol(held, args.out)
    labels = Counter(e.label for e in held)
    print(f"wrote {args.out}: {len(held)} files ({labels['bonafide']} bona fide, {labels['spoof']} spoof) "
          f"from sources {', '.join(sources)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
