"""bench.md: the report as Markdown tables, rendered from the bench.json record alone.

Rendering only from the JSON (never from live objects) guarantees the Markdown cannot
show a figure the JSON does not hold, and lets anyone re-render an old result.
"""
from __future__ import annotations

from typing import Any, Optional

__all__ = ["render_markdown", "fmt_pct", "fmt_ms", "fmt_bytes"]


def fmt_pct(v: Optional[float], digits: int = 2) -> str:
    return "–" if v is None else f"{100.0 * v:.{digits}f}"


def fmt_num(v: Optional[float], digits: int = 4) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def fmt_ms(v: Optional[float]) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def fmt_bytes(v: Optional[float]) -> str:
    if v is None:
        return "–"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if v >= scale:
            return f"{v / scale:.1f} {unit}"
    return f"{int(v)} B"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines + [""]


def _env_lines(rep: dict[str, Any]) -> list[str]:
    env = rep["environment"]
    cpu = env["cpu"]
    flags = [f for f, on in (cpu.get("flags") or {}).items() if on]
    pk = env["packages"]
    versions = ", ".join(f"{k} {v}" for k, v in pk.items() if v)
    lines = [
        f"- CPU: {cpu.get('model') or '?'}" + (f" ({cpu['board']})" if cpu.get("board") else "")
        + f"; {cpu.get('usable_cpus')} usable of {cpu.get('logical_cpus')} logical CPUs; "
        f"int8 dot product: {cpu.get('int8_dot_product')}",
        f"- CPU flags of interest present: {', '.join(flags) or 'none reported'}",
        f"- Python {env['python']['version']}; {versions}",
        f"- onnxruntime providers available: {', '.join(env['onnxruntime']['available_providers'])}",
        f"- Load average at start / end: {env.get('loadavg_1_5_15')} / {env.get('loadavg_end')}",
    ]
    if env.get("git"):
        lines.append(f"- Code: git {env['git']['commit'][:12]}{' (uncommitted changes)' if env['git']['dirty'] else ''}")
    return lines


