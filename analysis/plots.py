"""Figures of the studies (matplotlib, Agg backend). Plotting only: every number comes from
a study's result object, and every figure carries the command and commit in its footer."""
from __future__ import annotations

import math
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 110
#: Recipe labels of the report in a fixed colour order, so a recipe keeps its colour across figures.
_PALETTE = plt.get_cmap("tab10").colors


def _colors(labels) -> dict:
    return {lab: _PALETTE[i % len(_PALETTE)] for i, lab in enumerate(labels)}


def _finish(fig, path: pathlib.Path, note: str) -> pathlib.Path:
    fig.tight_layout(rect=(0, 0.035, 1, 1))
    fig.text(0.995, 0.006, note, ha="right", va="bottom", fontsize=7, color="0.45")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _envelope(x, y, bins: int = 1500):
    """Max of ``y`` over ``bins`` consecutive chunks (keeps the peaks a plain subsample would miss)."""
    n = len(x)
    if n <= 2 * bins:
        return x, y
    edges = np.linspace(0, n, bins + 1).astype(int)
    starts = edges[:-1]
    return x[starts], np.maximum.reduceat(y, starts)


# -- study 1 -------------------------------------------------------------------------------------
def exp_errors(study, rel_path, abs_path, note: str) -> list[pathlib.Path]:
    """Two grids of panels, one strategy each: relative and absolute error over the domain, with
    the stated bound."""
    curves = study.curves
    cols = 4
    rows = math.ceil(len(curves) / cols)
    out = []
    for kind, path in (("rel", rel_path), ("abs", abs_path)):
        fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 2.9 * rows), squeeze=False)
        for ax, c in zip(axes.flat, curves):
            x = c.octaves
            if kind == "rel":
                keep = c.exact >= 1.0  # below 1 LSB the relative error only measures the output grid
                err = np.where(c.abs_error[keep] > 0, c.abs_error[keep] / c.exact[keep], np.nan)
                bound = c.limit[keep] / c.exact[keep]
                xs = x[keep]
                ax.set_yscale("log")
                ax.set_ylabel("|error| / exact")
            else:
                err = np.where(c.abs_error > 0, c.abs_error, np.nan)
                bound, xs = c.limit, x
                ax.set_yscale("log")
                ax.set_ylabel("|error| (LSB)")
            ex, ey = _envelope(xs, np.nan_to_num(err, nan=0.0))
            bx, by = _envelope(xs, bound)
            ey = np.where(ey > 0, ey, np.nan)  # log scale: exact points are left out
            ax.plot(ex, ey, lw=0.8, color="tab:blue", label="observed (max per bin)")
            ax.plot(bx, by, lw=1.2, color="tab:red", ls="--", label="stated bound")
            ax.set_title(f"{c.label}  (one = {c.one:.0f})", fontsize=9)
            ax.set_xlabel("input (octaves below the max)")
            ax.grid(True, alpha=0.3)
            ax.tick_params(labelsize=8)
        for ax in list(axes.flat)[len(curves):]:
            ax.set_visible(False)
        axes.flat[0].legend(fontsize=8, loc="best")
        what = "Relative error (where exact >= 1 LSB)" if kind == "rel" else "Absolute error in output LSBs"
        fig.suptitle(f"{what} of each exp strategy over its whole integer domain, against its stated bound",
                     fontsize=11)
        out.append(_finish(fig, pathlib.Path(path), note))
    return out


# -- study 2 -------------------------------------------------------------------------------------
def workloads(table, path, note: str) -> pathlib.Path:
    """SQNR per workload, one panel per distribution, one marker series per recipe."""
    colors = _colors(table.labels)
    fig, axes = plt.subplots(1, len(table.distributions), figsize=(5.2 * len(table.distributions), 4.4),
                             squeeze=False)
    x = np.arange(len(table.workloads))
    for ax, dist in zip(axes.flat, table.distributions):
        for i, label in enumerate(table.labels):
            y = [table.sqnr[(dist, w, label)] for w in table.workloads]
            ax.plot(x + (i - len(table.labels) / 2) * 0.04, y, marker="o", ms=4, lw=0.8, color=colors[label],
                    label=label)
        ceil = [table.sqnr[(dist, w, "INT8 ceiling")] for w in table.workloads]
        ax.plot(x, ceil, ls="none", marker="_", ms=18, mew=2, color="black", label="INT8 ceiling")
        ax.set_xticks(x, table.workloads)
        ax.set_title(dist)
        ax.set_xlabel("workload")
        ax.set_ylabel("SQNR (dB)")
        ax.grid(True, alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 9), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.035, 1, 0.9))
    return _finish_keep_layout(fig, pathlib.Path(path), note)


def _finish_keep_layout(fig, path: pathlib.Path, note: str) -> pathlib.Path:
    fig.text(0.995, 0.006, note, ha="right", va="bottom", fontsize=7, color="0.45")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


