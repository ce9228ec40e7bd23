"""Amazon Reviews 2018 (Ni, Li & McAuley, 2019), one category: ratings-only CSV and product metadata.

HG-Rec's "Instruments" dataset (Musical_Instruments). Per category two files from
https://nijianmo.github.io/amazon/ (they are behind the page's links and not at a stable
scriptable URL, so nothing is downloaded here: a missing file is a :class:`FileNotFoundError`
that says where to get it):

- ``<Cat>.csv`` ("ratings only"): no header, one ``item,user,rating,timestamp`` line per
  rating (asin, reviewerID, 1-5 stars, unix seconds). Note the order: item first.
- ``meta_<Cat>.json.gz``: one strict JSON object per line (``asin``, ``title``, ``description``
  (list of str, may hold HTML), ``brand``, ``category`` (one flat list of str, sometimes with
  trailing HTML debris), ``price`` (str such as ``"$12.99"``, a range, or ``""``), ...). Some
  asins occur on several lines; the first is used.

Protocol (:func:`read_amazon2018`). HG-Rec (appendix C) says only "we filter out the users and
items that have less than 5 interactions" and reports 24,772 users / 9,922 items / 206,153
interactions for Instruments (Table 5). Those are the statistics of LC-Rec's Instruments
(Zheng et al., 2024), which HG-Rec's baselines share, and LC-Rec's published preprocessing
(``data_process/amazon18_data_process.py``) is the one followed here, in its order:

1. de-duplicate user-item pairs, keeping each user's *earliest* rating of an item
   (:func:`first_interactions`): the first rating is the actual purchase/encounter, later ones
   are re-ratings or crawl duplicates, and a repeated item would be its own next-item target;
2. drop ratings of items without a metadata line: an item must have text to be tokenized;
3. *iterative* 5-core (:func:`k_core`): drop users and items with fewer than 5 interactions
   and repeat until nothing changes, since dropping an item can push a user below 5 and
   vice versa.

On the real files this should give the numbers above; the unit tests cannot check that.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hrq.data.amazon import _categories, _clean, first_json_records, item_text

__all__ = [
    "AMAZON2018_PAGE",
    "amazon2018_paths",
    "first_interactions",
    "item_text_2018",
    "k_core",
    "read_amazon2018",
    "require_files",
]

logger = logging.getLogger(__name__)

AMAZON2018_PAGE = "https://nijianmo.github.io/amazon/"

_TAG_RE = re.compile(r"</?[A-Za-z][^<>]*>")  # an HTML tag (descriptions and categories hold some)
_PRICE_RE = re.compile(r"\$\s*(\d[\d,]*(?:\.\d+)?)")
_BY_RE = re.compile(r"^\s*by\s*\n")  # brands scraped as "by\n    \n    Fender"


# ---------------------------------------------------------------------------- shared protocol steps


def require_files(paths: Mapping[str, Path], how_to_get: str) -> None:
    """Raise :class:`FileNotFoundError` listing every missing path in ``paths`` (label -> path).

    ``how_to_get`` is appended: where the files come from and where to put them.
    """
    missing = [f"{label} {str(path)!r}" for label, path in paths.items() if not Path(path).is_file()]
    if missing:
        raise FileNotFoundError(f"missing {', '.join(missing)}. {how_to_get}")


def first_interactions(interactions: pd.DataFrame) -> pd.DataFrame:
    """One row per (user, raw_item): the earliest by ``timestamp``, ties broken by row order.

    The kept rows stay in their input order (the index is reset).
    """
    order = np.argsort(interactions["timestamp"].to_numpy(np.int64), kind="stable")
    repeated = interactions.iloc[order].duplicated(["user", "raw_item"], keep="first").to_numpy()
    return interactions.iloc[np.sort(order[~repeated])].reset_index(drop=True)


def k_core(interactions: pd.DataFrame, k: int) -> pd.DataFrame:
    """The ``k``-core: the largest subset of rows in which every user and every item has >= ``k`` rows.

    Users and items below ``k`` are dropped together, and that is repeated until it changes
    nothing (each pass can push others below ``k``). The result is unique, whatever the removal
    order. Every row counts, so de-duplicate first if repeated pairs should count once. Rows
    keep their input order (the index is reset).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    users, _ = pd.factorize(interactions["user"])
    items, _ = pd.factorize(interactions["raw_item"])
    keep = np.ones(len(interactions), dtype=bool)
    passes = 0
    while True:
        user_counts = np.bincount(users[keep], minlength=users.max(initial=-1) + 1)
        item_counts = np.bincount(items[keep], minlength=items.max(initial=-1) + 1)
        still = keep & (user_counts[users] >= k) & (item_counts[items] >= k)
        passes += 1
        if np.array_equal(still, keep):
            break
        keep = still
    logger.info("%d-core after %d passes: %d of %d interactions", k, passes, int(keep.sum()), len(keep))
    return interactions[keep].reset_index(drop=True)


