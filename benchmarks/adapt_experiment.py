"""Few-shot adaptation on the dev corpus: one channel + one spoof family play "the device".

    python benchmarks/adapt_experiment.py DATA BUNDLE [--out benchmarks/results/adapt] [--ks 8,16,32,64]

The device set is every bona fide file whose corpus (``SOURCES.tsv``) contains
``--device-corpus`` (default: the 8 kHz telephone-band Asterisk prompts) plus every spoof
of ``--device-family`` (default ``classic_tts``: espeak-ng, festival, flite, mbrola, the
engines a telephone line meets). For each k, ``--repeats`` random draws of k bona fide +
k spoof files of the device set are the enrolment data; the adaptation is exactly what
`edge-detect adapt` runs (:func:`edge_detector.adaptation.adapt_head`: same objective,
guard, synthetic negatives and sanity set), on the first window of each file. Reported
per k (mean and range over the draws): the EER on the rest of the device set and on all
other files before/after, the EER of every other spoof family against all other bona fide
before/after (the largest increase must stay within 1 pp), and how often the guard refused.

A BUNDLE exported before the embedding output existed is upgraded in a temporary copy
first (:func:`export.embedding.upgrade_bundle`, needs onnx); the score is unchanged.
Embeddings are computed once (one thread by default); every adaptation is numpy on them.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_detector.adaptation import (AdaptationRefused, AdaptSettings, adapt_head, hard_negatives,
                                      reaches_model, sanity_signals)
from edge_detector.audio import load_audio
from edge_detector.bundle import load_bundle
from edge_detector.detector import Detector
from edge_detector.errors import EdgeDetectorError
from edge_detector.head import EmbeddingScorer, embedding_output, shipped_head
from edge_detector.metrics import compute_eer
from edge_detector.protocol import read_protocol, resolve_audio
from edge_detector.session import SessionSettings
from edge_detector.windows import first_window


def eer(scores: np.ndarray, y: np.ndarray) -> float:
    return compute_eer(scores[y == 1], scores[y == 0])[0]


def embed_all(det: Detector, paths: list[Path], window: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Graph scores [n], embeddings [n, H] of the first window of every decodable file, and the kept indices."""
    runner = EmbeddingScorer(det.scorer, embedding_output(det.bundle.manifest) or "embedding")
    scores, embs, kept, rows = [], [], [], []

    def flush() -> None:
        s, e = runner.outputs(np.stack(rows))
        scores.append(s)
        embs.append(e)
        rows.clear()

    t0 = time.time()
    for i, p in enumerate(paths):
        try:
            rows.append(first_window(load_audio(p, det.bundle.sample_rate).samples, window))
            kept.append(i)
        except EdgeDetectorError as exc:
            print(f"skipping {p.name}: {exc}", file=sys.stderr)
        if len(rows) == 32:
            flush()
        if (i + 1) % 500 == 0:
            print(f"{i + 1}/{len(paths)} files, {time.time() - t0:.0f} s", file=sys.stderr)
    if rows:
        flush()
    return np.concatenate(scores).astype(np.float64), np.concatenate(embs), kept


def family_eers(scores: np.ndarray, y: np.ndarray, fam: np.ndarray) -> dict[str, float]:
    """EER of each spoof family against all bona fide of the same set."""
    out = {}
    for f in sorted(set(fam[y == 0])):
        sel = (y == 1) | (fam == f)
        out[f] = eer(scores[sel], y[sel])
    return out


