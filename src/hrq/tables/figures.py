"""The paper's Figure 1 (metric vs embedding dimension h) and Figure 4 (token space).

Figures are built with matplotlib's object-oriented API on an Agg canvas (no pyplot state,
no global rcParams changes), saved as PNG through :func:`hrq.io.atomic_output` and released
right after saving.
"""

from __future__ import annotations

import colorsys
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from matplotlib.ticker import FixedLocator, NullLocator, PercentFormatter

from hrq.grid import codebook_label
from hrq.io import atomic_output
from hrq.tables.paper import lookup_paper

__all__ = ["FIGURE4_CAPTION", "TokenSpacePanel", "plot_recall_vs_h", "plot_token_space", "token_colors"]

_LABELS = {"rq": "RQ", "hrq": "HRQ", "rqvae": "RQ-VAE", "hrqvae": "HRQ-VAE", "random": "Random"}


def _save(fig: Figure, path: str | os.PathLike[str], dpi: int = 150) -> Path:
    path = Path(path)
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        fig.clear()  # release artists; the figure is not registered with pyplot
    return path


# ----------------------------------------------------------------------------- Figure 1


def _recall_vs_h_figure(
    cells: pd.DataFrame, *, k: int, s: int | str, metric: str, methods: Sequence[str],
    dataset: str | None = None, baselines: Mapping[str, float] | None = None,
) -> Figure:
    need = {"method", "k", "s", "h", "metric", "mean", "std"}
    missing = need - set(cells.columns)
    if missing:
        raise ValueError(f"cells lacks columns {sorted(missing)}")
    sel = cells[
        (cells["k"] == k).fillna(False).astype(bool)
        & (cells["s"].astype(str) == codebook_label(s)).fillna(False).astype(bool)
        & (cells["metric"] == metric)
        & cells["method"].isin(list(methods))
        & cells["h"].notna()
    ]
    if dataset is not None and "dataset" in sel.columns:
        sel = sel[sel["dataset"] == dataset]
    if "dataset" in sel.columns and sel["dataset"].nunique() > 1:
        raise ValueError(
            f"cells hold several datasets {sorted(sel['dataset'].unique())}; pass dataset="
        )
    if sel.empty:
        raise ValueError(f"no cells for k={k}, s={s}, metric={metric!r}, methods={list(methods)}")
    if sel.duplicated(["method", "h"]).any():
        raise ValueError("several cells per (method, h); filter the cells first")

    fig = Figure(figsize=(5.0, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = colormaps["tab10"].colors
    hs_all: set[int] = set()
    any_paper = False
    for i, m in enumerate(methods):
        d = sel[sel["method"] == m].sort_values("h")
        if d.empty:
            continue
        color = colors[i % len(colors)]
        h = d["h"].astype(int).to_numpy()
        hs_all.update(h.tolist())
        mean = d["mean"].astype(float).to_numpy()
        err = np.nan_to_num(d["std"].astype(float).to_numpy(), nan=0.0)
        ns = sorted(set(d["n"].astype(int))) if "n" in d.columns else []
        n_lab = f", n={ns[0]}" if len(ns) == 1 else ""
        ax.errorbar(h, mean, yerr=err, color=color, marker="o", capsize=3, linestyle="-",
                    label=f"{_LABELS.get(m, m)} (ours{n_lab})")
        # The paper's values for the same (k, s, method) at the measured h.
        if "paper_value" in d.columns:
            paper = d["paper_value"].astype(float).to_numpy()
        else:
            ds = d["dataset"].iloc[0] if "dataset" in d.columns else "wordnet"
            looked = [lookup_paper(1, ds, m, metric, k=k, s=s, h=int(hh)) for hh in h]
            paper = np.array([np.nan if v is None else v[0] for v in looked])
        ok = ~np.isnan(paper)
        if ok.any():
            any_paper = True
            ax.plot(h[ok], paper[ok], color=color, linestyle="--", marker="o",
                    markerfacecolor="none", label=f"{_LABELS.get(m, m)} (paper)")
    # Baselines do not depend on h: one labelled horizontal line each, in greys and dotted so
    # they read as references, not as methods.
    for j, (label, value) in enumerate((baselines or {}).items()):
        if not np.isnan(value):
            ax.axhline(value, color=str(0.25 + 0.3 * (j % 2)), linestyle=(0, (1, 1 + j)), linewidth=1.2,
                       label=f"{label}: {value:.1%}")
    hs = sorted(hs_all)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(hs))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(v) for v in hs])
    if len(hs) == 1:
        ax.set_xlim(hs[0] / 2 ** 0.5, hs[0] * 2 ** 0.5)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.set_xlabel("embedding dimension h")
    ax.set_ylabel(metric.replace("recall", "Recall").replace("ndcg", "NDCG"))
    name = dataset if dataset is not None else (str(sel["dataset"].iloc[0]) if "dataset" in sel.columns else None)
    title = f"{name}: k={k}, |C|={s}" if name else f"k={k}, |C|={s}"
    if not any_paper:  # say so rather than leave the reader looking for dashed lines
        title += "\n(no published paper values for this dataset and grid point)"
    ax.set_title(title, fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def plot_recall_vs_h(
    cells: pd.DataFrame,
    *,
    k: int,
    s: int,
    metric: str = "recall@10",
    methods: Sequence[str] = ("rq", "hrq"),
    path: str | os.PathLike[str],
    dataset: str | None = None,
    baselines: Mapping[str, float] | None = None,
) -> Path:
    """Figure 1: ``metric`` vs ``h`` at fixed ``(k, s)``, one solid line per method with ±std
    error bars, and the paper's values at the same (k, s, method, h) as dashed lines with
    hollow markers where published (taken from the cells' ``paper_value``, else looked up in
    Table 1). The x axis is log2-scaled with ticks at the measured h. ``dataset`` selects one
    dataset when the cells hold several. ``baselines``: label -> value of the same metric
    (e.g. the frequency and composition baselines), drawn as labelled horizontal lines.
    Returns ``path``."""
    fig = _recall_vs_h_figure(cells, k=k, s=s, metric=metric, methods=methods, dataset=dataset, baselines=baselines)
    return _save(fig, path)


# ----------------------------------------------------------------------------- Figure 4


@dataclass(frozen=True)
class TokenSpacePanel:
    """One Figure-4 panel: 2-D ``points`` [N, 2] with their ``first``/``second`` tokens [N].
    ``curvature`` c > 0 draws the Poincaré-ball boundary (radius 1/sqrt(c)) and fixes the
    limits to the ball; ``None`` is a Euclidean panel (limits from the data). Both use equal
    aspect."""

    title: str
    points: np.ndarray
    first: np.ndarray
    second: np.ndarray
    curvature: float | None = None


def token_colors(first: np.ndarray, second: np.ndarray, cmap: str = "tab10") -> np.ndarray:
    """RGB colors [N, 3]: hue from ``first`` (a qualitative colormap, cycled), lightness from
    the rank of ``second`` among the second tokens seen with that first token (dark -> light)."""
    first = np.asarray(first).ravel()
    second = np.asarray(second).ravel()
    if first.shape != second.shape:
        raise ValueError("first and second must have the same length")
    base = colormaps[cmap].colors
    out = np.zeros((first.size, 3))
    for i, f in enumerate(np.unique(first)):
        in_f = first == f
        h, _, sat = colorsys.rgb_to_hls(*base[i % len(base)][:3])
        seconds = np.unique(second[in_f])
        light = np.linspace(0.3, 0.75, len(seconds)) if len(seconds) > 1 else np.array([0.5])
        for j, t in enumerate(seconds):
            out[in_f & (second == t)] = colorsys.hls_to_rgb(h, float(light[j]), sat)
    return out


FIGURE4_CAPTION = ("Each point is an item's 2-D latent. Hue: its first token (the coarse cluster); "
                   "shade within a hue: its second token (the refinement, dark to light by token id).")
FIGURE4_BALL_NOTE = " Circle: the Poincaré-ball boundary of the hyperbolic panels."


def _encoding_legend(fig: Figure, panels: Sequence[TokenSpacePanel]) -> None:
    """The legend of Figure 4's color encoding: three hues (first tokens) and three shades of one
    hue (second tokens under one first token), plus the caption under the panels."""
    from matplotlib.legend_handler import HandlerTuple
    from matplotlib.lines import Line2D

    def dot(color) -> Line2D:
        return Line2D([], [], marker="o", linestyle="none", markersize=6, markerfacecolor=color,
                      markeredgewidth=0)

    hues = token_colors(np.arange(3), np.zeros(3))
    shades = token_colors(np.zeros(3), np.arange(3))
    handles = [tuple(dot(c) for c in hues), tuple(dot(c) for c in shades)]
    labels = ["hue = first token", "shade = second token (dark → light)"]
    fig.legend(handles, labels, handler_map={tuple: HandlerTuple(ndivide=None)}, loc="lower center",
               ncols=2, fontsize="small", frameon=False, bbox_to_anchor=(0.5, -0.02))
    caption = FIGURE4_CAPTION + (FIGURE4_BALL_NOTE if any(p.curvature is not None for p in panels) else "")
    fig.text(0.5, -0.07, caption, ha="center", va="top", fontsize="small", wrap=True)


def _token_space_figure(panels: Sequence[TokenSpacePanel]) -> Figure:
    panels = list(panels)
    if not panels:
        raise ValueError("no panels")
    fig = Figure(figsize=(4.2 * len(panels), 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, p in zip(axes, panels):
        pts = np.asarray(p.points, dtype=float)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"{p.title}: points must be [N, 2], got {pts.shape}")
        first, second = np.asarray(p.first).ravel(), np.asarray(p.second).ravel()
        if not (len(first) == len(second) == len(pts)):
            raise ValueError(f"{p.title}: points, first and second lengths differ")
        ax.scatter(pts[:, 0], pts[:, 1], c=token_colors(first, second), s=6, linewidths=0)
        if p.curvature is not None:
            if not p.curvature > 0:
                raise ValueError(f"{p.title}: curvature must be > 0, got {p.curvature}")
            r = 1.0 / math.sqrt(p.curvature)
            ax.add_patch(Circle((0.0, 0.0), r, fill=False, color="0.3", linewidth=1.0))
            ax.set_xlim(-1.05 * r, 1.05 * r)
            ax.set_ylim(-1.05 * r, 1.05 * r)
            ax.set_aspect("equal")
        else:
            ax.set_aspect("equal", adjustable="datalim")
        ax.set_title(p.title)
        ax.set_xticks([])
        ax.set_yticks([])
    _encoding_legend(fig, panels)
    return fig


def plot_token_space(panels: Sequence[TokenSpacePanel], path: str | os.PathLike[str]) -> Path:
    """Figure 4: one subplot per panel, points colored by first token (hue) and second token
    (shade within the hue); hyperbolic panels show the ball boundary at equal aspect. A legend
    under the panels says what hue and shade mean, and a caption (:data:`FIGURE4_CAPTION`)
    follows it. Returns ``path``."""
    return _save(_token_space_figure(panels), path)
