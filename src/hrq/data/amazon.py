"""Amazon Reviews 2014 (McAuley et al., SNAP), 5-core review files and product metadata.

Per category two gzip files:

- ``reviews_<Cat>_5.json.gz``: one JSON object per line (``reviewerID``, ``asin``,
  ``unixReviewTime``, ``overall``, ``reviewText``, ...), every user and item with >= 5 reviews;
- ``meta_<Cat>.json.gz``: one *Python dict literal* per line (single quotes; ``asin``,
  ``title``, ``description``, ``price``, ``brand``, ``categories`` as a list of lists,
  ``salesRank``, ``imUrl``, ``related``), for every product of the category, so far more
  products than the 5-core reviews mention.

Meta lines are parsed with :func:`ast.literal_eval` (never ``eval``), and only for products the
reviews mention: a cheap regex reads the asin first. SNAP publishes no checksums for these
files, so :func:`fetch_amazon` relies on trust on first use (see :mod:`hrq.data.download`).
"""

from __future__ import annotations

import ast
import gzip
import html
import json
import logging
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hrq.data.download import ensure_file

try:  # optional speed-up; orjson's decode error subclasses json.JSONDecodeError (a ValueError)
    from orjson import loads as _json_loads
except ImportError:
    _json_loads = json.loads

__all__ = [
    "AMAZON_BASE_URL",
    "CATEGORIES",
    "fetch_amazon",
    "item_text",
    "meta_url",
    "raw_lines",
    "read_amazon",
    "reviews_url",
]

logger = logging.getLogger(__name__)

AMAZON_BASE_URL = "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles"
CATEGORIES = ("Beauty", "Sports_and_Outdoors", "Toys_and_Games")

# The top-level 'asin' key of a meta line ("{'asin': '0205616461', ...").
_ASIN_RE = re.compile(r"""['"]asin['"]\s*:\s*['"]([^'"]+)['"]""")
_SPACE_RE = re.compile(r"\s+")


def reviews_url(category: str) -> str:
    return f"{AMAZON_BASE_URL}/reviews_{category}_5.json.gz"


def meta_url(category: str) -> str:
    return f"{AMAZON_BASE_URL}/meta_{category}.json.gz"


def fetch_amazon(category: str, directory: str | Path) -> tuple[Path, Path]:
    """``(reviews, meta)`` paths under ``directory``, downloaded if missing (trust on first use)."""
    directory = Path(directory)
    return (ensure_file(reviews_url(category), directory / f"reviews_{category}_5.json.gz"),
            ensure_file(meta_url(category), directory / f"meta_{category}.json.gz"))


_BOM = b"\xef\xbb\xbf"


def raw_lines(path: Path, *, gzipped: bool) -> Iterator[tuple[int, bytes]]:
    """``(1-based line number, line)`` of a (gzip) file, a UTF-8 BOM at its start dropped.

    A file that is not gzip, or whose compressed stream is cut short (an interrupted download)
    or corrupt, raises ``ValueError`` naming the file and the last line read, instead of a bare
    ``EOFError``/``BadGzipFile``.
    """
    lineno = 0
    try:
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as f:
            for lineno, line in enumerate(f, start=1):
                yield lineno, line[len(_BOM):] if lineno == 1 and line.startswith(_BOM) else line
    except EOFError as exc:
        raise ValueError(f"{path}: truncated gzip file: the compressed data ends after line {lineno} ({exc}); "
                         "the file is incomplete (an interrupted download?): delete it and fetch it again") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        where = "not a gzip file" if lineno == 0 else f"corrupt gzip data after line {lineno}"
        raise ValueError(f"{path}: {where} ({exc}); delete it and fetch it again") from None


def first_json_records(path: Path, key: str, needed: set[str], *, gzipped: bool) -> dict[str, dict]:
    """The first JSON-object line of each ``key`` value in ``needed``, from a JSON-lines file.

    Every line is parsed, so a malformed line anywhere is reported (file and 1-based line).
    """
    found: dict[str, dict] = {}
    for lineno, line in raw_lines(path, gzipped=gzipped):
        if not line.strip():
            continue
        try:
            record = _json_loads(line)
        except ValueError as exc:  # also UnicodeDecodeError
            raise ValueError(f"{path}: line {lineno}: not a JSON object ({exc})") from None
        value = record.get(key) if isinstance(record, dict) else None
        if not isinstance(value, str) or not value:
            raise ValueError(f"{path}: line {lineno}: expected a JSON object with a string {key!r}"
                             + (f", got {key!r}: {value!r}" if isinstance(record, dict) and key in record else ""))
        if value in needed and value not in found:
            found[value] = record
    return found


def _clean(value: Any) -> str:
    """One line of text: HTML entities decoded (titles contain "&amp;"), whitespace collapsed."""
    return _SPACE_RE.sub(" ", html.unescape(str(value))).strip()


