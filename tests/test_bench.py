"""`edge-detect bench` and the benchmarking package, on tiny models and synthetic audio.

No timing is asserted anywhere (speed figures come from benchmarks/, not from tests):
these tests check that every figure is present and computed on the right trials, that
the join check fails loudly, that the numpy statistics match scipy, that the device-only
path runs with torch unimportable, and that the README table generator touches only the
text between its markers.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from audio_synth import buzzy, speechlike, write
from conftest import set_thresholds

from edge_detector.benchmarking.accuracy import JoinError, join_scores, read_score_file
from edge_detector.benchmarking.stats import pearson, probit, rankdata_average, spearman
from edge_detector.cli import main
from edge_detector.protocol import ProtocolEntry

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--threads", "1", "--runs", "3", "--warmup", "1", "--cold-runs", "1", "--rss-windows", "1"]


# --------------------------------------------------------------------------- data


def _make_corpus(folder: Path) -> tuple[Path, Path, list[ProtocolEntry]]:
    """4 bona fide (speech-like, two sample rates) and 6 spoofs from two 'systems'."""
    audio = folder / "audio"
    audio.mkdir(parents=True)
    entries = []
    for i in range(4):
        sr = 16000 if i % 2 == 0 else 22050
        write(audio / f"B{i}.wav", speechlike(1.5, sr=sr, seed=10 + i, f0=100 + 30 * i), sr=sr)
        entries.append(ProtocolEntry(f"SPK_{i}", f"B{i}", "-", "bonafide"))
    for i in range(6):
        system = "sysA" if i < 3 else "sysB"
        x = buzzy(1.5, seed=20 + i) if system == "sysA" else 0.5 * buzzy(1.5, seed=20 + i) + 0.5 * speechlike(1.5, seed=i)
        write(audio / f"S{i}.flac", x.astype(np.float32))
        entries.append(ProtocolEntry("LJ", f"S{i}", system, "spoof"))
    protocol = folder / "protocol.txt"
    protocol.write_text("".join(e.to_line() + "\n" for e in entries))
    return protocol, audio, entries


def _asv_file(path: Path) -> Path:
    rng = np.random.default_rng(0)
    lines = [f"T{i} target {v:.4f}" for i, v in enumerate(rng.normal(3, 1, 40))]
    lines += [f"N{i} nontarget {v:.4f}" for i, v in enumerate(rng.normal(-3, 1, 40))]
    lines += [f"P{i} spoof {v:.4f}" for i, v in enumerate(rng.normal(1, 1.5, 40))]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return _make_corpus(tmp_path_factory.mktemp("bench_corpus"))


@pytest.fixture(scope="module")
def bundles(tiny_bundle_master, tmp_path_factory) -> list[Path]:
    """Two bundles: the tiny export, and a copy with an uncertain band in its thresholds."""
    root = tmp_path_factory.mktemp("bench_bundles")
    a = root / "tiny_fp32"
    b = root / "tiny_band"
    shutil.copytree(tiny_bundle_master, a)
    shutil.copytree(tiny_bundle_master, b)
    set_thresholds(b, accept=0.05, reject=-0.05)
    return [a, b]


@pytest.fixture(scope="module")
def full_run(corpus, bundles, tiny_checkpoint, tmp_path_factory):
    """One full benchmark run shared by the report tests (the slow part, ~10 s)."""
    protocol, audio, _ = corpus
    out = tmp_path_factory.mktemp("bench_out") / "out"
    asv = _asv_file(out.parent / "asv.txt")
    args = ["bench", "--protocol", str(protocol), "--audio-dir", str(audio), "--checkpoint", str(tiny_checkpoint),
            "--bundle", str(bundles[0]), "--bundle", str(bundles[1]), "--asv-scores", str(asv),
            "--reference-device", "cpu", "--out", str(out), *FAST]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "bench.json").read_text())


# --------------------------------------------------------------------------- full report


def test_full_bench_json_has_every_field(full_run, corpus):
    out, rep = full_run
    _, _, entries = corpus
    assert rep["schema"] == "edge-detector-bench/1" and rep["mode"] == "full"
    assert rep["command"]["argv"] and rep["command"]["command_line"].startswith("edge-detect ")
    env = rep["environment"]
    for key in ("cpu", "python", "packages", "onnxruntime", "loadavg_1_5_15"):
        assert key in env
    assert {"model", "flags", "usable_cpus", "int8_dot_product"} <= set(env["cpu"])
    assert env["packages"]["numpy"] and env["onnxruntime"]["available_providers"]
    assert rep["settings"]["threads"] == [1] and rep["settings"]["runs"] == 3
    assert rep["data"]["files"] == len(entries) and rep["data"]["systems"] == {"sysA": 3, "sysB": 3}
    assert rep["asv_scores"]["target"] == 40

    full, *edges = rep["models"]
    assert full["kind"] == "full" and full["scoring_device"] == "cpu"
    assert "cpu" in rep["reference_note"]
    assert full["accuracy"]["min_tdcf"] is not None
    assert set(full["accuracy"]["per_system"]) == {"sysA", "sysB"}
    lat = full["latency"]["1"]
    for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "rtf_p50", "windows_per_s", "samples_ms"):
        assert key in lat
    assert len(lat["samples_ms"]) == 3
    assert "alternating blocks" in rep["settings"]["latency_order"]

    assert [m["name"] for m in edges] == ["tiny_fp32", "tiny_band"]
    for m in edges:
        acc = m["accuracy"]
        # the EER is that of the score file the bench wrote for this model, recomputed here
        from edge_detector.benchmarking.accuracy import read_score_file
        from edge_detector.metrics import compute_eer

        written = read_score_file(out / "scores" / f"{m['name']}.txt")
        bona = [written[e.file_id] for e in entries if e.is_bonafide]
        spoof = [written[e.file_id] for e in entries if not e.is_bonafide]
        assert acc["eer"] == pytest.approx(compute_eer(bona, spoof)[0], abs=1e-9)
        assert acc["min_tdcf"] is not None
        vs = m["vs_full"]
        for key in ("eer_drop", "pearson", "spearman", "max_abs_score_diff", "per_system_eer_drop",
                    "speedup_p50", "latency_ratio_p50", "size_ratio"):
            assert key in vs, key
        # The same model exported: scores agree, so do decisions and EERs.
        assert vs["pearson"] > 0.999 and vs["spearman"] > 0.99
        assert vs["eer_drop"] == pytest.approx(0.0, abs=1e-9)
        assert vs["agreement"]["at_own_eer_threshold"]["agreement"] == 1.0
        assert "at_bundle_thresholds" in vs["agreement"]
        st = m["shipped_thresholds"]
        for key in ("accuracy", "far", "frr", "frr_hard", "uncertain_rate", "decisions",
                    "full_model_at_these_thresholds"):
            assert key in st
        counts = st["decisions"]
        assert sum(counts["bonafide"].values()) == 4 and sum(counts["spoof"].values()) == 6
        assert {"p50_ms", "rtf_p50", "session_create_ms"} <= set(m["latency"]["1"])
        proc = m["process"]["1"]
        assert proc["cold_start_ms"] > 0 and proc["peak_rss_bytes"] > 0
        assert proc["torch_imported"] is False and proc["scipy_imported"] is False
        assert m["size"]["model_bytes"] > 0 and m["size"]["bundle_bytes"] > m["size"]["model_bytes"]
    assert edges[1]["shipped_thresholds"]["reject_threshold"] == -0.05


def test_full_bench_writes_markdown_plots_and_scores(full_run, corpus):
    out, rep = full_run
    _, _, entries = corpus
    md = (out / "bench.md").read_text()
    for heading in ("## Accuracy", "## At the shipped thresholds", "## Latency per window",
                    "## Edge-only process", "## EER per spoofing system"):
        assert heading in md
    assert rep["plots"] == ["det.png", "scatter.png", "latency.png", "tradeoff.png"]
    for name in rep["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name, rel in rep["score_files"].items():
        scores = read_score_file(out / rel)
        assert set(scores) == {e.file_id for e in entries}, name
    # The report's EER is the project's compute_eer on the written scores.
    from edge_detector.metrics import compute_eer

    s = read_score_file(out / rep["score_files"]["full"])
    bona = [s[e.file_id] for e in entries if e.is_bonafide]
    spoof = [s[e.file_id] for e in entries if not e.is_bonafide]
    assert rep["models"][0]["accuracy"]["eer"] == compute_eer(bona, spoof)[0]


# --------------------------------------------------------------------------- join check


def test_interleaved_timing_alternates_blocks_and_counts_runs():
    from edge_detector.benchmarking.latency import time_interleaved

    calls: list[str] = []
    fns = {name: (lambda n=name: calls.append(n)) for name in ("full", "a", "b")}
    out = time_interleaved(fns, warmup=1, runs=7, block=3, block_warmup=1)
    assert {k: len(v) for k, v in out.items()} == {"full": 7, "a": 7, "b": 7}
    assert calls[:3] == ["full", "a", "b"]  # one warm-up call each
    # then rounds of (1 untimed + up to 3 timed) per model, the last round short
    rounds = calls[3:]
    assert rounds[:12] == ["full"] * 4 + ["a"] * 4 + ["b"] * 4
    assert rounds[-6:] == ["full"] * 2 + ["a"] * 2 + ["b"] * 2
    assert len(rounds) == 3 * (4 + 4 + 2)
    with pytest.raises(ValueError):
        time_interleaved(fns, warmup=0, runs=0)


def test_join_scores_lists_missing_and_extra_ids():
    entries = [ProtocolEntry("A", f"F{i}", "-", "bonafide") for i in range(3)]
    ok = join_scores(entries, {"F2": 0.2, "F0": 0.0, "F1": 0.1}, "m")
    assert ok.tolist() == [0.0, 0.1, 0.2]  # protocol order, not dict order
    with pytest.raises(JoinError) as err:
        join_scores(entries, {"F0": 0.0, "F2": 0.2, "X9": 1.0}, "edge")
    msg = str(err.value)
    assert "1 missing: F1" in msg and "1 not in the protocol: X9" in msg and "edge" in msg
    with pytest.raises(JoinError, match="non-finite"):
        join_scores(entries, {"F0": 0.0, "F1": float("nan"), "F2": 0.2}, "m")


def test_bench_fails_loudly_on_score_list_mismatch(corpus, bundles, tiny_checkpoint, tmp_path):
    protocol, audio, entries = corpus
    scores = tmp_path / "full_scores.txt"
    lines = [f"{e.file_id} -0.5" for e in entries[1:]] + ["NOT_IN_PROTOCOL -0.1"]
    scores.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(main, [
        "bench", "--protocol", str(protocol), "--audio-dir", str(audio), "--checkpoint", str(tiny_checkpoint),
        "--bundle", str(bundles[0]), "--full-scores", str(scores), "--reference-device", "cpu",
        "--out", str(tmp_path / "out"), "--no-plots", *FAST])
    assert result.exit_code == 5, result.output
    assert entries[0].file_id in result.output and "NOT_IN_PROTOCOL" in result.output
    assert not (tmp_path / "out" / "bench.json").exists()


def test_bench_fails_loudly_on_undecodable_audio(bundles, tiny_checkpoint, tmp_path):
    protocol, audio, entries = _make_corpus(tmp_path / "c")
    (audio / "S5.flac").write_bytes(b"not audio at all")
    result = CliRunner().invoke(main, [
        "bench", "--protocol", str(protocol), "--audio-dir", str(audio), "--checkpoint", str(tiny_checkpoint),
        "--bundle", str(bundles[0]), "--reference-device", "cpu", "--out", str(tmp_path / "out"), "--no-plots",
        *FAST])
    assert result.exit_code == 5, result.output
    assert "1 missing: S5" in result.output and "cannot decode" in result.output


def test_bench_usage_errors(bundles):
    runner = CliRunner()
    r = runner.invoke(main, ["bench", "--bundle", str(bundles[0])])
    assert r.exit_code == 2 and "--protocol" in r.output
    r = runner.invoke(main, ["bench", "--device-only", str(bundles[0]), "--bundle", str(bundles[0])])
    assert r.exit_code == 2 and "--device-only" in r.output
    r = runner.invoke(main, ["bench", "--device-only", str(bundles[0]), "--threads", "0"])
    assert r.exit_code == 2


def test_bench_refuses_a_missing_cuda_reference(corpus, bundles, tiny_checkpoint, tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    protocol, audio, _ = corpus
    r = CliRunner().invoke(main, [
        "bench", "--protocol", str(protocol), "--audio-dir", str(audio), "--checkpoint", str(tiny_checkpoint),
        "--bundle", str(bundles[0]), "--reference-device", "cuda", "--out", str(tmp_path / "o"), *FAST])
    assert r.exit_code == 2 and "no CUDA device" in r.output


# --------------------------------------------------------------------------- device-only, no torch


def test_device_only_runs_with_torch_unimportable(bundles, tmp_path):
    out = tmp_path / "dev"
    argv = ["edge-detect", "bench", "--device-only", str(bundles[0]), "--out", str(out), *FAST]
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # any 'import torch' now raises ImportError\n"
        f"sys.argv = {argv!r}\n"
        "from edge_detector.cli import main\n"
        "main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rep = json.loads((out / "bench.json").read_text())
    assert rep["mode"] == "device-only"
    assert rep["environment"]["torch_imported_by_bench"] is False
    (m,) = rep["models"]
    assert "accuracy" not in m
    assert {"p50_ms", "p90_ms", "p99_ms", "rtf_p50", "windows_per_s"} <= set(m["latency"]["1"])
    proc1 = m["process"]["1"]
    assert proc1["torch_imported"] is False and proc1["peak_rss_bytes"] > 0 and proc1["cold_start_ms"] > 0
    assert m["size"]["model_bytes"] > 0
    assert "## Latency per window" in (out / "bench.md").read_text()


# --------------------------------------------------------------------------- statistics


def test_pearson_spearman_hand_computed():
    x = [1, 2, 3, 4, 5]
    y = [5, 6, 7, 8, 7]
    # Pearson: sum(dx*dy) = 6, sum(dx^2) = 10, sum(dy^2) = 5.2
    assert pearson(x, y) == pytest.approx(6 / np.sqrt(52), abs=1e-12)
    # y's ranks with the tie averaged: [1, 2, 3.5, 5, 3.5] -> rho = 8 / sqrt(10 * 9.5)
    assert rankdata_average(y).tolist() == [1, 2, 3.5, 5, 3.5]
    assert spearman(x, y) == pytest.approx(8 / np.sqrt(95), abs=1e-12)
    assert rankdata_average([10, 20, 20, 5]).tolist() == [2, 3.5, 3.5, 1]
    assert spearman([1, 2, 3], [1, 4, 9]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) is None and spearman([1, 2, 3], [4, 4, 4]) is None
    with pytest.raises(ValueError):
        pearson([1, 2], [1, 2, 3])


def test_correlations_match_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for _ in range(5):
        x = np.round(rng.normal(size=200), 1)  # many ties
        y = x + np.round(rng.normal(scale=0.5, size=200), 1)
        assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
        assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
        assert np.allclose(rankdata_average(x), stats.rankdata(x, method="average"))


def test_probit_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    p = np.concatenate([np.logspace(-300, -1, 400), np.linspace(0.001, 0.999, 999), 1 - np.logspace(-15, -1, 100)])
    ours, ref = probit(p), stats.norm.ppf(p)
    assert np.max(np.abs(ours - ref) / np.maximum(1.0, np.abs(ref))) < 1e-13
    assert probit(0.5) == 0.0 and probit(0.0) == -np.inf and probit(1.0) == np.inf
    assert np.isnan(probit(-0.1)) and np.isnan(probit(1.5))


# --------------------------------------------------------------------------- README table


def _make_table_module():
    spec = importlib.util.spec_from_file_location("make_table", ROOT / "benchmarks" / "make_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_table_rewrites_only_between_markers(full_run, tmp_path):
    mt = _make_table_module()
    out, rep = full_run
    before = "# Title\n\nHand-written intro.\n\n" + mt.START + "\nold table | x |\n"
    after = mt.END + "\n\nHand-written outro.\n"
    readme = tmp_path / "README.md"
    readme.write_text(before + after)

    assert mt.main([str(out / "bench.json"), "--readme", str(readme), "--check"]) == 1  # stale
    assert readme.read_text() == before + after  # --check writes nothing
    assert mt.main([str(out / "bench.json"), "--readme", str(readme)]) == 0
    text = readme.read_text()
    head, rest = text.split(mt.START)
    middle, tail = rest.split(mt.END)
    assert head + mt.START == before.split(mt.START)[0] + mt.START
    assert mt.END + tail == after
    assert "old table" not in middle
    assert "| full (PyTorch fp32) |" in middle and "| tiny_band |" in middle
    assert "edge-detect bench" in middle  # the command line is cited
    assert mt.main([str(out / "bench.json"), "--readme", str(readme), "--check"]) == 0  # now up to date
    # Idempotent: a second run leaves the file byte-identical.
    mt.main([str(out / "bench.json"), "--readme", str(readme)])
    assert readme.read_text() == text


def test_make_table_refuses_files_without_markers(full_run, tmp_path):
    mt = _make_table_module()
    out, _ = full_run
    readme = tmp_path / "README.md"
    readme.write_text("# No markers here\n")
    assert mt.main([str(out / "bench.json"), "--readme", str(readme)]) == 2
    assert readme.read_text() == "# No markers here\n"
    with pytest.raises(mt.MarkerError):
        mt.replace_between_markers(f"{mt.END}\n{mt.START}\n", "x")
    with pytest.raises(mt.MarkerError):
        mt.replace_between_markers(f"{mt.START}\n{mt.END}\n{mt.START}\n", "x")
