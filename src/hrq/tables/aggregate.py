"""Seeds -> cells -> comparisons.

A *per-seed metrics* frame is long: columns ``seed:int, metric:str, value:float`` (other columns
are ignored). :func:`aggregate_seeds` turns one such frame (all seeds of one grid point) into a
*cell* frame, the schema of one ``cells/{table}/{dataset}/{method}/k{k}_s{s}_h{h}.parquet``:

``<keys...>, metric, mean, std, n, values, seeds, paper_value, paper_std, delta``

(see :data:`CELL_COLUMNS`). :func:`compare` runs Welch's t-test between two methods' cells.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.stats

from hrq.grid import codebook_label
from hrq.tables.paper import is_missing, lookup_paper

__all__ = ["CELL_COLUMNS", "KEY_COLUMNS", "aggregate_seeds", "read_cells", "welch", "compare"]

#: Key columns a cell may carry, in this order (whichever the ``keys`` dict has).
KEY_COLUMNS = ("table", "dataset", "method", "k", "s", "h")
#: Columns after the keys in every cell frame.
CELL_COLUMNS = (
    "metric", "mean", "std", "n", "values", "seeds", "paper_value", "paper_std", "delta",
)
_GRID = ("k", "s", "h")


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if arr.size > 1 else math.nan
    return mean, std


def aggregate_seeds(seed_metrics: pd.DataFrame, keys: Mapping[str, object]) -> pd.DataFrame:
    """One row per metric: the ``keys`` columns, then :data:`CELL_COLUMNS`.

    ``mean``/``std`` (sample std, ddof=1; NaN when n == 1) over seeds, ``n`` seeds, ``values``
    (per-seed floats ordered by seed) and ``seeds`` (ints) as list columns, the paper's
    ``paper_value``/``paper_std`` from :func:`lookup_paper` (NaN when the paper has no such
    cell or ``keys`` has no ``table``), ``delta = mean - paper_value``.

    Keys are put in :data:`KEY_COLUMNS` order first, any other key after them; ``k``/``h``
    are nullable ``Int64`` (``None`` -> ``<NA>``) and ``s`` is the codebook strategy's label
    (:func:`hrq.grid.codebook_label`: ``"256"``, or ``"32-64-128"`` for per-level sizes). Metrics keep their order of first appearance.
    A NaN per-seed value propagates into mean/std (it is not dropped); a duplicated
    ``(seed, metric)`` is an error.
    """
    missing = {"seed", "metric", "value"} - set(seed_metrics.columns)
    if missing:
        raise ValueError(f"seed_metrics lacks columns {sorted(missing)}")
    clash = set(keys) & set(CELL_COLUMNS)
    if clash:
        raise ValueError(f"keys may not be named like cell columns: {sorted(clash)}")
    dup = seed_metrics.duplicated(["seed", "metric"], keep=False)
    if dup.any():
        raise ValueError(
            "duplicated (seed, metric) rows:\n" + str(seed_metrics.loc[dup, ["seed", "metric"]])
        )
    key_order = [c for c in KEY_COLUMNS if c in keys] + [c for c in keys if c not in KEY_COLUMNS]
    grid = {c: (None if is_missing(keys.get(c)) else int(keys[c])) for c in ("k", "h")}
    grid["s"] = None if is_missing(keys.get("s")) else codebook_label(keys["s"])

    records = []
    for metric in pd.unique(seed_metrics["metric"]):
        sub = seed_metrics[seed_metrics["metric"] == metric].sort_values("seed", kind="stable")
        values = [float(v) for v in sub["value"]]
        seeds = [int(s) for s in sub["seed"]]
        mean, std = _mean_std(values)
        paper = None
        if not is_missing(keys.get("table")):
            paper = lookup_paper(
                keys["table"], keys.get("dataset"), keys.get("method"), str(metric), **grid
            )
        paper_value, paper_std = paper if paper is not None else (math.nan, math.nan)
        rec = {c: keys[c] for c in key_order}
        rec.update(
            metric=str(metric), mean=mean, std=std, n=len(values), values=values, seeds=seeds,
            paper_value=paper_value, paper_std=paper_std, delta=mean - paper_value,
        )
        records.append(rec)

    out = pd.DataFrame.from_records(records, columns=[*key_order, *CELL_COLUMNS])
    for c in _GRID:
        if c in out.columns:
            out[c] = pd.array([grid[c]] * len(out), dtype="str" if c == "s" else "Int64")
    out["n"] = out["n"].astype("int64")
    for c in ("mean", "std", "paper_value", "paper_std", "delta"):
        out[c] = out[c].astype("float64")
    return out


def read_cells(paths: Sequence[str]) -> pd.DataFrame:
    """Cell files concatenated in the given order, ``s`` as codebook labels (cells written before
    per-level codebook strategies existed stored ``s`` as an integer)."""
    from hrq.io import read_parquet

    cells = pd.concat([read_parquet(p) for p in paths], ignore_index=True)
    if "s" in cells.columns:
        cells["s"] = pd.array([None if is_missing(v) else codebook_label(v)
                               for v in cells["s"]], dtype="str")
    return cells


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Welch's t statistic and two-sided p-value of ``mean(b) - mean(a)``.

    ``scipy.stats.ttest_ind(b, a, equal_var=False)``; ``(nan, nan)`` when either side has fewer
    than two values or both sides have zero variance (the statistic is undefined).
    """
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.size < 2 or b.size < 2:
        return math.nan, math.nan
    if np.var(a) == 0 and np.var(b) == 0:
        return math.nan, math.nan
    with warnings.catch_warnings():
        # Near-constant samples make scipy warn about precision loss; the result is still
        # the best available estimate, and pytest's filterwarnings=error must not trip on it.
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        res = scipy.stats.ttest_ind(b, a, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def _group_key_frame(by: list[str], key) -> dict:
    key = key if isinstance(key, tuple) else (key,)
    return dict(zip(by, key))


def compare(cells: pd.DataFrame, baseline: str, treatment: str, by: list[str]) -> pd.DataFrame:
    """Treatment vs baseline for every ``by`` group holding one cell row of each method.

    Columns: ``*by, baseline_mean, treatment_mean, gain, t, p`` with
    ``gain = (treatment_mean - baseline_mean) / baseline_mean`` (the paper's "+x.x%" as a
    fraction; NaN when the baseline mean is 0) and ``t, p`` from :func:`welch` on the cells'
    per-seed ``values`` (positive t: treatment higher). Groups missing either method are
    skipped; a group with several rows of the same method is an error (add the distinguishing
    column to ``by``). ``<NA>`` in ``by`` columns forms its own group. Groups keep their order of
    first appearance.
    """
    by = list(by)
    need = {*by, "method", "mean", "values"}
    missing = need - set(cells.columns)
    if missing:
        raise ValueError(f"cells lacks columns {sorted(missing)}")
    if "method" in by:
        raise ValueError("'method' cannot be a grouping column of compare()")
    columns = [*by, "baseline_mean", "treatment_mean", "gain", "t", "p"]
    sub = cells[cells["method"].isin([baseline, treatment])]
    records = []
    if len(sub):
        for key, grp in sub.groupby(by, dropna=False, sort=False):
            base = grp[grp["method"] == baseline]
            treat = grp[grp["method"] == treatment]
            if base.empty or treat.empty:
                continue
            if len(base) > 1 or len(treat) > 1:
                raise ValueError(
                    f"group {_group_key_frame(by, key)} has {len(base)} {baseline!r} and "
                    f"{len(treat)} {treatment!r} rows; add the distinguishing column to `by`"
                )
            bm, tm = float(base["mean"].iloc[0]), float(treat["mean"].iloc[0])
            gain = (tm - bm) / bm if bm != 0 else math.nan
            t, p = welch(list(base["values"].iloc[0]), list(treat["values"].iloc[0]))
            rec = _group_key_frame(by, key)
            rec.update(baseline_mean=bm, treatment_mean=tm, gain=gain, t=t, p=p)
            records.append(rec)
    out = pd.DataFrame.from_records(records, columns=columns)
    for c in by:
        if c in cells.columns and len(out):
            try:
                out[c] = out[c].astype(cells[c].dtype)
            except (TypeError, ValueError):
                pass
    return out