def _categories(meta: dict) -> list[str]:
    """``categories`` (a list of category paths) flattened, first occurrence kept, in order."""
    out: dict[str, None] = {}
    for path in meta.get("categories") or []:
        for name in [path] if isinstance(path, str) else path:
            if name := _clean(name):
                out.setdefault(name)
    return list(out)


def _price(meta: dict) -> float | None:
    price = meta.get("price")
    return float(price) if isinstance(price, (int, float)) and not isinstance(price, bool) else None


def item_text(meta: dict) -> str:
    """The text an item is embedded from, deterministic for a given meta dict.

    One ``Field: value`` line each for title, brand, categories (flattened, de-duplicated,
    ``', '``-joined), price (two decimals) and description, in that order, skipping empty
    fields; with none of them ``"Item <asin>"``. Values are whitespace-normalised with HTML
    entities decoded.
    """
    fields = [
        ("Title", _clean(meta.get("title") or "")),
        ("Brand", _clean(meta.get("brand") or "")),
        ("Categories", ", ".join(_categories(meta))),
        ("Price", f"{p:.2f}" if (p := _price(meta)) is not None else ""),
        ("Description", _clean(meta.get("description") or "")),
    ]
    lines = [f"{name}: {value}" for name, value in fields if value]
    return "\n".join(lines) if lines else f"Item {meta.get('asin', '')}".strip()


def _id(review: dict, key: str) -> str:
    """A non-empty string id (``reviewerID``, ``asin``); null, empty or non-string is an error,
    never the id ``"None"``."""
    value = review[key]
    if not isinstance(value, str) or not value:
        raise TypeError(f"{key} is {value!r}, not a non-empty string")
    return value


def _read_reviews(path: Path) -> pd.DataFrame:
    users, asins, times = [], [], []
    for lineno, line in raw_lines(path, gzipped=True):
        if not line.strip():
            continue
        try:
            review = _json_loads(line)
            users.append(_id(review, "reviewerID"))
            asins.append(_id(review, "asin"))
            times.append(int(review["unixReviewTime"]))
        except (ValueError, KeyError, TypeError) as exc:
            detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ValueError(f"{path}: line {lineno}: not a review JSON object with reviewerID, asin "
                             f"and unixReviewTime ({detail})") from None
    return pd.DataFrame({
        "user": pd.Series(users, dtype="str"),
        "raw_item": pd.Series(asins, dtype="str"),
        "timestamp": np.asarray(times, dtype=np.int64),
    })


def _read_meta(path: Path, needed: set[str]) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for lineno, raw in raw_lines(path, gzipped=True):
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: line {lineno}: not UTF-8 ({exc})") from None
        if not line.strip():
            continue
        match = _ASIN_RE.search(line)
        if match is None:
            raise ValueError(f"{path}: line {lineno}: no 'asin' in the metadata line {line[:80]!r}")
        asin = match.group(1)
        if asin not in needed or asin in found:
            continue
        try:
            meta = ast.literal_eval(line)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
            raise ValueError(f"{path}: line {lineno}: not a Python dict literal ({exc})") from None
        if not isinstance(meta, dict) or meta.get("asin") != asin:
            raise ValueError(f"{path}: line {lineno}: expected a dict with 'asin': {asin!r}")
        found[asin] = meta
    return found


def read_amazon(reviews_path: str | Path, meta_path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read one Amazon 2014 category.

    Returns:
        items: one row per asin that occurs in the reviews, sorted by asin; columns ``raw_id``
            (str), ``title`` (str or missing), ``text`` (str, :func:`item_text`), ``brand`` (str
            or missing), ``categories`` (list[str], flattened and de-duplicated), ``price``
            (float64, NaN if unknown). Items without metadata get ``text`` "Item <asin>"; how
            many is logged as a warning.
        interactions: one row per review, in file order; columns ``user`` (str reviewerID),
            ``raw_item`` (str asin), ``timestamp`` (int64 ``unixReviewTime``, whole days).

    Raises:
        ValueError: a malformed line (the message names the file and the 1-based line number).
    """
    reviews_path, meta_path = Path(reviews_path), Path(meta_path)
    interactions = _read_reviews(reviews_path)
    asins = sorted(set(interactions["raw_item"]))
    metas = _read_meta(meta_path, set(asins))
    if missing := len(asins) - len(metas):
        logger.warning("%d of %d reviewed items have no metadata in %s; their text is only their asin",
                       missing, len(asins), meta_path)
    rows = [metas.get(asin, {"asin": asin}) for asin in asins]
    items = pd.DataFrame({
        "raw_id": pd.Series(asins, dtype="str"),
        "title": pd.Series([_clean(m["title"]) if m.get("title") else None for m in rows], dtype="str"),
        "text": pd.Series([item_text(m) for m in rows], dtype="str"),
        "brand": pd.Series([_clean(m["brand"]) if m.get("brand") else None for m in rows], dtype="str"),
        "categories": pd.Series([_categories(m) for m in rows], dtype="object"),
        "price": pd.Series([_price(m) for m in rows], dtype="float64"),
    })
    return items, interactions
