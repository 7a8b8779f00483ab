"""`edge-detect adapt`: refit the final layer on the device's own recordings (numpy + onnxruntime only)."""
from __future__ import annotations

import copy
import datetime as _dt
import json
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

from ..errors import EdgeDetectorError
from ._common import emit, exit_with, fail, log

ADAPT_HELP = """Adapt BUNDLE's final layer to this device's microphone, room and attacks; write NEW_BUNDLE.

\b
Data (--protocol/--audio-dir, repeatable in pairs, or one --audio-dir for all):
  ASVspoof-style lines `SPEAKER FILE_ID - SYSTEM LABEL`: bona fide recorded on the
  device (`listen --record-enrolment DIR` collects them) and spoofs: known attacks
  and/or vocoded copies of the bona fide (`edge-detect vocode` on the training side
  writes a protocol of them). At least 2 files of each class.

What it does: the first window of every file goes through BUNDLE's model to its
embedding output; a new final layer is fitted in numpy (logistic regression with an L2
pull toward the shipped layer, --l2; see edge_detector/adaptation.py for the objective
and its source); calibration and thresholds are refitted on held-back scores. NEW_BUNDLE
holds BUNDLE's files unchanged plus adapted_head.npz, with new sha256s and the
adaptation recorded in its manifest. BUNDLE is never modified.

\b
The guard refuses (exit 3, nothing written) an adaptation that
  - raises the EER on held-back files (k-fold cross-fitting: each file scored by a
    layer fitted without it) above the source bundle's EER on the same files, or
  - would accept any signal of the sanity set (tones, noise, buzz, clicks, formant
    synthesis) that the runtime's speech-presence check lets through to the model.

\b
Exit codes: 0 written · 3 refused by the guard · 7 bad bundle, or one exported without
the embedding output (re-export it) · 5 bad data (one class missing) · 6 missing audio
· 2 usage, or -o is not a new folder / one of our bundles (--overwrite).
"""


