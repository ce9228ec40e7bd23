"""Cells -> a results table (tidy frame + Markdown) and its files.

:func:`render_table` lays cell rows (see :mod:`hrq.tables.aggregate`) out as one row per
``index`` tuple with, per method, "mean ± std", the paper's value and the difference, plus the
treatment-vs-baseline gain and Welch p. :func:`write_table` writes ``<name>.md``,
``<name>.csv`` and ``<name>.parquet`` atomically through :mod:`hrq.io`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hrq.io import write_parquet, write_text
from hrq.tables.aggregate import compare
from hrq.tables.paper import is_missing

__all__ = ["METHOD_LABELS", "FRAME_COLUMNS", "RenderedTable", "render_table", "write_table"]

#: Display names of the methods in Markdown headers (others are shown as given).
METHOD_LABELS = {
    "rq": "RQ",
    "hrq": "HRQ",
    "rqvae": "RQ-VAE",
    "hrqvae": "HRQ-VAE",
    "hgrec": "HG-Rec",
    "hypervq": "HyperVQ",
    "hypervq_hrq": "HyperVQ+HRQ",
    "rsqvae": "RSQ-VAE",
    "random": "Random (baseline)",
    "frequency": "Frequency (baseline)",
    "composition": "Composition (baseline)",
    "most_popular": "Most popular (baseline)",
}
#: Columns of :attr:`RenderedTable.frame` after the index columns.
FRAME_COLUMNS = (
    "method", "mean", "std", "n", "values", "seeds", "paper", "paper_std", "delta",
    "gain", "t", "p",
)
_DASH = "—"


@dataclass(frozen=True)
class RenderedTable:
    """``frame``: tidy, one row per (index tuple, method) present in the cells, columns
    ``*index`` + :data:`FRAME_COLUMNS`; ``gain``/``t``/``p`` (treatment vs baseline) are set on
    the treatment's row and NaN elsewhere. ``markdown``: the human-readable table."""

    frame: pd.DataFrame
    markdown: str


def _key(values) -> tuple:
    return tuple(None if is_missing(v) else v for v in values)


def _as_list(x) -> list:
    if isinstance(x, (list, tuple, np.ndarray, pd.Series)):
        return [v.item() if isinstance(v, np.generic) else v for v in list(x)]
    if is_missing(x):
        return []
    raise TypeError(f"expected a list-like per-seed column entry, got {x!r}")


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def render_table(
    cells: pd.DataFrame,
    *,
    index: list[str],
    methods: list[str],
    baseline: str | None,
    treatment: str | None,
    percent: bool = True,
    digits: int = 2,
    title: str = "",
    footnotes: Sequence[str] = (),
) -> RenderedTable:
    """Render ``cells`` (rows of :func:`~hrq.tables.aggregate.aggregate_seeds`, any number of
    cell files concatenated) as a table.

    ``index``: the columns that make a table row (e.g. ``["dataset", "metric"]`` or
    ``["k", "s", "h"]``); rows keep the cells' order of first appearance. ``methods``: which
    methods, in column order. ``baseline``/``treatment`` (both or neither, both in
    ``methods``) add the "gain" ((treatment − baseline)/baseline of the means) and "Welch p"
    columns. ``percent``: values are fractions shown ×100 with "%" (Δ in percentage points,
    "pp"); otherwise raw numbers with ``digits`` decimals. A method without a cell for a row
    and an unpublished paper value are shown as "—".
    """
    index = list(index)
    methods = list(methods)
    if not methods:
        raise ValueError("methods must not be empty")
    if (baseline is None) != (treatment is None):
        raise ValueError("give both baseline and treatment, or neither")
    for m in (baseline, treatment):
        if m is not None and m not in methods:
            raise ValueError(f"{m!r} is not among methods {methods}")
    if "method" in index:
        raise ValueError("'method' cannot be an index column")
    missing = {*index, "method", "mean", "std", "n", "values"} - set(cells.columns)
    if missing:
        raise ValueError(f"cells lacks columns {sorted(missing)}")

    sub = cells[cells["method"].isin(methods)].reset_index(drop=True)
    dup = sub.duplicated([*index, "method"], keep=False)
    if dup.any():
        raise ValueError(
            "several cells per (index, method); add the distinguishing column to `index`:\n"
            + str(sub.loc[dup, [*index, "method"]])
        )

    stats: dict[tuple, tuple[float, float, float]] = {}
    if baseline is not None and len(sub):
        cmp = compare(sub, baseline, treatment, by=index)
        for _, r in cmp.iterrows():
            stats[_key(r[c] for c in index)] = (r["gain"], r["t"], r["p"])

    row_keys: list[tuple] = []
    seen: set[tuple] = set()
    by_cell: dict[tuple, pd.Series] = {}
    for _, r in sub.iterrows():
        key = _key(r[c] for c in index)
        if key not in seen:
            seen.add(key)
            row_keys.append(key)
        by_cell[(key, r["method"])] = r

    records = []
    for key in row_keys:
        for m in methods:
            r = by_cell.get((key, m))
            if r is None:
                continue
            paper = float(r["paper_value"]) if "paper_value" in r.index else math.nan
            paper_std = float(r["paper_std"]) if "paper_std" in r.index else math.nan
            gain, t, p = stats.get(key, (math.nan,) * 3) if m == treatment else (math.nan,) * 3
            rec = {c: r[c] for c in index}
            rec.update(
                method=m, mean=float(r["mean"]), std=float(r["std"]), n=int(r["n"]),
                values=[float(v) for v in _as_list(r["values"])],
                seeds=[int(s) for s in _as_list(r["seeds"])] if "seeds" in r.index else [],
                paper=paper, paper_std=paper_std, delta=float(r["mean"]) - paper,
                gain=float(gain), t=float(t), p=float(p),
            )
            records.append(rec)
    frame = pd.DataFrame.from_records(records, columns=[*index, *FRAME_COLUMNS])
    for c in index:
        if len(frame):
            try:
                frame[c] = frame[c].astype(cells[c].dtype)
            except (TypeError, ValueError):
                pass
    frame["n"] = frame["n"].astype("int64")
    for c in ("mean", "std", "paper", "paper_std", "delta", "gain", "t", "p"):
        frame[c] = frame[c].astype("float64")

    markdown = _markdown(
        frame, by_cell, row_keys, index=index, methods=methods, baseline=baseline,
        treatment=treatment, percent=percent, digits=digits, title=title, footnotes=footnotes,
        stats=stats,
    )
    return RenderedTable(frame=frame, markdown=markdown)