def summarise(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())} if v.size else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="corpus folder: protocol.txt, SOURCES.tsv, FILE_ID.flac")
    ap.add_argument("bundle")
    ap.add_argument("--out", default="benchmarks/results/adapt")
    ap.add_argument("--ks", default="8,16,32,64")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device-corpus", default="Asterisk prompts")
    ap.add_argument("--device-family", default="classic_tts")
    ap.add_argument("--l2", default=str(AdaptSettings.l2), help="comma-separated values of adapt's --l2 to compare")
    ap.add_argument("--negatives", default="on", help="synthetic negatives: on, off or on,off (compare)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", default=None, help="npz of the embeddings (reused when model and files match)")
    a = ap.parse_args()
    data, out = Path(a.data), Path(a.out)
    command = " ".join(["python", shlex.quote(sys.argv[0]), "$DATA", *map(shlex.quote, sys.argv[2:])])

    bundle = load_bundle(a.bundle)
    upgraded = embedding_output(bundle.manifest) is None
    tmp = tempfile.TemporaryDirectory(prefix="adapt-exp-")
    if upgraded:
        from export.embedding import upgrade_bundle

        bundle = load_bundle(upgrade_bundle(bundle.path, Path(tmp.name) / "bundle"))
    det = Detector(bundle, SessionSettings(intra_op_threads=a.threads))
    prior = shipped_head(bundle.manifest)

    meta = {r["file_id"]: r for r in csv.DictReader(open(data / "SOURCES.tsv", encoding="utf-8"), delimiter="\t")}
    entries = read_protocol(data / "protocol.txt")
    paths = resolve_audio(entries, data)
    cache = Path(a.cache) if a.cache else None
    ids = np.array([e.file_id for e in entries])
    if cache is not None and cache.exists() and str(np.load(cache)["model_sha256"]) == bundle.model_sha256 \
            and np.array_equal(np.load(cache)["ids"], ids):
        c = np.load(cache)
        graph, emb, kept = c["graph"], c["emb"], list(c["kept"])
    else:
        graph, emb, kept = embed_all(det, [paths[e.file_id] for e in entries], bundle.window_rule.window)
        if cache is not None:
            np.savez(cache, model_sha256=bundle.model_sha256, ids=ids, graph=graph, emb=emb, kept=np.array(kept))
    entries = [entries[i] for i in kept]
    y = np.array([e.target for e in entries])
    fam = np.array([meta[e.file_id]["family"] if e.target == 0 else "-" for e in entries])
    corpus = np.array([meta[e.file_id]["corpus"] for e in entries])
    dev_bona = np.flatnonzero((y == 1) & np.array([a.device_corpus in c for c in corpus]))
    dev_spoof = np.flatnonzero((y == 0) & (fam == a.device_family))
    device = np.zeros(len(y), bool)
    device[dev_bona] = device[dev_spoof] = True
    other = ~device

    names, signals, sanity_source = sanity_signals(bundle.sample_rate)
    runner = EmbeddingScorer(det.scorer, embedding_output(bundle.manifest) or "embedding")
    s_graph, s_emb = runner.outputs(np.stack([first_window(s, bundle.window_rule.window) for s in signals]))
    neg = runner.outputs(np.stack([first_window(s, bundle.window_rule.window)
                                   for s in hard_negatives(bundle.sample_rate)[1]]))[1]
    negatives = {"on": neg, "off": None}
    reach = [reaches_model(x, bundle.sample_rate, bundle.window_rule.window) for x in signals]
    src_accepts = [n for n, v, ok in zip(names, s_graph, reach)
                   if ok and bundle.calibrate(float(v)) >= bundle.accept_threshold]
    l2s = [float(v) for v in a.l2.split(",")]
    other_fam_before = family_eers(graph[other], y[other], fam[other])

    runs = []
    for neg_mode, l2, k in [(n, l2, int(k)) for n in a.negatives.split(",") for l2 in l2s for k in a.ks.split(",")]:
        settings = AdaptSettings(l2=l2)
        if k >= min(len(dev_bona), len(dev_spoof)):
            print(f"k={k}: the device set has too few files", file=sys.stderr)
            continue
        for r in range(a.repeats):
            rng = np.random.default_rng(1000 * k + r)
            enrol = np.concatenate([rng.choice(dev_bona, k, replace=False), rng.choice(dev_spoof, k, replace=False)])
            rest = device.copy()
            rest[enrol] = False
            rec = {"negatives": neg_mode, "l2": l2, "k": k, "repeat": r, "device_rest_files": int(rest.sum()),
                   "eer_device_rest_before": eer(graph[rest], y[rest]), "eer_other_before": eer(graph[other], y[other])}
            try:
                res = adapt_head(emb[enrol], y[enrol], graph[enrol], prior, settings, s_emb, names,
                                 negatives[neg_mode], reach)
            except AdaptationRefused as exc:
                rec.update({"refused": True, "reason": str(exc)})
                runs.append(rec)
                continue
            after = res.head.score(emb)
            fam_after = family_eers(after[other], y[other], fam[other])
            rec.update({"refused": False, "eer_device_rest_after": eer(after[rest], y[rest]),
                        "eer_other_after": eer(after[other], y[other]),
                        "eer_enrolment_held_back": res.eer_held_back,
                        "max_other_family_increase": max(fam_after[f] - other_fam_before[f] for f in fam_after),
                        "other_family_after": fam_after, "weight_change": res.report["weight_change_relative"]})
            runs.append(rec)
            print(json.dumps({k_: v for k_, v in rec.items() if k_ != "other_family_after"}), file=sys.stderr)

    summary = []
    for key3 in sorted({(r["negatives"], r["l2"], r["k"]) for r in runs}):
        rs = [r for r in runs if (r["negatives"], r["l2"], r["k"]) == key3]
        ok = [r for r in rs if not r["refused"]]
        row = {"negatives": key3[0], "l2": key3[1], "k": key3[2], "draws": len(rs), "refused": len(rs) - len(ok),
               "eer_device_rest_before": summarise([r["eer_device_rest_before"] for r in rs]),
               "eer_other_before": summarise([r["eer_other_before"] for r in rs])}
        for key in ("eer_device_rest_after", "eer_other_after", "max_other_family_increase"):
            row[key] = summarise([r[key] for r in ok])
        summary.append(row)
    result = {
        "command": command, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "bundle": {"model_id": bundle.model_id, "model_sha256": bundle.model_sha256,
                   "embedding_added_by_upgrade": upgraded},
        "device": {"bonafide_corpus_contains": a.device_corpus, "spoof_family": a.device_family,
                   "bonafide": int(len(dev_bona)), "spoof": int(len(dev_spoof))},
        "other": {"files": int(other.sum()), "bonafide": int((y[other] == 1).sum()), "spoof": int((y[other] == 0).sum())},
        "settings": {"l2": l2s, "folds": AdaptSettings.folds, "synthetic_negatives": a.negatives,
                     "windows": "first", "enrolment": "k bona fide + k spoof of the device set per draw"},
        "sanity": {"source": sanity_source, "items": len(names), "reach_model": int(sum(reach)),
                   "accepted_by_source_bundle": src_accepts},
        "other_family_eer_before": other_fam_before, "summary": summary, "runs": runs,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "adapt_experiment.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "README.md").write_text(report(result))
    print(report(result))


def pct(d: dict[str, float]) -> str:
    if not d:
        return "–"
    return f"{100 * d['mean']:.1f} ({100 * d['min']:.1f}–{100 * d['max']:.1f})"


def report(r: dict) -> str:
    lines = [
        "# Few-shot adaptation on the dev corpus (`edge-detect adapt`'s fit and guard)", "",
        f"Bundle `{r['bundle']['model_id']}`"
        + (" (embedding output added to a copy by `export.embedding.upgrade_bundle`)" if r["bundle"][
            "embedding_added_by_upgrade"] else "") + ".",
        f"Device: {r['device']['bonafide']} bona fide files whose corpus contains \"{r['device']['bonafide_corpus_contains']}\""
        f" + {r['device']['spoof']} spoofs of family `{r['device']['spoof_family']}`; other data: "
        f"{r['other']['files']} files ({r['other']['bonafide']} bona fide, {r['other']['spoof']} spoof).",
        f"Settings: {r['settings']['folds']} held-back folds, first window; enrolment = "
        f"{r['settings']['enrolment']}. The source bundle accepts {len(r['sanity']['accepted_by_source_bundle'])} "
        f"of {r['sanity']['items']} sanity signals at its own thresholds ({r['sanity']['reach_model']} of them pass "
        "the runtime's speech-presence check and reach the model).", "",
        "EER % as mean (min–max) over the draws; \"other fam. Δ\" = largest increase of any other spoof family's EER "
        "(against all other bona fide), pp.", "",
        "| negatives | l2 | k | draws | refused | device rest before | device rest after | other before | other after | "
        "other fam. Δ pp |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in r["summary"]:
        d = s["max_other_family_increase"]
        delta = f"{100 * d['mean']:+.1f} (max {100 * d['max']:+.1f})" if d else "–"
        lines.append(f"| {s['negatives']} | {s['l2']:g} | {s['k']} | {s['draws']} | {s['refused']} | {pct(s['eer_device_rest_before'])} | "
                     f"{pct(s['eer_device_rest_after'])} | {pct(s['eer_other_before'])} | {pct(s['eer_other_after'])} | "
                     f"{delta} |")
    lines += ["", f"Date: {r['date']}. Command (DATA = the dev corpus folder):", "", "```", r["command"], "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