# ---------------------------------------------------------------------------- metadata


def _strip_tags(value: Any) -> str:
    return _TAG_RE.sub(" ", str(value))


def _price_2018(price: Any) -> float | None:
    """``"$1,299.00"`` -> 1299.0. Ranges ("$10.99 - $15.99"), empty strings and the scraped CSS/JS
    that some price fields hold give None: there is no single price to report."""
    if isinstance(price, (int, float)) and not isinstance(price, bool):
        return float(price)
    if not isinstance(price, str) or len(found := _PRICE_RE.findall(price)) != 1:
        return None
    if _PRICE_RE.sub("", price).strip():  # anything besides the one price
        return None
    return float(found[0].replace(",", ""))


def _as_2014(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The 2018 metadata in the 2014 shape that :mod:`hrq.data.amazon`'s helpers read.

    HTML tags are removed; ``category`` becomes one category path, cut at the first entry with
    HTML in it (the "</span></span>" debris the crawl left at the end of some lists); the
    ``description`` list is joined; ``price`` is parsed; a brand's "by" prefix is dropped.
    """
    categories: list[str] = []
    raw_categories = meta.get("category") or []
    for name in [raw_categories] if isinstance(raw_categories, str) else raw_categories:
        if _TAG_RE.search(str(name)):
            break
        categories.append(str(name))
    description = meta.get("description") or []
    if isinstance(description, str):
        description = [description]
    return {
        "asin": meta.get("asin", ""),
        "title": _strip_tags(meta.get("title") or ""),
        "brand": _BY_RE.sub("", str(meta.get("brand") or "")),
        "categories": [categories],
        "price": _price_2018(meta.get("price")),
        "description": " ".join(_strip_tags(d) for d in description if d),
    }


def item_text_2018(meta: Mapping[str, Any]) -> str:
    """The text an item is embedded from, for a 2018 metadata dict: :func:`hrq.data.amazon.item_text`
    (``Field: value`` lines for title, brand, categories, price, description) of its cleaned
    2014-shaped form, so both Amazon versions give texts of the same layout."""
    return item_text(_as_2014(meta))


# ---------------------------------------------------------------------------- readers


def amazon2018_paths(directory: str | Path, category: str = "Musical_Instruments") -> tuple[Path, Path]:
    """``(ratings_csv, meta_json_gz)`` where :func:`read_amazon2018` expects one category's files."""
    directory = Path(directory)
    return directory / f"{category}.csv", directory / f"meta_{category}.json.gz"


def _read_ratings(path: Path) -> pd.DataFrame:
    users, items, times = [], [], []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
                fields = line.split(",")
                if len(fields) != 4:
                    raise ValueError(f"{len(fields)} fields")
                item, user, rating, timestamp = fields
                if not item or not user:
                    raise ValueError("empty item or user")
                float(rating)  # not kept; a non-number means shifted columns
                times.append(int(timestamp))
            except ValueError as exc:  # also UnicodeDecodeError
                raise ValueError(f"{path}: line {lineno}: expected 'item,user,rating,timestamp' ({exc}): "
                                 f"{raw[:80].decode('utf-8', 'replace')!r}") from None
            items.append(item)
            users.append(user)
    return pd.DataFrame({
        "user": pd.Series(users, dtype="str"),
        "raw_item": pd.Series(items, dtype="str"),
        "timestamp": np.asarray(times, dtype=np.int64),
    })


def _read_meta(path: Path, needed: set[str]) -> dict[str, dict]:
    """2014-shaped metadata of the asins in ``needed`` that have a line (the first such line).

    Every line is parsed, so a malformed line anywhere is reported.
    """
    return {asin: _as_2014(meta) for asin, meta in first_json_records(path, "asin", needed, gzipped=True).items()}


def read_amazon2018(ratings_csv: str | Path, meta_json_gz: str | Path, *,
                    core: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read one Amazon 2018 category with the HG-Rec/LC-Rec protocol (see the module docstring).

    Args:
        ratings_csv: the ratings-only ``<Cat>.csv`` (``item,user,rating,timestamp``, no header).
        meta_json_gz: ``meta_<Cat>.json.gz``.
        core: the k of the iterative k-core filter (1 disables it).

    Returns:
        items: one row per asin of the kept interactions, sorted by asin; columns ``raw_id``
            (str), ``title`` (str or missing), ``text`` (str, :func:`item_text_2018`), ``brand``
            (str or missing), ``categories`` (list[str]), ``price`` (float64, NaN if unknown or a
            range). Every item has metadata (step 2 of the protocol).
        interactions: the kept ratings, one per (user, item), in file order; columns ``user``
            (str reviewerID), ``raw_item`` (str asin), ``timestamp`` (int64 unix seconds).

    Raises:
        FileNotFoundError: a file is missing (the message names the paths and the download page).
        ValueError: a malformed line (the message names the file and the 1-based line number).
    """
    ratings_csv, meta_json_gz = Path(ratings_csv), Path(meta_json_gz)
    require_files(
        {"Amazon 2018 ratings": ratings_csv, "Amazon 2018 metadata": meta_json_gz},
        f"Download the category's 'ratings only' CSV and its metadata (meta_<Category>.json.gz) from "
        f"{AMAZON2018_PAGE} (links on that page; there is no stable URL to fetch them automatically) "
        f"and put them at {str(ratings_csv)!r} and {str(meta_json_gz)!r}.")

    raw = _read_ratings(ratings_csv)
    interactions = first_interactions(raw)
    metas = _read_meta(meta_json_gz, set(interactions["raw_item"]))
    has_meta = interactions["raw_item"].isin(metas.keys())
    logger.info("%s: %d ratings, %d after de-duplication, %d of them of items with metadata",
                ratings_csv, len(raw), len(interactions), int(has_meta.sum()))
    interactions = k_core(interactions[has_meta].reset_index(drop=True), core)

    asins = sorted(set(interactions["raw_item"]))
    rows = [metas[asin] for asin in asins]
    items = pd.DataFrame({
        "raw_id": pd.Series(asins, dtype="str"),
        "title": pd.Series([_clean(m["title"]) or None for m in rows], dtype="str"),
        "text": pd.Series([item_text(m) for m in rows], dtype="str"),
        "brand": pd.Series([_clean(m["brand"]) or None for m in rows], dtype="str"),
        "categories": pd.Series([_categories(m) for m in rows], dtype="object"),
        "price": pd.Series([m["price"] for m in rows], dtype="float64"),
    })
    logger.info("%s: %d users, %d items, %d interactions after the %d-core",
                ratings_csv, interactions["user"].nunique(), len(items), len(interactions), core)
    return items, interactions
