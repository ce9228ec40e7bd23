"""Yelp Open Dataset: reviews and businesses, HG-Rec's "Yelp" dataset (reviews of 2019).

Two JSON-lines files from the dataset archive (https://www.yelp.com/dataset). Yelp hands the
archive out only to people who accept its Dataset License (non-commercial, academic use, no
redistribution), so it is never downloaded here: put the files in place by hand; a missing
file is a :class:`FileNotFoundError` that says so.

- ``yelp_academic_dataset_review.json`` (~5 GB): ``review_id``, ``user_id``, ``business_id``,
  ``stars``, ``text``, ``date`` ("YYYY-MM-DD HH:MM:SS"), ... It is streamed line by line and
  only user, business and date of the reviews of the chosen year are kept.
- ``yelp_academic_dataset_business.json``: ``business_id``, ``name``, ``city``, ``state``,
  ``categories`` ("A, B, C" or null; a list in releases before 2019), ``attributes``, ...

Protocol (:func:`read_yelp`). HG-Rec (appendix C, Table 5) reports 30,431 users / 20,033 items /
316,354 interactions and says only that users and items with fewer than 5 interactions are
filtered out. These are the Yelp statistics of S3-Rec (Zhou et al., CIKM 2020), whose
``data/data_process.py`` keeps the reviews dated 2019-01-01 00:00:00 to 2019-12-31 00:00:00
(in the release it used, whose last review is from 2019-12-13) and then filters 5-core
iteratively. Here:

1. keep the reviews of calendar year ``year`` (2019): on S3-Rec's release that is the same set;
   on a later release the window differs only in reviews of 2019-12-31 after midnight, but
   later releases also cover a different set of businesses, so their counts differ anyway;
2. de-duplicate user-business pairs, keeping the earliest review
   (:func:`hrq.data.amazon2018.first_interactions`): a repeat review is not a new item in the
   sequence. S3-Rec did *not* do this, so the counts can come out slightly below the published
   ones; ``dedup=False`` reproduces S3-Rec's counting;
3. drop reviews of businesses missing from the business file (none in a consistent release:
   this guards against files from different releases, and is logged as a warning);
4. iterative 5-core (:func:`hrq.data.amazon2018.k_core`).

On the real files the statistics should come out near the numbers above; the unit tests cannot
check that.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hrq.data.amazon import _clean, _json_loads, first_json_records
from hrq.data.amazon2018 import first_interactions, k_core, require_files

__all__ = ["BUSINESS_FILE", "REVIEW_FILE", "YELP_PAGE", "business_text", "read_yelp", "yelp_paths"]

logger = logging.getLogger(__name__)

YELP_PAGE = "https://www.yelp.com/dataset"
REVIEW_FILE = "yelp_academic_dataset_review.json"
BUSINESS_FILE = "yelp_academic_dataset_business.json"

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")


def yelp_paths(directory: str | Path) -> tuple[Path, Path]:
    """``(review_json, business_json)`` where :func:`read_yelp` expects the files under ``directory``."""
    directory = Path(directory)
    return directory / REVIEW_FILE, directory / BUSINESS_FILE


def _business_categories(business: Mapping[str, Any]) -> list[str]:
    """``categories`` ("A, B, C", a list, or null) as a list, cleaned, first occurrence kept."""
    raw = business.get("categories") or []
    names = raw.split(",") if isinstance(raw, str) else raw
    out: dict[str, None] = {}
    for name in names:
        if name := _clean(name):
            out.setdefault(name)
    return list(out)


def _location(business: Mapping[str, Any]) -> str:
    return ", ".join(part for key in ("city", "state") if (part := _clean(business.get(key) or "")))


def business_text(business: Mapping[str, Any]) -> str:
    """The text a business is embedded from, deterministic for a given business dict.

    One ``Field: value`` line each for name, categories (``', '``-joined) and location ("City,
    ST"), skipping empty ones; with none of them ``"Business <business_id>"``. The same layout
    as :func:`hrq.data.amazon.item_text`.
    """
    fields = [
        ("Name", _clean(business.get("name") or "")),
        ("Categories", ", ".join(_business_categories(business))),
        ("Location", _location(business)),
    ]
    lines = [f"{name}: {value}" for name, value in fields if value]
    return "\n".join(lines) if lines else f"Business {business.get('business_id', '')}".strip()


def _read_reviews(path: Path, year: int | None) -> pd.DataFrame:
    """(user, business, date) of the reviews of ``year`` (all with None), in file order.

    Every line is parsed and checked, whatever its year, so a malformed line is never skipped
    silently. Dates are converted afterwards in one vectorised numpy call.
    """
    prefix = None if year is None else f"{year:04d}-"
    users, businesses, dates, linenos = [], [], [], []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                review = _json_loads(line)
                user, business, date = review["user_id"], review["business_id"], review["date"]
                if not (isinstance(user, str) and user and isinstance(business, str) and business):
                    raise ValueError("user_id and business_id must be non-empty strings")
                if not (isinstance(date, str) and _DATE_RE.fullmatch(date)):
                    raise ValueError(f"date {date!r} is not 'YYYY-MM-DD HH:MM:SS'")
            except (ValueError, KeyError, TypeError) as exc:
                detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
                raise ValueError(f"{path}: line {lineno}: not a review JSON object with user_id, business_id "
                                 f"and date ({detail})") from None
            if prefix is None or date.startswith(prefix):
                users.append(user)
                businesses.append(business)
                dates.append(date)
                linenos.append(lineno)
    try:
        # Yelp dates are local times without a zone; read as UTC they still order each user's reviews.
        seconds = np.array(dates, dtype="datetime64[s]").astype(np.int64)
    except ValueError:  # a well-formed but impossible date (month 13, February 30): find its line
        for date, lineno in zip(dates, linenos):
            try:
                np.datetime64(date, "s")
            except ValueError as exc:
                raise ValueError(f"{path}: line {lineno}: invalid date {date!r} ({exc})") from None
        raise
    return pd.DataFrame({
        "user": pd.Series(users, dtype="str"),
        "raw_item": pd.Series(businesses, dtype="str"),
        "timestamp": seconds,
    })


def _read_businesses(path: Path, needed: set[str]) -> dict[str, dict]:
    """The business dicts of the ids in ``needed`` (first line of each); every line is checked."""
    found = first_json_records(path, "business_id", needed, gzipped=False)
    # only what the items table uses: attributes and hours are large and unused
    return {bid: {key: business.get(key) for key in ("business_id", "name", "city", "state", "categories")}
            for bid, business in found.items()}


def read_yelp(review_json: str | Path, business_json: str | Path, *, year: int | None = 2019, core: int = 5,
              dedup: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the Yelp Open Dataset with the HG-Rec/S3-Rec protocol (see the module docstring).

    Args:
        review_json: ``yelp_academic_dataset_review.json``.
        business_json: ``yelp_academic_dataset_business.json``.
        year: keep the reviews dated in this calendar year; None keeps all.
        core: the k of the iterative k-core filter (1 disables it).
        dedup: keep only the earliest review of each user-business pair (S3-Rec kept them all).

    Returns:
        items: one row per business of the kept interactions, sorted by id; columns ``raw_id``
            (str business_id), ``title`` (str name or missing), ``text`` (str,
            :func:`business_text`), ``categories`` (list[str]), ``city`` and ``state`` (str or
            missing).
        interactions: the kept reviews in file order; columns ``user`` (str user_id),
            ``raw_item`` (str business_id), ``timestamp`` (int64 seconds, the local time read as UTC).

    Raises:
        FileNotFoundError: a file is missing (the message names the paths and says where to get them).
        ValueError: a malformed line (the message names the file and the 1-based line number).
    """
    review_json, business_json = Path(review_json), Path(business_json)
    require_files(
        {"Yelp reviews": review_json, "Yelp businesses": business_json},
        f"The Yelp Open Dataset cannot be downloaded automatically: get the archive from {YELP_PAGE} "
        f"(you must accept Yelp's Dataset License, which allows non-commercial academic use only and no "
        f"redistribution), extract it and put {REVIEW_FILE} at {str(review_json)!r} and {BUSINESS_FILE} at "
        f"{str(business_json)!r}.")

    interactions = _read_reviews(review_json, year)
    n_year = len(interactions)
    if dedup:
        interactions = first_interactions(interactions)
    businesses = _read_businesses(business_json, set(interactions["raw_item"]))
    known = interactions["raw_item"].isin(businesses.keys())
    logger.info("%s: %d reviews in %s, %d after de-duplication", review_json, n_year,
                "all years" if year is None else year, len(interactions))
    if not known.all():
        logger.warning("%d reviews of %d businesses missing from %s are dropped (files from different "
                       "releases?)", int((~known).sum()), interactions.loc[~known, "raw_item"].nunique(),
                       business_json)
    interactions = k_core(interactions[known].reset_index(drop=True), core)

    ids = sorted(set(interactions["raw_item"]))
    rows = [businesses[i] for i in ids]
    items = pd.DataFrame({
        "raw_id": pd.Series(ids, dtype="str"),
        "title": pd.Series([_clean(b["name"] or "") or None for b in rows], dtype="str"),
        "text": pd.Series([business_text(b) for b in rows], dtype="str"),
        "categories": pd.Series([_business_categories(b) for b in rows], dtype="object"),
        "city": pd.Series([_clean(b["city"] or "") or None for b in rows], dtype="str"),
        "state": pd.Series([_clean(b["state"] or "") or None for b in rows], dtype="str"),
    })
    logger.info("%s: %d users, %d businesses, %d interactions after the %d-core",
                review_json, interactions["user"].nunique(), len(items), len(interactions), core)
    return items, interactions
