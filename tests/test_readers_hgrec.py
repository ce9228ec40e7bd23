"""Tests for the readers of the datasets HG-Rec adds: Amazon 2018 (Instruments) and Yelp.

Fixtures are written in the exact raw formats: a header-less ``item,user,rating,timestamp`` CSV,
gzip strict-JSON metadata with list-valued description/category and "$" prices, and Yelp
JSON lines with "YYYY-MM-DD HH:MM:SS" dates in several years.
"""

from __future__ import annotations

import gzip
import itertools
import json
import logging

import numpy as np
import pandas as pd
import pytest

from hrq.data.amazon2018 import (
    AMAZON2018_PAGE,
    amazon2018_paths,
    first_interactions,
    item_text_2018,
    k_core,
    read_amazon2018,
)
from hrq.data.interactions import sequences_from_interactions
from hrq.data.yelp import YELP_PAGE, business_text, read_yelp, yelp_paths


def _frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user", "raw_item", "timestamp"]).astype(
        {"user": "str", "raw_item": "str", "timestamp": "int64"})


def _pairs(df: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(df["user"], df["raw_item"]))


# ---------------------------------------------------------------------------- protocol steps


def test_k_core_iterates_until_stable():
    # A, B, C x {x, y} is a 2-core. D rated x and w; w has no other rating, so w goes in the first
    # pass, which leaves D with one rating: only a second pass drops D.
    rows = [(u, i, 0) for u in "ABC" for i in "xy"] + [("D", "x", 1), ("D", "w", 2)]
    inter = _frame(rows)
    one_pass = inter[inter["raw_item"].map(inter["raw_item"].value_counts()) >= 2]
    assert "D" in set(one_pass["user"])  # a single pass is not enough

    core = k_core(inter, 2)
    assert _pairs(core) == {(u, i) for u in "ABC" for i in "xy"}
    assert core.index.tolist() == list(range(6)) and core.columns.tolist() == inter.columns.tolist()
    assert len(k_core(inter, 1)) == len(inter)
    assert k_core(inter, 4).empty
    with pytest.raises(ValueError, match="k must be >= 1"):
        k_core(inter, 0)


def _reference_k_core(pairs: list[tuple[str, str]], k: int) -> set[tuple[str, str]]:
    """Remove one node below k at a time until none is left: slow, obviously right."""
    edges = list(pairs)
    while True:
        users = pd.Series([u for u, _ in edges]).value_counts()
        items = pd.Series([i for _, i in edges]).value_counts()
        low = [("u", u) for u, c in users.items() if c < k] + [("i", i) for i, c in items.items() if c < k]
        if not low:
            return set(edges)
        side, name = low[0]
        edges = [e for e in edges if e[0 if side == "u" else 1] != name]


@pytest.mark.parametrize("seed", range(5))
def test_k_core_matches_one_at_a_time_reference(seed):
    # 40 users x 30 items with ~230 distinct pairs: the 3- and 4-cores are proper, non-empty subsets,
    # and the 5-core mostly unravels completely through cascades.
    rng = np.random.default_rng(seed)
    rows = [(f"u{rng.integers(40)}", f"i{rng.integers(30)}", int(t)) for t in rng.integers(0, 50, size=260)]
    inter = first_interactions(_frame(rows))
    for k in (3, 4, 5):
        assert _pairs(k_core(inter, k)) == _reference_k_core(list(zip(inter["user"], inter["raw_item"])), k)


def test_first_interactions_keeps_earliest_then_file_order():
    inter = _frame([("u", "a", 50), ("u", "b", 10), ("u", "a", 20), ("v", "a", 5), ("u", "b", 10),
                    ("u", "a", 20)])
    out = first_interactions(inter)
    # (u, a): the t=20 row (row 2) beats the earlier-in-file t=50 one; (u, b): tie, row 1 wins
    assert out.values.tolist() == [["u", "b", 10], ["u", "a", 20], ["v", "a", 5]]


# ---------------------------------------------------------------------------- Amazon 2018

ITEMS = [f"B{j}" for j in range(5)]
USERS = [f"U{j}" for j in range(5)]

