"""The numbers the HRQ paper publishes (Tables 1-4), transcribed in ``paper_values.csv``.

Conventions of the CSV (one row per published number):

* ``table`` is the paper's table number (1-4).
* ``value``/``std`` are fractions for Tables 1-2 (71.2% -> 0.712; Table 2's "±0.07" are
  percentage points -> 0.0007), integers for Table 3, raw numbers for Table 4.
  ``std`` is empty where the paper publishes none.
* An empty ``dataset``/``method``/``k``/``s``/``h`` means the paper does not fix it for that
  number (Table 2's tokenizers use 256 codes per level and a 32-d latent throughout, Table 3
  is per dataset only, Table 4 names no dataset). :func:`lookup_paper` treats such an empty
  field as matching anything.
* ``note`` carries the printed "+x.x%" gains and transcription remarks (e.g. Table 3's
  apparently swapped Toys/Sports rows).
"""

from __future__ import annotations

import functools
import math
import re
from importlib import resources

import pandas as pd

__all__ = ["paper_values", "lookup_paper", "normalize_table"]

_COLUMNS = ["table", "dataset", "method", "k", "s", "h", "metric", "value", "std", "note"]
_GRID = ("k", "s", "h")
_TEXT = ("dataset", "method", "metric", "note")


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


@functools.lru_cache(maxsize=1)
def _load() -> pd.DataFrame:
    ref = resources.files("hrq.tables").joinpath("paper_values.csv")
    with ref.open("r", encoding="utf-8") as fh:
        df = pd.read_csv(
            fh,
            dtype={c: str for c in _TEXT},
            keep_default_na=False,
            na_values={c: [""] for c in (*_GRID, "value", "std")},
        )
    if list(df.columns) != _COLUMNS:
        raise ValueError(f"paper_values.csv columns {list(df.columns)} != {_COLUMNS}")
    df["table"] = df["table"].astype("int64")
    for c in _GRID:
        df[c] = df[c].astype("Int64")
    for c in ("value", "std"):
        df[c] = df[c].astype("float64")
    key = ["table", "dataset", "method", "k", "s", "h", "metric"]
    dup = df.duplicated(key, keep=False)
    if dup.any():
        raise ValueError(f"duplicate paper cells:\n{df.loc[dup, key]}")
    return df


def paper_values() -> pd.DataFrame:
    """All transcribed paper numbers (a fresh copy; the CSV is parsed once per process).

    Columns ``table:int64, dataset, method, k, s, h (Int64, <NA> when not fixed), metric,
    value:float64, std:float64 (NaN when unpublished), note``; empty text fields are ``""``.
    """
    return _load().copy()


def _text_key(x: str | None) -> str:
    return "" if x is None else str(x).strip().lower()


def lookup_paper(
    table: int | str,
    dataset: str | None,
    method: str | None,
    metric: str,
    k: int | None = None,
    s: int | None = None,
    h: int | None = None,
) -> tuple[float, float] | None:
    """``(value, std)`` of the paper's cell, ``std`` NaN when unpublished; ``None`` if the paper
    has no such cell.

    A paper row whose ``dataset``/``method``/``k``/``s``/``h`` is empty matches any query value
    (including ``None``); a paper row with a concrete grid value only matches that value, so
    ``lookup_paper(1, "wordnet", "hrq", "recall@10")`` without k/s/h is ``None``. When several
    rows match, the most specific one (fewest empty fields) wins; a tie is an error.
    Text fields compare case-insensitively.
    """
    df = _load()
    mask = (df["table"] == normalize_table(table)) & (df["metric"].str.lower() == _text_key(metric))
    for col, q in (("dataset", dataset), ("method", method)):
        col_vals = df[col].str.lower()
        mask &= (col_vals == "") | (col_vals == _text_key(q))
    for col, q in zip(_GRID, (k, s, h)):
        if q is None or (isinstance(q, float) and math.isnan(q)) or q is pd.NA:
            mask &= df[col].isna()
        else:
            mask &= df[col].isna() | (df[col] == int(q)).fillna(False)
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