@click.command("adapt", help=ADAPT_HELP)
@click.argument("bundle")
@click.option("--protocol", "protocols", required=True, multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Protocol file (repeatable; pairs with --audio-dir in order).")
@click.option("--audio-dir", "audio_dirs", required=True, multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of the protocol's audio (FILE_ID.flac/wav/...); one for all protocols, or one each.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(), help="The new bundle folder.")
@click.option("--l2", type=click.FloatRange(min=0, min_open=True), default=1000.0, show_default=True,
              help="Pull toward the shipped final layer (λ of the objective; larger = stay closer). On the dev "
                   "corpus 1000 kept other data within about 1 pp, 10-100 adapted far more and hurt other data "
                   "(benchmarks/results/adapt).")
@click.option("--folds", type=click.IntRange(min=2), default=4, show_default=True,
              help="Held-back folds for the guard and the calibration (at most the smaller class's size).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fold assignment.")
@click.option("--max-eer-increase", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Refuse when the held-back EER exceeds the source bundle's by more than this (absolute).")
@click.option("--target-far", type=click.FloatRange(0.0, 1.0), default=0.01, show_default=True,
              help="Accept threshold keeps the false-accept rate on the held-back scores at most this.")
@click.option("--target-frr", type=click.FloatRange(0.0, 1.0), default=0.05, show_default=True,
              help="Reject threshold keeps the false-reject rate on the held-back scores at most this.")
@click.option("--synthetic-negatives/--no-synthetic-negatives", default=False, show_default=True,
              help="Also fit on generated non-speech (tones, noise, buzz, clicks, formant vowels) as spoofs, other "
                   "draws than the guard's sanity set (for a runtime without the speech-presence check; on the dev "
                   "corpus it made other families worse: benchmarks/results/adapt).")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="onnxruntime threads (0 = all cores).")
@click.option("--overwrite", is_flag=True, help="Replace -o if it is a bundle (never BUNDLE itself).")
def adapt_command(bundle: str, protocols: tuple[str, ...], audio_dirs: tuple[str, ...], out_dir: str, l2: float,
                  folds: int, seed: int, max_eer_increase: float, target_far: float, target_frr: float,
                  synthetic_negatives: bool, threads: int, overwrite: bool) -> None:
    try:
        if len(audio_dirs) not in (1, len(protocols)):
            raise click.UsageError("give one --audio-dir for all protocols, or one per --protocol (in order)")
        from ..adaptation import AdaptSettings

        settings = AdaptSettings(l2=l2, folds=folds, seed=seed, max_eer_increase=max_eer_increase,
                                 target_far=target_far, target_frr=target_frr)
        summary = run_adaptation(bundle, protocols, audio_dirs, out_dir, settings, threads, overwrite,
                                 synthetic_negatives)
        emit(summary)
        exit_with(0)
    except EdgeDetectorError as exc:
        fail(exc)


def _read_data(protocols, audio_dirs) -> tuple[list[Any], dict[str, Path], list[str]]:
    """Entries of every protocol, their audio paths, and each protocol file's sha256 (DataError on a repeated id)."""
    from ..bundle import sha256_file
    from ..errors import DataError
    from ..protocol import read_protocol, resolve_audio

    entries, paths, hashes = [], {}, []
    for i, proto in enumerate(protocols):
        part = read_protocol(proto)
        found = resolve_audio(part, audio_dirs[i if len(audio_dirs) > 1 else 0])
        for e in part:
            if e.file_id in paths:
                raise DataError(f"{proto}: file id {e.file_id} appears twice in the data")
            paths[e.file_id] = found[e.file_id]
        entries.extend(part)
        hashes.append(sha256_file(proto))
    return entries, paths, hashes


def _first_windows(entries, paths, bundle) -> tuple[np.ndarray, list[Any], list[str]]:
    """First window of every decodable file; bad files are logged and left out (their ids returned)."""
    from ..audio import check_scorable, load_audio
    from ..windows import first_window

    rows, kept, skipped = [], [], []
    with click.progressbar(entries, label="reading", file=sys.stderr) as bar:
        for e in bar:
            try:
                x = load_audio(paths[e.file_id], bundle.sample_rate, max_seconds=bundle.max_seconds).samples
                check_scorable(x, bundle.sample_rate, bundle.min_seconds, name=str(paths[e.file_id]))
            except EdgeDetectorError as exc:
                log(f"skipping {e.file_id}: {exc}")
                skipped.append(e.file_id)
                continue
            rows.append(first_window(x, bundle.window_rule.window))
            kept.append(e)
    batch = np.stack(rows) if rows else np.zeros((0, bundle.window_rule.window), np.float32)
    return batch, kept, skipped


def head_tolerance(manifest: dict[str, Any]) -> float:
    """How far the recorded head may be from the graph's score: float32 rounding, or int8/fp16 rounding."""
    return 1e-3 if not manifest.get("quantization") else 0.1


def run_adaptation(bundle: str, protocols, audio_dirs, out_dir: str, settings: Any, threads: int = 0,
                   overwrite: bool = False, synthetic_negatives: bool = False) -> dict[str, Any]:
    """Everything `adapt` does; returns the summary record. Raises EdgeDetectorError subclasses."""
    from ..adaptation import adapt_head, hard_negatives, reaches_model, sanity_signals
    from ..bundle import load_bundle
    from ..detector import ACCEPT, Detector, decide
    from ..errors import BundleError
    from ..head import EmbeddingScorer, adapted_head, embedding_output, shipped_head
    from ..output_dir import check_output_dir
    from ..session import SessionSettings
    from ..windows import first_window

    src = load_bundle(bundle)
    shipped = shipped_head(src.manifest, where=str(src.path))  # BundleError (exit 7) for an old bundle
    prior = adapted_head(src) or shipped  # adapting an adapted bundle starts from its layer
    out = check_output_dir(out_dir, overwrite, inputs=[src.path])
    entries, paths, hashes = _read_data(protocols, audio_dirs)
    det = Detector(src, SessionSettings(intra_op_threads=threads))
    base = det.scorer.base if isinstance(det.scorer, EmbeddingScorer) else det.scorer
    runner = EmbeddingScorer(base, embedding_output(src.manifest) or "embedding")
    windows, kept, skipped = _first_windows(entries, paths, src)
    y = np.array([e.target for e in kept], dtype=np.int64)
    graph_scores, emb = runner.outputs(windows)
    # The scores the device decides on today: the graph's, or the source's own adapted layer.
    source_scores = prior.score(emb) if prior is not shipped else graph_scores.astype(np.float64)
    gap = float(np.max(np.abs(shipped.score(emb) - graph_scores))) if len(emb) else 0.0
    if gap > head_tolerance(src.manifest):
        raise BundleError(f"{src.path}: the manifest's final layer does not reproduce the model's scores "
                          f"(max |Δ| {gap:.3g}); the bundle cannot be adapted")
    names, signals, sanity_source = sanity_signals(src.sample_rate)
    _, sanity_emb = runner.outputs(np.stack([first_window(s, src.window_rule.window) for s in signals]))
    negatives = None
    if synthetic_negatives:
        _, negatives = runner.outputs(np.stack([first_window(s, src.window_rule.window)
                                                for s in hard_negatives(src.sample_rate)[1]]))
    reach = [reaches_model(x, src.sample_rate, src.window_rule.window) for x in signals]
    result = adapt_head(emb, y, source_scores, prior, settings, sanity_emb, names, negatives, reach)
    result.report["sanity"]["source"] = sanity_source
    result.report["sanity"]["accepted_by_source"] = [
        n for n, v, ok in zip(names, prior.score(sanity_emb), reach)
        if ok and decide(src.calibrate(float(v)), src.accept_threshold, src.reject_threshold) == ACCEPT]
    data = {"protocols": [Path(p).name for p in protocols], "protocol_sha256": hashes,
            "files": int(len(y)), "bonafide": int((y == 1).sum()), "spoof": int((y == 0).sum()),
            "systems": _count(e.system for e in kept), "skipped": len(skipped), "windows": "first"}
    written = write_adapted_bundle(src, out, result, data, settings)
    return {"bundle": str(written), "source": str(src.path), "model_id": written_id(written),
            "files": data["files"], "bonafide": data["bonafide"], "spoof": data["spoof"], "skipped": len(skipped),
            "eer_before": result.eer_before, "eer_held_back": result.eer_held_back,
            "accept": result.thresholds["accept"], "reject": result.thresholds["reject"],
            "sanity_refused_before_the_model": result.report["sanity"]["refused_before_the_model"], "head_gap": gap}


def _count(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def written_id(path: Path) -> str:
    return json.loads((Path(path) / "manifest.json").read_text(encoding="utf-8"))["model_id"]


def write_adapted_bundle(src: Any, out: Path, result: Any, data: dict[str, Any], settings: Any) -> Path:
    """Copy ``src``'s files, add the head file and the new manifest; publish at ``out`` atomically."""
    from ..bundle import sha256_file
    from ..digest import sha256
    from ..head import ADAPTED_HEAD_FILE, FORMULA, head_to_bytes
    from .calibrate import _write_copy

    head_bytes = head_to_bytes(result.head)
    m = copy.deepcopy(src.manifest)
    m["model_id"] = f"{src.model_id.split('-adapted-')[0]}-adapted-{sha256(head_bytes).hexdigest()[:10]}"
    m["adapted_head"] = {"file": ADAPTED_HEAD_FILE, "input": m["onnx"]["embedding_output"], "formula": FORMULA,
                         "replaces": "the graph's final layer (manifest 'head'); the graph's 'score' output is unused"}
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    m["adaptation"] = {"created": now, "tool": "edge-detect adapt",
                       "source": {"model_id": src.model_id, "model_sha256": src.model_sha256,
                                  "manifest_sha256": sha256_file(src.path / "manifest.json"), "folder": src.path.name},
                       "data": data, "folds": settings.folds, "seed": settings.seed, **result.report}
    fitted = {"protocol": ", ".join(data["protocols"]), "bonafide": data["bonafide"], "spoof": data["spoof"],
              "scores": "held-back (cross-fitted) scores of the adapted layer"}
    m["calibration"] = {"method": "logistic-regression (prior 0.5)", "scale": result.calibration.scale,
                        "offset": result.calibration.offset, "fitted_on": fitted,
                        "description": "llr = scale * log P(bona fide) + offset"}
    th = result.thresholds
    m["thresholds"] = {"accept": th["accept"], "reject": th["reject"], "on": "calibrated",
                       "rule": "accept if calibrated >= accept; reject if calibrated < reject; else uncertain",
                       "target_far": settings.target_far, "target_frr": settings.target_frr,
                       "far_at_accept": th["far_at_accept"], "frr_at_reject": th["frr_at_reject"]}
    m["evaluation"] = {"set": fitted["protocol"], "files": data["files"], "eer": th["eer"],
                       "eer_threshold_calibrated": th["eer_threshold"], "windows": "first",
                       "scores": fitted["scores"]}
    m["created"] = now
    m["files"] = {name: {} for name in src.manifest["files"]}
    m["files"][ADAPTED_HEAD_FILE] = {}
    _write_copy(src, m, str(out), extra={ADAPTED_HEAD_FILE: head_bytes}, prefix=".adapt-")
    log(f"wrote {out} (held-back EER {result.eer_held_back:.2%}, source {result.eer_before:.2%}; "
        f"{data['bonafide']} bona fide, {data['spoof']} spoof)")
    return out