META = [
    {"asin": "B0", "title": "Strat &amp; <b>Case</b>", "brand": "by\n    \n    Fender",
     "description": ["<p>Solid  body,</p>", "", "maple neck<br>"],
     "category": ["Musical Instruments", "Guitars", "Electric Guitars", "</span></span></span>"],
     "price": "$1,299.00", "also_buy": ["B1"], "rank": "12 in Musical Instruments ("},
    {"asin": "B1", "title": "Picks", "description": [], "category": ["Musical Instruments", "Picks"],
     "price": "$10.99 - $15.99"},  # a range: no single price
    {"asin": "B1", "title": "Picks (second line for the same asin)", "price": "$1.00"},
    {"asin": "B2", "title": "", "category": [], "price": "", "brand": ""},
    {"asin": "B3", "title": "Tuner", "price": ".a-box{display:block}"},  # scraped CSS in the price
    {"asin": "B4", "title": "Strings", "description": "Nickel wound"},
    {"asin": "BX", "title": "Rare item"},
    {"asin": "BZ", "title": "Never rated"},
]


def _write_amazon(tmp_path, rows, meta=META):
    csv_path, meta_path = amazon2018_paths(tmp_path)
    csv_path.write_text("".join(f"{i},{u},{r},{t}\n" for i, u, r, t in rows), encoding="utf-8")
    with gzip.open(meta_path, "wt", encoding="utf-8") as f:
        f.write("".join((m if isinstance(m, str) else json.dumps(m)) + "\n" for m in meta))
    return csv_path, meta_path


def _amazon_rows():
    rows = [("B0", "U0", 5.0, 500)]  # repeated below with an earlier time: the later line wins
    t = itertools.count(1000)
    rows += [(i, u, 4.0, next(t)) for u in USERS for i in ITEMS]
    rows += [("B0", "U0", 3.0, 100)]
    # U5: 5 items, but BX has no other rating, so BX goes first and then U5 (4 left) goes too.
    rows += [(i, "U5", 5.0, next(t)) for i in ["B0", "B1", "B2", "B3", "BX"]]
    # U6: 5 lines, 4 distinct items: survives only without de-duplication.
    rows += [(i, "U6", 5.0, next(t)) for i in ["B0", "B1", "B2", "B3", "B3"]]
    # BN: 5 ratings but no metadata line: dropped before the k-core.
    rows += [("BN", u, 5.0, next(t)) for u in USERS]
    return rows


def test_read_amazon2018_protocol(tmp_path):
    csv_path, meta_path = _write_amazon(tmp_path, _amazon_rows())
    items, inter = read_amazon2018(csv_path, meta_path)
    assert _pairs(inter) == {(u, i) for u in USERS for i in ITEMS}
    assert len(inter) == 25 and inter.index.tolist() == list(range(25))
    assert inter.columns.tolist() == ["user", "raw_item", "timestamp"]
    assert inter["timestamp"].dtype == np.int64
    assert inter.loc[(inter["user"] == "U0") & (inter["raw_item"] == "B0"), "timestamp"].tolist() == [100]
    assert inter.iloc[-1].tolist() == ["U0", "B0", 100]  # file order: the kept duplicate was last
    assert items["raw_id"].tolist() == ITEMS
    assert items.columns.tolist() == ["raw_id", "title", "text", "brand", "categories", "price"]

    # core=1 disables the k-core: U5, U6 and BX stay, BN (no metadata) still goes, U6's repeat too.
    items1, inter1 = read_amazon2018(csv_path, meta_path, core=1)
    assert set(items1["raw_id"]) == {*ITEMS, "BX"}
    assert len(inter1) == 25 + 5 + 4


def test_read_amazon2018_item_columns(tmp_path):
    csv_path, meta_path = _write_amazon(tmp_path, _amazon_rows())
    items, _ = read_amazon2018(csv_path, meta_path)
    b0, b1, b2, b3, b4 = items.to_dict("records")
    assert b0["title"] == "Strat & Case" and b0["brand"] == "Fender" and b0["price"] == 1299.0
    assert b0["categories"] == ["Musical Instruments", "Guitars", "Electric Guitars"]  # HTML debris cut
    assert b0["text"] == ("Title: Strat & Case\nBrand: Fender\n"
                          "Categories: Musical Instruments, Guitars, Electric Guitars\n"
                          "Price: 1299.00\nDescription: Solid body, maple neck")
    assert b0["text"] == item_text_2018(META[0])
    assert b1["title"] == "Picks" and np.isnan(b1["price"])  # first line of B1; a range has no price
    assert pd.isna(b1["brand"])
    assert pd.isna(b2["title"]) and np.isnan(b2["price"]) and b2["categories"] == []
    assert b2["text"] == "Item B2"
    assert np.isnan(b3["price"])
    assert b4["text"] == "Title: Strings\nDescription: Nickel wound"  # a plain-string description


