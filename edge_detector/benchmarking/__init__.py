"""Benchmark harness: the edge bundle against the full model, accuracy and cost side by side.

Everything in this package runs with numpy + onnxruntime only, so the same code
measures latency, memory and cold start on a Raspberry Pi that has no torch
(``edge-detect bench --device-only``). The full PyTorch reference lives on the
training side (:mod:`export.reference`) and is imported lazily, only by the
full benchmark.

Modules:

* :mod:`.stats` — Pearson / Spearman correlation, percentiles, the probit used by
  DET plots (numpy only: scipy must not be a runtime dependency).
* :mod:`.accuracy` — joining score lists with the protocol (fails loudly), EER,
  t-DCF, rates at shipped thresholds, agreement, per-system EER.
* :mod:`.latency` — warm-up + timed runs, latency statistics, real-time factor.
* :mod:`.probe` / :mod:`.process` — a fresh process that runs only the edge path,
  for cold start and peak RSS.
* :mod:`.environment` — CPU model and flags, versions, threads: the context a
  timing needs to be meaningful.
* :mod:`.report` / :mod:`.plots` — bench.json, bench.md and the PNG figures.
"""
from __future__ import annotations

#: Version of the layout of bench.json (bump when a field changes meaning).
BENCH_SCHEMA = "edge-detector-bench/1"