def _latency_rows(models: list[dict[str, Any]], full: Optional[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for m in models:
        for t, lat in m.get("latency", {}).items():
            speed = "–"
            if full is not None and m["kind"] != "full":
                s = m.get("vs_full", {}).get("speedup_p50", {}).get(t)
                speed = f"{s:.2f}×" if s is not None else "–"
            runs_on = f"torch {lat.get('device', 'cpu')}" if m["kind"] == "full" else \
                lat.get("provider", "?").replace("ExecutionProvider", "")
            rows.append([m["name"], runs_on, t, fmt_ms(lat["p50_ms"]), fmt_ms(lat["p90_ms"]), fmt_ms(lat["p99_ms"]),
                         fmt_ms(lat["mean_ms"]), f"{lat['rtf_p50']:.4f}", f"{lat['windows_per_s']:.1f}", speed])
        if m.get("latency_cuda"):
            lat = m["latency_cuda"]
            rows.append([m["name"], f"torch {lat['device']}", "–", fmt_ms(lat["p50_ms"]), fmt_ms(lat["p90_ms"]),
                         fmt_ms(lat["p99_ms"]), fmt_ms(lat["mean_ms"]), f"{lat['rtf_p50']:.4f}",
                         f"{lat['windows_per_s']:.1f}", "–"])
    return rows


def _process_rows(models: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for m in models:
        for t, p in m.get("process", {}).items():
            runs = ", ".join(f"{v:.0f}" for v in p["cold_start_runs_ms"])
            rows.append([m["name"], t, f"{p['cold_start_ms']:.0f} ({runs})", fmt_bytes(p["peak_rss_bytes"]),
                         fmt_bytes(p.get("rss_after_imports_bytes")),
                         "yes" if p["torch_imported"] else "no"])
    return rows


def render_markdown(rep: dict[str, Any]) -> str:
    """The whole report; sections depend on the mode (device-only has no accuracy)."""
    s = rep["settings"]
    models = rep["models"]
    full = next((m for m in models if m["kind"] == "full"), None)
    out = [f"# edge-detect bench ({rep['mode']})", "", f"Created {rep['created']}.", "",
           "```", rep["command"]["command_line"], "```", ""]
    if rep["mode"] == "full":
        d = rep["data"]
        out += [f"- Data: `{d['protocol']}` — {d['files']} files ({d['bonafide']} bona fide, {d['spoof']} spoof, "
                f"{len(d['systems'])} spoofing systems); sources: "
                + ", ".join(f"{k} {v}" for k, v in d["sources"].items()),
                f"- Windows: {s['windows']}",
                f"- Reference: {rep['reference_note']}"
                + (f" ({full['cuda_device_name']}, TF32 off)" if full and full.get("cuda_device_name") else "")]
    else:
        out += [f"- Input window: {rep['input']}"]
    out += _env_lines(rep) + [""]

    out += ["## Models", ""]
    rows = []
    for m in models:
        if m["kind"] == "full":
            what, ident = "PyTorch fp32 checkpoint", m["checkpoint_sha256"][:12]
        else:
            q = m.get("quantization")
            what = m["variant"] + (f", {q.get('method', q.get('recipe', 'quantized'))}" if isinstance(q, dict) else "")
            ident = m["model_id"]
        rows.append([m["name"], what, ident, f"{m['parameters']:,}", fmt_bytes(m["size"]["model_bytes"]),
                     fmt_bytes(m["size"]["bundle_bytes"])])
    out += _table(["model", "kind", "id", "params", "model on disk", "bundle on disk"], rows)

    if rep["mode"] == "full" and full is not None:
        out += ["## Accuracy", "",
                "EER from `edge_detector.metrics.compute_eer` (ASVspoof convention) on raw scores; ΔEER = edge − full "
                "in percentage points; min t-DCF with ASVspoof 2019 costs when ASV scores are given. Agreement: "
                "three-way decisions of full vs edge through *the bundle's* calibration and thresholds; and binary "
                "decisions of each model at *its own* EER threshold.", ""]
        rows = []
        for m in models:
            a = m["accuracy"]
            v = m.get("vs_full", {})
            ag = v.get("agreement", {})
            rows.append([
                m["name"], f"{m['parameters']:,}", fmt_bytes(m["size"]["model_bytes"]), fmt_pct(a["eer"]),
                fmt_num(a["eer_threshold"]), "–" if m is full else f"{100 * v['eer_drop']:+.2f}",
                fmt_num(a.get("min_tdcf")), fmt_num(v.get("pearson")), fmt_num(v.get("spearman")),
                fmt_pct(ag.get("at_bundle_thresholds", {}).get("agreement"), 1),
                fmt_pct(ag.get("at_own_eer_threshold", {}).get("agreement"), 1),
            ])
        out += _table(["model", "params", "size", "EER %", "EER thr (raw)", "ΔEER pp", "min t-DCF", "Pearson",
                       "Spearman", "agree @bundle thr %", "agree @own EER thr %"], rows)

        out += ["## At the shipped thresholds", "",
                "Calibrated score (manifest calibration) against the manifest thresholds. accuracy/FAR/FRR: accept "
                "iff calibrated ≥ accept (an *uncertain* bona fide counts as rejected, as the gate's exit code "
                "does); FRR hard: bona fide below the reject threshold; uncertain: share of trials in the band. "
                "The last column runs the full model's scores through the same calibration and thresholds.", ""]
        rows = []
        for m in models[1:]:
            st = m["shipped_thresholds"]
            fm = st["full_model_at_these_thresholds"]
            rows.append([m["name"], m["calibration"]["method"], f"{st['accept_threshold']:.3f}",
                         f"{st['reject_threshold']:.3f}", fmt_pct(st["accuracy"]), fmt_pct(st["far"]),
                         fmt_pct(st["frr"]), fmt_pct(st["frr_hard"]), fmt_pct(st["uncertain_rate"]),
                         f"{fmt_pct(fm['accuracy'])} / {fmt_pct(fm['far'])} / {fmt_pct(fm['frr'])}"])
        out += _table(["bundle", "calibration", "accept", "reject", "accuracy %", "FAR %", "FRR %", "FRR hard %",
                       "uncertain %", "full model acc / FAR / FRR %"], rows)

    out += [f"## Latency per window", "",
            f"Batch 1, {s['warmup']} warm-up runs then {s['runs']} timed runs, session creation excluded. "
            "RTF = p50 compute time / 4.0375 s of audio; windows/s = 1000 / mean ms (one stream)."
            + (" Full model on the CPU with `torch.set_num_threads`; speed-up = full p50 / edge p50 at the same "
               "thread count, measured in this run." if full else ""), ""]
    out += _table(["model", "runs on", "threads", "p50 ms", "p90 ms", "p99 ms", "mean ms", "RTF", "windows/s",
                   "speed-up"],
                  _latency_rows(models, full))

    out += ["## Edge-only process: cold start and memory", "",
            "Each run is a fresh `python -m edge_detector.benchmarking.probe` that only runs the edge path. Cold "
            "start = process start → first decision printed (median, all runs in brackets; page cache warm after "
            "the first). Peak RSS = VmHWM of that process after the first decision plus "
            f"{s['rss_windows']} more windows.", ""]
    out += _table(["bundle", "threads", "cold start ms", "peak RSS", "RSS after imports", "torch imported"],
                  _process_rows(models))

    if rep["mode"] == "full" and full is not None:
        systems = list(full["accuracy"]["per_system"])
        if systems:
            out += ["## EER per spoofing system (%)", "", "Each system's spoofs against all bona fide trials.", ""]
            rows = []
            for sysname in systems:
                n = full["accuracy"]["per_system"][sysname]["n_spoof"]
                rows.append([sysname, str(n)] + [fmt_pct(m["accuracy"]["per_system"][sysname]["eer"], 1)
                                                 for m in models])
            out += _table(["system", "spoofs"] + [m["name"] for m in models], rows)

    if rep.get("plots"):
        out += ["## Plots", ""] + [f"![{p}]({p})" for p in rep["plots"]] + [""]
    elif rep.get("plots_skipped"):
        out += [f"Plots skipped: {rep['plots_skipped']}.", ""]
    return "\n".join(out)