def test_amazon2018_output_feeds_sequences(tmp_path):
    items, inter = read_amazon2018(*_write_amazon(tmp_path, _amazon_rows()))
    items_out, seqs, stats = sequences_from_interactions(inter, items)
    assert stats == {"users": 5, "items": 5, "interactions": 25, "users_raw": 5, "interactions_raw": 25}
    raw = items_out["raw_id"].to_numpy()
    u0 = seqs.loc[seqs["user_id"] == "U0", "items"].iloc[0]
    assert raw[u0].tolist() == ["B0", "B1", "B2", "B3", "B4"]  # B0 at t=100 comes first
    assert items_out.columns.tolist() == ["item_id", "raw_id", "title", "text", "brand", "categories", "price"]


@pytest.mark.parametrize("bad_line", [
    "B1,U1,5.0",            # 3 fields
    "B1,U1,5.0,12,extra",   # 5 fields
    "B1,U1,five,12",        # rating not a number
    "B1,U1,5.0,",           # empty timestamp
    "B1,U1,5.0,1.5e9",      # timestamp not an integer
    ",U1,5.0,12",           # empty item
])
def test_malformed_rating_line_names_file_and_line(tmp_path, bad_line):
    csv_path, meta_path = _write_amazon(tmp_path, [])
    csv_path.write_text(f"B0,U0,5.0,1\nB1,U0,4.0,2\n{bad_line}\nB2,U0,3.0,3\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"Musical_Instruments\.csv: line 3\b") as err:
        read_amazon2018(csv_path, meta_path)
    assert bad_line in str(err.value)


@pytest.mark.parametrize("bad_line", [
    "{'asin': 'B0', 'title': 'a Python literal, as in 2014'}",
    '{"asin": "B0", "title": "cut off',
    '{"title": "no asin"}',
    '["B0"]',
])
def test_malformed_meta_line_names_file_and_line(tmp_path, bad_line):
    csv_path, meta_path = _write_amazon(tmp_path, [("B0", "U0", 5.0, 1)], meta=[META[1], bad_line, META[0]])
    with pytest.raises(ValueError, match=r"meta_Musical_Instruments\.json\.gz: line 2\b"):
        read_amazon2018(csv_path, meta_path)


def test_amazon2018_missing_files_say_where_to_get_them(tmp_path):
    csv_path, meta_path = amazon2018_paths(tmp_path / "raw")
    with pytest.raises(FileNotFoundError) as err:
        read_amazon2018(csv_path, meta_path)
    message = str(err.value)
    assert str(csv_path) in message and str(meta_path) in message and AMAZON2018_PAGE in message
    _write_amazon(tmp_path, [])
    (tmp_path / "meta_Musical_Instruments.json.gz").unlink()
    with pytest.raises(FileNotFoundError, match="missing Amazon 2018 metadata '") as err:
        read_amazon2018(*amazon2018_paths(tmp_path))
    assert "missing Amazon 2018 ratings" not in str(err.value)  # only the missing file is listed


# ---------------------------------------------------------------------------- Yelp

BIZ = [f"X{j}" for j in range(5)]
YUSERS = [f"Y{j}" for j in range(5)]

BUSINESSES = [
    {"business_id": "X0", "name": "Joe&#39;s  Pizza", "city": "Las Vegas", "state": "NV",
     "categories": "Restaurants, Pizza,  Italian, Pizza", "attributes": {"WiFi": "u'free'"}, "stars": 4.5},
    {"business_id": "X1", "name": "Quiet Place", "city": "Toronto", "state": "ON", "categories": None},
    {"business_id": "X2", "name": "Old Release", "city": "Phoenix", "state": "AZ",
     "categories": ["Bars", "Nightlife"]},  # categories as a list (releases before 2019)
    {"business_id": "X3", "name": "", "city": "", "state": "", "categories": ""},
    {"business_id": "X4", "name": "Cafe", "city": "Madison", "state": "WI", "categories": "Coffee & Tea"},
    {"business_id": "X5", "name": "Opened 2020", "city": "Austin", "state": "TX", "categories": "Food"},
    {"business_id": "XC", "name": "Rarely visited", "city": "Austin", "state": "TX", "categories": "Food"},
    {"business_id": "XZ", "name": "Never reviewed", "city": "Austin", "state": "TX", "categories": "Food"},
]


_REVIEW_IDS = itertools.count()


def _review(user, business, date):
    return json.dumps({"review_id": f"r{next(_REVIEW_IDS)}", "user_id": user, "business_id": business, "stars": 4.0,
                       "useful": 0, "funny": 0, "cool": 0, "text": "Great, \"really\"\nnice.", "date": date})


def _write_yelp(tmp_path, reviews, businesses=BUSINESSES):
    review_path, business_path = yelp_paths(tmp_path)
    review_path.write_text("".join(r + "\n" for r in reviews), encoding="utf-8")
    business_path.write_text("".join((b if isinstance(b, str) else json.dumps(b)) + "\n" for b in businesses),
                             encoding="utf-8")
    return review_path, business_path


def _day(year, k):
    return f"{year}-{1 + k // 28:02d}-{1 + k % 28:02d} 12:{k % 60:02d}:00"


def _yelp_reviews():
    days = itertools.count(1)
    reviews = [_review("Y0", "X0", "2019-06-01 10:00:00")]  # repeated below with an earlier date
    reviews += [_review(u, b, _day(2019, next(days))) for u in YUSERS for b in BIZ]
    reviews += [_review("Y0", "X0", "2019-01-01 00:00:00")]
    # X5: 5 reviews, all in 2020; Y5: 5 reviews, 2 of them in 2018.
    reviews += [_review(u, "X5", _day(2020, next(days))) for u in YUSERS]
    reviews += [_review("Y5", b, _day(2018 if j < 2 else 2019, next(days))) for j, b in enumerate(BIZ)]
    # Y6: 5 reviews of 4 businesses; Y7: 5 businesses, but XC has no other review.
    reviews += [_review("Y6", b, _day(2019, next(days))) for b in ["X0", "X1", "X2", "X2", "X3"]]
    reviews += [_review("Y7", b, _day(2019, next(days))) for b in ["X0", "X1", "X2", "X3", "XC"]]
    # XM: 5 reviews of a business the business file lacks.
    reviews += [_review(u, "XM", _day(2019, next(days))) for u in YUSERS]
    return reviews


def test_read_yelp_protocol(tmp_path, caplog):
    paths = _write_yelp(tmp_path, _yelp_reviews())
    with caplog.at_level(logging.WARNING, logger="hrq.data.yelp"):
        items, inter = read_yelp(*paths)
    assert "5 reviews of 1 businesses missing" in caplog.text
    assert _pairs(inter) == {(u, b) for u in YUSERS for b in BIZ}
    assert len(inter) == 25 and inter.columns.tolist() == ["user", "raw_item", "timestamp"]
    assert inter["timestamp"].dtype == np.int64
    first = inter.loc[(inter["user"] == "Y0") & (inter["raw_item"] == "X0"), "timestamp"].tolist()
    assert first == [1546300800]  # 2019-01-01 00:00:00 as if UTC; the earlier review of the pair
    assert items["raw_id"].tolist() == BIZ

    # Without de-duplication (S3-Rec's counting) Y6's repeat keeps it in, and Y0-X0 counts thrice.
    _, repeats = read_yelp(*paths, dedup=False)
    assert len(repeats) == 25 + 2 + 5 and repeats["user"].value_counts()["Y6"] == 5
    # All years: X5 (2020) and Y5 (partly 2018) are in.
    items_all, inter_all = read_yelp(*paths, year=None)
    assert "X5" in set(items_all["raw_id"]) and "Y5" in set(inter_all["user"])
    assert "Y7" not in set(inter_all["user"])


def test_read_yelp_item_columns(tmp_path):
    items, _ = read_yelp(*_write_yelp(tmp_path, _yelp_reviews()))
    assert items.columns.tolist() == ["raw_id", "title", "text", "categories", "city", "state"]
    x0, x1, x2, x3, x4 = items.to_dict("records")
    assert x0["title"] == "Joe's Pizza" and x0["city"] == "Las Vegas" and x0["state"] == "NV"
    assert x0["categories"] == ["Restaurants", "Pizza", "Italian"]
    assert x0["text"] == "Name: Joe's Pizza\nCategories: Restaurants, Pizza, Italian\nLocation: Las Vegas, NV"
    assert x1["categories"] == [] and x1["text"] == "Name: Quiet Place\nLocation: Toronto, ON"
    assert x2["categories"] == ["Bars", "Nightlife"]
    assert pd.isna(x3["title"]) and pd.isna(x3["city"]) and x3["text"] == "Business X3"
    assert x4["text"] == business_text(BUSINESSES[4])


def test_yelp_output_feeds_sequences(tmp_path):
    items, inter = read_yelp(*_write_yelp(tmp_path, _yelp_reviews()))
    items_out, seqs, stats = sequences_from_interactions(inter, items)
    assert stats == {"users": 5, "items": 5, "interactions": 25, "users_raw": 5, "interactions_raw": 25}
    raw = items_out["raw_id"].to_numpy()
    y0 = seqs.loc[seqs["user_id"] == "Y0", "items"].iloc[0]
    assert raw[y0].tolist() == BIZ  # X0 on 2019-01-01 first


@pytest.mark.parametrize("bad_line", [
    '{"user_id": "Y0", "business_id": "X0", "date": "2019-01-02 1',          # cut off
    json.dumps({"user_id": "Y0", "business_id": "X0"}),                      # no date
    json.dumps({"user_id": "Y0", "business_id": "X0", "date": "2019/01/02 10:00:00"}),
    json.dumps({"user_id": "Y0", "business_id": "X0", "date": "2019-01-02"}),
    json.dumps({"user_id": None, "business_id": "X0", "date": "2018-01-02 10:00:00"}),  # other year too
    json.dumps(["Y0", "X0", "2019-01-02 10:00:00"]),
    json.dumps({"user_id": "Y0", "business_id": "X0", "date": "2019-02-30 10:00:00"}),  # no such day
])
def test_malformed_review_line_names_file_and_line(tmp_path, bad_line):
    reviews = [_review("Y0", "X0", "2019-01-01 10:00:00"), _review("Y1", "X0", "2017-01-01 10:00:00"),
               bad_line, _review("Y2", "X0", "2019-03-01 10:00:00")]
    with pytest.raises(ValueError, match=r"yelp_academic_dataset_review\.json: line 3\b"):
        read_yelp(*_write_yelp(tmp_path, reviews))


def test_malformed_business_line_names_file_and_line(tmp_path):
    paths = _write_yelp(tmp_path, [_review("Y0", "X0", "2019-01-01 10:00:00")],
                        businesses=[BUSINESSES[0], '{"business_id": "X1", "name": "cut', BUSINESSES[1]])
    with pytest.raises(ValueError, match=r"yelp_academic_dataset_business\.json: line 2\b"):
        read_yelp(*paths)
    paths = _write_yelp(tmp_path, [_review("Y0", "X0", "2019-01-01 10:00:00")],
                        businesses=[BUSINESSES[0], json.dumps({"name": "no id"})])
    with pytest.raises(ValueError, match=r"line 2\b.*business_id"):
        read_yelp(*paths)


def test_yelp_missing_files_say_where_to_get_them(tmp_path):
    review_path, business_path = yelp_paths(tmp_path / "yelp")
    with pytest.raises(FileNotFoundError) as err:
        read_yelp(review_path, business_path)
    message = str(err.value)
    assert str(review_path) in message and str(business_path) in message
    assert YELP_PAGE in message and "License" in message


def test_the_data_stage_reads_amazon2018_from_raw_dir(tmp_path):
    from hrq.stages.data import prepare_data

    (tmp_path / "raw" / "amazon2018").mkdir(parents=True)
    _write_amazon(tmp_path / "raw" / "amazon2018", _amazon_rows())
    out = {k: str(tmp_path / "data" / f"{k}.parquet") for k in ("catalog", "sequences", "stats")}
    prepare_data({}, out, {"name": "inst", "task": "recommendation", "raw_dir": str(tmp_path / "raw"),
                           "spec": {"kind": "amazon2018", "category": "Musical_Instruments"}})
    items, interactions = read_amazon2018(*amazon2018_paths(tmp_path / "raw" / "amazon2018"))
    stats = pd.read_parquet(out["stats"]).iloc[0]
    assert stats["users_raw"] == interactions["user"].nunique()
    assert stats["interactions_raw"] == len(interactions)
    assert sorted(pd.read_parquet(out["catalog"])["raw_id"]) == sorted(items["raw_id"])