def _markdown(frame, by_cell, row_keys, *, index, methods, baseline, treatment, percent, digits,
              title, footnotes, stats) -> str:
    def num(x: float) -> str:
        if is_missing(x):
            return _DASH
        return f"{100 * x:.{digits}f}%" if percent else f"{x:.{digits}f}"

    def diff(x: float) -> str:
        if is_missing(x):
            return _DASH
        return f"{100 * x:+.{digits}f} pp" if percent else f"{x:+.{digits}f}"

    def mean_std(mean: float, std: float) -> str:
        return _DASH if is_missing(mean) else f"{num(mean)} ± {num(std)}"

    def pval(p: float) -> str:
        if is_missing(p):
            return _DASH
        return "<0.001" if p < 0.001 else f"{p:.3f}"

    pair = baseline is not None
    header = list(index)
    for m in methods:
        lab = METHOD_LABELS.get(m, m)
        header += [f"{lab} mean ± std", f"{lab} paper", f"{lab} Δ"]
    if pair:
        header += ["gain", "Welch p"]

    lines = []
    if title:
        lines += [f"## {title}", ""]
    lines.append("| " + " | ".join(_md_escape(h) for h in header) + " |")
    lines.append("|" + "|".join("---" if i < len(index) else "---:" for i in range(len(header))) + "|")
    for key in row_keys:
        row = ["" if v is None else _md_escape(str(v)) for v in key]
        for m in methods:
            r = by_cell.get((key, m))
            if r is None:
                row += [_DASH] * 3
                continue
            paper = float(r["paper_value"]) if "paper_value" in r.index else math.nan
            paper_std = float(r["paper_std"]) if "paper_std" in r.index else math.nan
            paper_s = num(paper)
            if not is_missing(paper) and not is_missing(paper_std):
                paper_s += f" ± {num(paper_std)}"
            row += [mean_std(float(r["mean"]), float(r["std"])), paper_s,
                    diff(float(r["mean"]) - paper)]
        if pair:
            gain, _, p = stats.get(key, (math.nan,) * 3)
            row += [_DASH if is_missing(gain) else f"{100 * gain:+.1f}%", pval(p)]
        lines.append("| " + " | ".join(row) + " |")

    ns = sorted({int(n) for n in frame["n"]}) if len(frame) else []
    if not ns:
        n_text = "n seeds"
    elif len(ns) == 1:
        n_text = f"n = {ns[0]} seed" + ("s" if ns[0] != 1 else "")
    else:
        n_text = f"n ∈ {{{', '.join(map(str, ns))}}} seeds depending on the cell"
    unit = " (in percentage points)" if percent else ""
    explain = (
        f"mean ± std: over {n_text} (sample std, ddof=1; — when n = 1); "
        "paper: the paper's published value (± its published std where given), — when the "
        f"paper has none; Δ = mean − paper{unit}; a method without results is —."
    )
    if pair:
        b, t = METHOD_LABELS.get(baseline, baseline), METHOD_LABELS.get(treatment, treatment)
        explain += (
            f" gain = ({t} − {b}) / {b} of the means; Welch p: two-sided Welch t-test "
            f"of {t} vs {b} over seeds (— when a side has < 2 seeds)."
        )
    lines += ["", f"- {explain}"]
    lines += [f"- {f}" for f in footnotes]
    return "\n".join(lines) + "\n"


def _csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for c in out.columns:
        if out[c].dtype == object and out[c].map(
            lambda v: isinstance(v, (list, tuple, np.ndarray))
        ).any():
            out[c] = out[c].map(
                lambda v: json.dumps(_as_list(v)) if isinstance(v, (list, tuple, np.ndarray)) else v
            )
    return out


def write_table(
    rendered: RenderedTable, out_dir: str | os.PathLike[str], name: str
) -> dict[str, Path]:
    """Write ``<name>.md``, ``<name>.csv`` (the frame; list columns as JSON arrays) and
    ``<name>.parquet`` (the frame; list columns as Parquet lists) into ``out_dir``, each
    atomically. Returns ``{"md": ..., "csv": ..., "parquet": ...}``."""
    out_dir = Path(out_dir)
    paths = {ext: out_dir / f"{name}.{ext}" for ext in ("md", "csv", "parquet")}
    write_text(rendered.markdown, paths["md"])
    write_text(_csv_frame(rendered.frame).to_csv(index=False), paths["csv"])
    write_parquet(rendered.frame, paths["parquet"], index=False)
    return paths
