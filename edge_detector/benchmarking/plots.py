"""PNG figures of a benchmark: DET curves, full-vs-edge score scatter, latency histogram.

matplotlib is imported inside the functions (the ``bench`` extra): a device that only
wants numbers does not need it, and a missing matplotlib skips the plots with a note
instead of failing the run. The DET axes are normal deviates, as in the ASVspoof and
NIST DET plots, computed with this package's numpy probit (no scipy at run time).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import compute_det_curve
from .stats import probit

__all__ = ["plot_full", "plot_device", "det_plot", "scatter_plot", "latency_histogram", "tradeoff_plot"]

_DET_TICKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _tick_label(p: float) -> str:
    pct = 100.0 * p
    return f"{pct:g}"


def det_plot(path: Path, curves: list[tuple[str, np.ndarray, np.ndarray]], eers: list[float],
             n_bona: int, n_spoof: int, title: str) -> Path:
    """DET curves (miss vs false alarm, normal-deviate axes) with each model's EER point.

    Rates of 0 or 1 have no normal deviate; they are drawn at the edge of the plot, which
    starts at half the smallest non-zero rate this set can show (1 / 2n), so the axes
    never pretend to a resolution the trial counts do not have.
    """
    plt = _pyplot()
    lo = max(1e-3, 0.5 / max(n_bona, n_spoof))
    lo = min(lo, 0.5 / min(n_bona, n_spoof))
    hi = 1.0 - lo
    fig, ax = plt.subplots(figsize=(6.4, 6.4), dpi=120)
    styles = ["-", "--", "-.", ":"]
    for i, ((name, frr, far), eer) in enumerate(zip(curves, eers)):
        x = probit(np.clip(far, lo, hi))
        y = probit(np.clip(frr, lo, hi))
        line, = ax.plot(x, y, styles[i % len(styles)], lw=2.0 if i == 0 else 1.6,
                        label=f"{name} (EER {100 * eer:.2f} %)", drawstyle="steps-post")
        e = probit(np.clip(eer, lo, hi))
        ax.plot([e], [e], "o", color=line.get_color(), ms=6, mec="black", mew=0.6)
    ticks = [t for t in _DET_TICKS if lo <= t <= hi]
    ax.set_xticks(probit(np.asarray(ticks)))
    ax.set_yticks(probit(np.asarray(ticks)))
    ax.set_xticklabels([_tick_label(t) for t in ticks], fontsize=8)
    ax.set_yticklabels([_tick_label(t) for t in ticks], fontsize=8)
    lim = (float(probit(lo)), float(probit(hi)))
    ax.plot(lim, lim, color="0.6", lw=0.8, zorder=0)
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.set_aspect("equal")
    ax.grid(True, color="0.85", lw=0.6)
    ax.set_xlabel("False acceptance rate: spoofs accepted (%)")
    ax.set_ylabel("False rejection rate: bona fide rejected (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def scatter_plot(path: Path, full: np.ndarray, edges: list[tuple[str, np.ndarray, dict[str, Any]]],
                 is_bona: np.ndarray, title: str) -> Path:
    """Edge score against full score per trial, one panel per bundle, coloured by class.

    The scores are log P(bona fide), which piles confident bona fide trials up just
    below 0 while spoofs spread to large negative values; when the magnitudes span more
    than two decades the axes are symlog so both stay readable, otherwise linear.
    """
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter

    n = len(edges)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 4.8 * rows), dpi=110, squeeze=False)
    allv = np.concatenate([full] + [e for _, e, _ in edges])
    vmin, vmax = float(allv.min()), float(allv.max())
    pad = 0.05 * (vmax - vmin or 1.0)
    # symlog only when magnitudes span more than two decades (confident log-softmax
    # outputs: bona fide near -1e-4, spoofs near -20); a narrow range stays linear.
    mags = np.abs(allv)
    big, small = float(mags.max()), float(np.percentile(mags, 10))
    use_symlog = big > 0 and big / max(small, 1e-9) > 100.0
    linthresh = max(small, big * 1e-4, 1e-9)
    for k, (name, edge, stats) in enumerate(edges):
        ax = axes[k // cols][k % cols]
        ax.scatter(full[is_bona], edge[is_bona], s=14, c="tab:blue", alpha=0.7, label="bona fide", edgecolors="none")
        ax.scatter(full[~is_bona], edge[~is_bona], s=16, c="tab:red", alpha=0.7, marker="x", label="spoof")
        if use_symlog:
            lims = (vmin * 1.5 if vmin < 0 else vmin - linthresh, vmax * 1.5 if vmax > 0 else vmax + linthresh)
            ticks = _symlog_ticks(lims, linthresh)
            ax.set_xscale("symlog", linthresh=linthresh)
            ax.set_yscale("symlog", linthresh=linthresh)
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_ticks(ticks)
                axis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        else:
            lims = (vmin - pad, vmax + pad)
        ax.plot(lims, lims, color="0.5", lw=0.8, zorder=0)
        ax.set_xlim(lims)
        ax.set_ylim(lims)
        r, rho = stats.get("pearson"), stats.get("spearman")
        r_s = "–" if r is None else f"{r:.4f}"
        rho_s = "–" if rho is None else f"{rho:.4f}"
        ax.set_title(f"{name}\nPearson {r_s}, Spearman {rho_s}, max |Δ| {stats.get('max_abs_score_diff', 0):.3g}",
                     fontsize=9)
        scale_note = ", symlog axes" if use_symlog else ""
        ax.set_xlabel(f"full model score (log P bona fide{scale_note})")
        ax.set_ylabel(f"{name} score")
        ax.grid(True, color="0.9", lw=0.6)
        ax.legend(fontsize=8, loc="upper left")
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _symlog_ticks(lims: tuple[float, float], linthresh: float) -> list[float]:
    """Decade ticks outside the linear zone plus 0, thinned to at most ~7 per side."""
    lo_exp = int(np.floor(np.log10(linthresh)))
    ticks = [0.0]
    for sign, bound in ((-1.0, lims[0]), (1.0, lims[1])):
        if sign * bound <= linthresh:
            continue
        hi_exp = int(np.ceil(np.log10(abs(bound))))
        exps = list(range(lo_exp + 1, hi_exp + 1))
        step = max(1, int(np.ceil(len(exps) / 7)))
        ticks += [sign * 10.0 ** e for e in exps[::-1][::step] if abs(10.0 ** e) <= abs(bound)]
    return sorted(ticks)


def latency_histogram(path: Path, series: dict[str, dict[str, list[float]]], title: str) -> Path:
    """Per-run latency distributions: one panel per thread count, one histogram per model.

    When the models differ by more than 5x (the full model against an int8 bundle) the
    bins are log-spaced on a log axis so each distribution keeps a readable shape;
    otherwise a linear axis. A dashed line marks each model's median.
    """
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    threads = list(series)
    fig, axes = plt.subplots(len(threads), 1, figsize=(7.5, 2.6 * len(threads) + 0.7), dpi=110, squeeze=False)
    allv = np.concatenate([np.asarray(v, float) for per in series.values() for v in per.values()])
    allv = allv[allv > 0]
    n_runs = max(len(v) for per in series.values() for v in per.values())
    n_bins = int(np.clip(3 * np.sqrt(n_runs), 12, 60))
    log_axis = float(allv.max()) / float(allv.min()) > 5.0
    if log_axis:
        lo, hi = float(allv.min()) * 0.9, float(allv.max()) * 1.1
        bins = np.geomspace(lo, hi, n_bins * 3)
    else:
        pad = 0.05 * (float(allv.max()) - float(allv.min()) or float(allv.max()))
        lo, hi = float(allv.min()) - pad, float(allv.max()) + pad
        bins = np.linspace(lo, hi, n_bins + 1)
    for ax, t in zip(axes[:, 0], threads):
        for i, (name, values) in enumerate(series[t].items()):
            v = np.asarray(values, float)
            med = float(np.median(v))
            ax.hist(v, bins=bins, histtype="stepfilled", alpha=0.3, color=f"C{i}",
                    label=f"{name}: p50 {_ms(med)}, p99 {_ms(float(np.percentile(v, 99)))}")
            ax.hist(v, bins=bins, histtype="step", lw=1.2, color=f"C{i}")
            ax.axvline(med, color=f"C{i}", ls="--", lw=1.0)
        if log_axis:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: f"{x:g}" if str(f"{x:g}")[0] in "25" else ""))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(lo, hi)
        ax.set_ylabel("runs")
        ax.set_title(f"{t}", fontsize=9, loc="left")
        ax.grid(True, color="0.9", lw=0.6)
        ax.legend(fontsize=8, loc="best", framealpha=0.9)
    axes[-1, 0].set_xlabel("latency per window (ms" + (", log scale)" if log_axis else ")"))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def tradeoff_plot(path: Path, models: list[dict[str, Any]], threads: str, title: str,
                  latency_target: float = 1 / 20, size_target_bytes: float = 2.8e6,
                  spearman_target: float = 0.99) -> Path:
    """The compression trade-off: EER against latency and size, fidelity against latency.

    One point per model of the run (the full model included), latency as p50 at
    ``threads`` intra-op threads, size as the model file. Dotted lines mark the targets
    the edge bundle is held to (latency ``latency_target`` of the full model measured in
    the same run, size ``size_target_bytes``, Spearman ``spearman_target``), so the
    closest point to a target that is not met can be read off the figure.
    """
    plt = _pyplot()
    pts = [m for m in models if threads in m.get("latency", {})]
    full = next((m for m in pts if m["kind"] == "full"), None)
    fig, axes = plt.subplots(1, 3, figsize=(16.5, 5.0), dpi=110)
    panels = [
        (axes[0], lambda m: m["latency"][threads]["p50_ms"], lambda m: 100 * m["accuracy"]["eer"],
         f"p50 latency per window, ms @{threads}t (log)", "EER % (held-out)"),
        (axes[1], lambda m: m["size"]["model_bytes"] / 1e6, lambda m: 100 * m["accuracy"]["eer"],
         "model file, MB (log)", "EER % (held-out)"),
        (axes[2], lambda m: m["latency"][threads]["p50_ms"],
         lambda m: 1.0 if m["kind"] == "full" else m["vs_full"]["spearman"],
         f"p50 latency per window, ms @{threads}t (log)", "Spearman ρ of scores with the full model"),
    ]
    markers = "osD^v<>pP*Xh"
    for ax, fx, fy, xlabel, ylabel in panels:
        for i, m in enumerate(pts):  # same colour and marker for a model in every panel
            y = fy(m)
            if y is None:
                continue
            ax.plot([fx(m)], [y], "s" if m["kind"] == "full" else markers[i % len(markers)], color=f"C{i % 10}",
                    ms=8, mec="black", mew=0.6, ls="none", label=m["name"] if ax is axes[0] else None)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    if full is not None:
        target_ms = full["latency"][threads]["p50_ms"] * latency_target
        for ax in (axes[0], axes[2]):
            ax.axvline(target_ms, ls=":", color="black", lw=1)
            ax.text(target_ms, ax.get_ylim()[1], f" 1/{1 / latency_target:.0f} of full", va="top", fontsize=8)
    axes[1].axvline(size_target_bytes / 1e6, ls=":", color="black", lw=1)
    axes[1].text(size_target_bytes / 1e6, axes[1].get_ylim()[1], f" {size_target_bytes / 1e6:g} MB", va="top",
                 fontsize=8)
    axes[2].axhline(spearman_target, ls=":", color="black", lw=1)
    fig.suptitle(title)
    fig.legend(loc="lower center", ncol=min(7, max(1, len(pts))), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05 + 0.035 * ((len(pts) - 1) // 7), 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def _ms(v: float) -> str:
    return f"{v:.3g} ms" if v < 100 else f"{v:.0f} ms"


def _latency_series(models: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    series: dict[str, dict[str, list[float]]] = {}
    for m in models:
        for t, lat in m.get("latency", {}).items():
            series.setdefault(f"{t} thread{'s' if t != '1' else ''} (CPU)", {})[m["name"]] = lat["samples_ms"]
        if m.get("latency_cuda"):
            series.setdefault(f"{m['latency_cuda']['device']}", {})[m["name"]] = m["latency_cuda"]["samples_ms"]
    return series


def plot_full(report: dict[str, Any], out_dir: Path) -> list[str]:
    """All three figures of a full benchmark; returns their file names (relative to out_dir)."""
    _pyplot()  # fail early (ModuleNotFoundError) before any figure is half written
    from ..protocol import read_protocol
    from .accuracy import read_score_file

    models = report["models"]
    entries = read_protocol(report["data"]["protocol"])
    is_bona = np.asarray([e.is_bonafide for e in entries], dtype=bool)
    scores = {}
    for m in models:
        s = read_score_file(out_dir / report["score_files"][m["name"]])
        scores[m["name"]] = np.asarray([s[e.file_id] for e in entries], dtype=np.float64)
    d = report["data"]
    curves = []
    for m in models:
        frr, far, _ = compute_det_curve(scores[m["name"]][is_bona], scores[m["name"]][~is_bona])
        curves.append((m["name"], frr, far))
    names = []
    det_plot(out_dir / "det.png", curves, [m["accuracy"]["eer"] for m in models], d["bonafide"], d["spoof"],
             title=f"DET: full vs edge — {Path(d['protocol']).name} ({d['bonafide']} bona fide, {d['spoof']} spoof)")
    names.append("det.png")
    full = scores["full"]
    edges = [(m["name"], scores[m["name"]], m["vs_full"]) for m in models if m["kind"] != "full"]
    if edges:
        scatter_plot(out_dir / "scatter.png", full, edges, is_bona, title="Per-trial scores: edge bundle vs full model")
        names.append("scatter.png")
    latency_histogram(out_dir / "latency.png", _latency_series(models),
                      title=f"Latency per window ({report['settings']['runs']} runs after "
                            f"{report['settings']['warmup']} warm-up, batch 1)")
    names.append("latency.png")
    t1 = str(min(int(t) for t in report["settings"]["threads"]))
    tradeoff_plot(out_dir / "tradeoff.png", models, t1,
                  title=f"Trade-off of the variants in this run ({Path(d['protocol']).name}, "
                        f"latency at {t1} thread{'s' if t1 != '1' else ''})")
    names.append("tradeoff.png")
    return names


def plot_device(report: dict[str, Any], out_dir: Path) -> list[str]:
    """The latency histogram of a device-only run."""
    _pyplot()
    cpu = report["environment"]["cpu"]
    where = cpu.get("board") or cpu.get("model") or "this device"
    latency_histogram(out_dir / "latency.png", _latency_series(report["models"]),
                      title=f"Latency per window on {where} ({report['settings']['runs']} runs, batch 1)")
    return ["latency.png"]
