"""The numbers the papers publish: the HRQ paper's Tables 1-4 (``paper_values.csv``) and
HG-Rec's Tables 2-3 (``hgrec_values.csv``: training cost and NDCG@10 per codebook strategy).

Conventions of the CSVs (one row per published number):

* ``table`` is the paper's table number.
* ``value``/``std`` are fractions for ranking metrics (71.2% -> 0.712; the HRQ paper's Table 2
  "±0.07" are percentage points -> 0.0007), integers for counts, raw numbers otherwise
  (seconds, epochs, norms). ``std`` is empty where the paper publishes none.
* ``s`` is a codebook strategy's label (:func:`hrq.grid.codebook_label`): ``256``, or
  ``64-128-256`` for HG-Rec's per-level sizes.
* An empty ``dataset``/``method``/``k``/``s``/``h`` means the paper does not fix it for that
  number (Table 3 is per dataset only, Table 4 names no dataset). :func:`lookup_paper` treats
  such an empty field as matching anything. The HRQ paper's Tables 2 and 4 fix the tokenizer
  (k = 3, s = 256, h = 32, its App. C.2), so a cell at another grid point, e.g. a
  differential-length s, gets no paper value rather than one measured elsewhere.
* ``note`` carries the printed "+x.x%" gains and transcription remarks (e.g. Table 3's
  apparently swapped Toys/Sports rows, HG-Rec's row names).
"""

from __future__ import annotations

import functools
import math
import re
from importlib import resources

import numpy as np
import pandas as pd

from hrq.grid import codebook_label

__all__ = ["PAPERS", "is_missing", "paper_values", "lookup_paper", "normalize_table"]

_COLUMNS = ["table", "dataset", "method", "k", "s", "h", "metric", "value", "std", "note"]
_GRID = ("k", "s", "h")
_TEXT = ("dataset", "method", "metric", "note")
#: The papers whose published numbers are transcribed, and their files in this package.
PAPERS = {"hrq": "paper_values.csv", "hgrec": "hgrec_values.csv"}


def normalize_table(table: int | str) -> int:
    """``1``, ``"1"``, ``"table1"``, ``"Table 1"`` -> ``1``."""
    if isinstance(table, bool):
        raise TypeError(f"not a table id: {table!r}")
    if isinstance(table, int):
        return table
    m = re.fullmatch(r"\s*(?:table[\s_-]*)?(\d+)\s*", str(table), flags=re.IGNORECASE)
    if m is None:
        raise ValueError(f"not a table id: {table!r}")
    return int(m.group(1))


@functools.lru_cache(maxsize=None)
def _load(paper: str = "hrq") -> pd.DataFrame:
    if paper not in PAPERS:
        raise ValueError(f"no transcribed values for paper {paper!r} (have {sorted(PAPERS)})")
    ref = resources.files("hrq.tables").joinpath(PAPERS[paper])
    with ref.open("r", encoding="utf-8") as fh:
        df = pd.read_csv(
            fh,
            dtype={**{c: str for c in _TEXT}, "s": str},
            keep_default_na=False,
            na_values={c: [""] for c in (*_GRID, "value", "std")},
        )
    if list(df.columns) != _COLUMNS:
        raise ValueError(f"{PAPERS[paper]} columns {list(df.columns)} != {_COLUMNS}")
    df["table"] = df["table"].astype("int64")
    for c in ("k", "h"):
        df[c] = df[c].astype("Int64")
    df["s"] = pd.array([None if pd.isna(v) else codebook_label(v) for v in df["s"]], dtype="str")
    for c in ("value", "std"):
        df[c] = df[c].astype("float64")
    key = ["table", "dataset", "method", "k", "s", "h", "metric"]
    dup = df.duplicated(key, keep=False)
    if dup.any():
        raise ValueError(f"duplicate paper cells in {PAPERS[paper]}:\n{df.loc[dup, key]}")
    return df


def paper_values(paper: str = "hrq") -> pd.DataFrame:
    """All transcribed numbers of ``paper`` (a key of :data:`PAPERS`; a fresh copy, each CSV is
    parsed once per process).

    Columns ``table:int64, dataset, method, k, h (Int64, <NA> when not fixed), s (codebook
    label, NaN when not fixed), metric, value:float64, std:float64 (NaN when unpublished),
    note``; empty text fields are ``""``.
    """
    return _load(paper).copy()


def _text_key(x: str | None) -> str:
    return "" if x is None else str(x).strip().lower()


def is_missing(x) -> bool:
    """``None``, ``pd.NA`` or a float NaN (numpy's included): a value a cell or table does not
    have. Anything else, lists included, is present."""
    if x is None or x is pd.NA:
        return True
    return isinstance(x, (float, np.floating)) and math.isnan(x)


def lookup_paper(
    table: int | str,
    dataset: str | None,
    method: str | None,
    metric: str,
    k: int | None = None,
    s: int | str | None = None,
    h: int | None = None,
    *,
    paper: str = "hrq",
) -> tuple[float, float] | None:
    """``(value, std)`` of ``paper``'s cell, ``std`` NaN when unpublished; ``None`` if the paper
    has no such cell.

    A paper row whose ``dataset``/``method``/``k``/``s``/``h`` is empty matches any query value
    (including ``None``); a paper row with a concrete grid value only matches that value, so
    ``lookup_paper(1, "wordnet", "hrq", "recall@10")`` without k/s/h is ``None``. ``s`` is
    compared as a codebook label (``256``, ``"256"`` and ``[256, 256, 256]`` are the same).
    When several rows match, the most specific one (fewest empty fields) wins; a tie is an
    error. Text fields compare case-insensitively.
    """
    df = _load(paper)
    mask = (df["table"] == normalize_table(table)) & (df["metric"].str.lower() == _text_key(metric))
    for col, q in (("dataset", dataset), ("method", method)):
        col_vals = df[col].str.lower()
        mask &= (col_vals == "") | (col_vals == _text_key(q))
    for col, q in zip(_GRID, (k, s, h)):
        if is_missing(q):
            mask &= df[col].isna()
        else:
            want = codebook_label(q) if col == "s" else int(q)
            mask &= df[col].isna() | (df[col] == want).fillna(False)
    hits = df[mask.astype(bool)]
    if hits.empty:
        return None
    wildcards = (hits["dataset"] == "").astype(int) + (hits["method"] == "").astype(int)
    for col in _GRID:
        wildcards = wildcards + hits[col].isna().astype(int)
    best = hits[wildcards == wildcards.min()]
    if len(best) > 1:
        raise ValueError(f"ambiguous paper lookup, {len(best)} rows match:\n{best}")
    row = best.iloc[0]
    return float(row["value"]), float(row["std"])