# -- study 3 -------------------------------------------------------------------------------------
def accumulation(study, path, note: str) -> pathlib.Path:
    """SQNR against N (log scale) per rule; naive accumulation's overflow points marked."""
    fig, ax = plt.subplots(figsize=(9, 5))
    colors = _colors([c.label for c in study.curves])
    lengths = np.array(study.lengths)
    ax.plot(lengths, [study.ceiling[n] for n in study.lengths], color="black", ls=":", lw=1.2, label="INT8 ceiling")
    low = min(min(c.sqnr.values()) for c in study.curves if c.sqnr)
    for c in study.curves:
        ns = sorted(c.sqnr)
        ax.plot(ns, [c.sqnr[n] for n in ns], marker="o", ms=3.5, lw=1.2, color=colors[c.label], label=c.label)
        if c.data_overflow is not None:
            ax.axvline(c.data_overflow, color=colors[c.label], ls="--", lw=1)
            ax.plot([c.data_overflow], [low - 1.0], marker="X", ms=10, color=colors[c.label], clip_on=False)
            ax.annotate(f"{c.label}: overflows at N = {c.data_overflow}\n(stated limit {c.stated_limit})",
                        xy=(c.data_overflow, low - 1.0), xytext=(8, 6 + 28 * (c.label.endswith("32-bit"))),
                        textcoords="offset points", fontsize=8, color=colors[c.label])
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths[[0] + [i for i in range(1, len(lengths)) if lengths[i] >= 1.18 * lengths[i - 1]]])
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.tick_params(axis="x", labelsize=8, rotation=45)
    ax.set_ylim(low - 2.0, None)
    ax.set_xlabel("sequence length N (keys)")
    ax.set_ylabel("SQNR (dB)")
    ax.set_title(f"Accumulation rules against sequence length ({study.heads} heads x {study.queries} queries, "
                 "U[-4, 4]); X = first N that overflows", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    return _finish(fig, pathlib.Path(path), note)


# -- study 4 -------------------------------------------------------------------------------------
def granularity(study, path, note: str) -> pathlib.Path:
    """Horizontal bars per accepted (Q, K, V) combination: SQNR over all heads and mean per head."""
    rows = sorted(study.accepted, key=lambda r: r.sqnr)
    fig, ax = plt.subplots(figsize=(9, 0.36 * len(rows) + 1.6))
    y = np.arange(len(rows))
    ax.barh(y + 0.2, [r.sqnr for r in rows], height=0.4, color="tab:blue", label="SQNR, all heads")
    ax.barh(y - 0.2, [r.head_sqnr for r in rows], height=0.4, color="tab:orange", label="mean per-head SQNR")
    ax.plot([r.ceiling for r in rows], y + 0.2, ls="none", marker="|", ms=12, mew=2, color="black",
            label="INT8 ceiling, all heads")
    ax.set_yticks(y, [f"Q {r.q} / K {r.k} / V {r.v}" for r in rows], fontsize=8)
    lo = min(min(r.sqnr, r.head_sqnr) for r in rows)
    ax.set_xlim(max(lo - 5.0, 0.0), None)
    ax.set_xlabel("SQNR (dB)")
    ax.set_title(f"INT8 granularity, per_tensor recipe: {len(study.accepted)} accepted combinations\n"
                 f"(heads span 2^-2..2^2, tokens 2^U[-2,2]; {len(study.rejected)} combinations rejected)",
                 fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _finish(fig, pathlib.Path(path), note)


# -- study 5 -------------------------------------------------------------------------------------
def robustness(study, path, note: str) -> pathlib.Path:
    colors = _colors(study.labels)
    fig, ax = plt.subplots(figsize=(9, 5))
    amps = np.array(study.amplitudes)
    for label in study.labels:
        ax.plot(amps, study.curve(label), marker="o", ms=3, lw=1.1, color=colors[label], label=label)
    ax.plot(amps, study.curve("INT8 ceiling"), color="black", ls=":", lw=1.5, label="INT8 ceiling")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("input amplitude a (U[-a, a])")
    ax.set_ylabel("SQNR (dB)")
    ax.set_title("Robustness to input amplitude (A2, seed 0)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.13), frameon=False)
    return _finish(fig, pathlib.Path(path), note)


# -- study 6 -------------------------------------------------------------------------------------
def pareto(study, path, note: str) -> pathlib.Path:
    """Ops per element against SQNR for the select catalog, Pareto front marked, one panel per distribution."""
    panels = study.panels
    fig, axes = plt.subplots(1, len(panels), figsize=(max(6.2 * len(panels), 9.0), 5.4), squeeze=False)
    exps = sorted({c.label.split(",")[0] for p in panels for c in p.candidates})
    colors = _colors(exps)
    markers = {7: "v", 8: "s", 11: "o"}
    # recipes of one cost level share an x; spread them by rule so they stay visible
    shift = {"scale_release": -0.22, "lazy_rescale": 0.0, "two_pass": 0.22}
    for ax, panel in zip(axes.flat, panels):
        for c in panel.candidates:
            exp = c.label.split(",")[0]
            dx = shift.get(c.recipe.accumulation.kind, 0.0)
            ax.scatter(c.ops + dx, c.sqnr_db, s=22, marker=markers.get(c.recipe.p_bits, "D"), color=colors[exp],
                       alpha=0.8, edgecolors="none")
        fx = [c.ops for c in panel.front]
        fy = [c.sqnr_db for c in panel.front]
        ax.step(fx + [max(c.ops for c in panel.candidates) + 1], fy + [fy[-1]], where="post", color="black", lw=1.2)
        px = [c.ops + shift.get(c.recipe.accumulation.kind, 0.0) for c in panel.front]
        ax.scatter(px, fy, s=90, facecolors="none", edgecolors="black", lw=1.5, zorder=3)
        # number the front points and list their labels in a corner: front points can sit close together
        for i, (x, c) in enumerate(zip(px, panel.front), 1):
            ax.annotate(str(i), (x, c.sqnr_db), xytext=(4, 4), textcoords="offset points", fontsize=8,
                        fontweight="bold")
        ax.text(0.98, 0.03, "\n".join(f"{i}: {c.label} ({c.ops} ops, {c.sqnr_db:.2f} dB)"
                                      for i, c in enumerate(panel.front, 1)),
                transform=ax.transAxes, ha="right", va="bottom", fontsize=7.5,
                bbox=dict(boxstyle="round", facecolor="white", alpha=0.85, edgecolor="0.7"))
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("integer ops per score element (Recipe.op_count().total)\n"
                      "points of one cost: release left, lazy middle, two-pass right")
        ax.set_ylabel("SQNR (dB)")
        ax.set_title(f"{study.workload}, {panel.distribution}", fontsize=10)
        ax.grid(True, alpha=0.3)
        ys = sorted(c.sqnr_db for c in panel.candidates)
        ax.set_ylim(ys[0] - 0.5, ys[-1] + 0.8)
    # two legends: colour = exp strategy, marker = P width
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], ls="none", marker="o", color=colors[e], label=e) for e in exps]
    handles += [Line2D([], [], ls="none", marker=m, color="0.4", label=f"P{p}") for p, m in markers.items()]
    handles += [Line2D([], [], color="black", marker="o", mfc="none", label="Pareto front")]
    ncol = math.ceil(len(handles) / 2) if len(panels) == 1 else len(handles)
    top = 0.89 if len(panels) == 1 else 0.93
    fig.legend(handles=handles, loc="upper center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.035, 1, top))
    return _finish_keep_layout(fig, pathlib.Path(path), note)


# -- study 8 -------------------------------------------------------------------------------------
def transforms(study, path, note: str) -> pathlib.Path:
    """Grouped bars per input distribution: SQNR with each transform set, and both ceilings."""
    from .transforms import DISTRIBUTIONS, RECIPES
    fig, ax = plt.subplots(figsize=(9, 4.6))
    x = np.arange(len(DISTRIBUTIONS))
    width = 0.8 / len(RECIPES)
    for i, label in enumerate(RECIPES):
        ax.bar(x + (i - (len(RECIPES) - 1) / 2) * width, [study.sqnr[d, label] for d in DISTRIBUTIONS],
               width=width, label=label)
    for values, style, label in ((study.ceiling, ":", "INT8 ceiling"),
                                 (study.ceiling_transformed, "--", "ceiling after all three")):
        ax.plot(x, [values[d] for d in DISTRIBUTIONS], ls="none", marker="_", ms=40, mew=2,
                color="black" if style == ":" else "tab:brown", label=label)
    ax.set_xticks(x, DISTRIBUTIONS)
    lo = min(study.sqnr.values())
    ax.set_ylim(max(lo - 5.0, 0.0), None)
    ax.set_ylabel("SQNR (dB)")
    ax.set_title("Exact input transforms, per_tensor recipe, A2 shape", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=2, loc="upper left")
    return _finish(fig, pathlib.Path(path), note)


# -- long rows -------------------------------------------------------------------------------------
def long_rows(study, path, note: str) -> pathlib.Path:
    """SQNR against N per distribution: the recipes (solid) and the two INT8 ceilings (dotted)."""
    from .long_rows import CEILINGS, DISTRIBUTIONS, RECIPES
    colors = _colors([*RECIPES, *CEILINGS])
    fig, axes = plt.subplots(1, len(DISTRIBUTIONS), figsize=(11, 4.6), squeeze=False, sharey=True)
    for ax, dist in zip(axes.flat, DISTRIBUTIONS):
        for label in (*RECIPES, *CEILINGS):
            pts = [(n, y) for n, y in zip(study.keys, study.curve(dist, label)) if y is not None]
            ax.plot(*zip(*pts), marker="o", ms=3, lw=1.2, color=colors[label], label=label,
                    ls=":" if label in CEILINGS else "-")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("keys N (128 queries, D = 128)")
        ax.set_title(dist, fontsize=10)
        ax.grid(True, alpha=0.3)
    axes.flat[0].set_ylabel("SQNR (dB)")
    axes.flat[-1].legend(fontsize=8, loc="lower left")
    return _finish(fig, pathlib.Path(path), note)
