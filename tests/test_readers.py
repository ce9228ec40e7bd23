"""Tests for the raw-dataset readers: download/verify, MovieLens, Amazon 2014, sequence building.

Fixtures are written in the exact raw formats: a real zip with '::' lines, gzip JSON lines,
gzip Python-dict-literal lines.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import urllib.request
import zipfile

import numpy as np
import pandas as pd
import pytest

from hrq.data.amazon import item_text, read_amazon
from hrq.data.download import ChecksumError, DownloadError, ensure_file, sidecar_path
from hrq.data.interactions import sequences_from_interactions
from hrq.data.movielens import (
    MOVIES_MEMBER,
    RATINGS_MEMBER,
    generate_movielens,
    read_movielens,
    write_movielens_zip,
)
from hrq.recsys.protocol import filter_and_truncate

# ---------------------------------------------------------------------------- download


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if anything opens a URL."""
    def urlopen(*args, **kwargs):
        raise AssertionError(f"network contacted: {args}")
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_existing_file_with_good_checksum_is_used_without_network(tmp_path, no_network):
    target = tmp_path / "data.bin"
    target.write_bytes(b"payload")
    got = ensure_file("http://invalid.invalid/data.bin", target, md5=_md5(b"payload"))
    assert got == target and target.read_bytes() == b"payload"


def test_existing_file_with_wrong_checksum_is_an_error_naming_both_digests(tmp_path, no_network):
    target = tmp_path / "data.bin"
    target.write_bytes(b"payload")
    wrong = "0" * 32
    with pytest.raises(ChecksumError) as err:
        ensure_file("http://invalid.invalid/data.bin", target, md5=wrong)
    message = str(err.value)
    assert str(target) in message and wrong in message and _md5(b"payload") in message
    assert "delete" in message
    assert target.read_bytes() == b"payload"  # left alone


def test_offline_download_error_names_url_and_target(tmp_path):
    url = "http://127.0.0.1:9/x"  # discard port: connection refused
    target = tmp_path / "sub" / "x.zip"
    with pytest.raises(DownloadError) as err:
        ensure_file(url, target, md5="d41d8cd98f00b204e9800998ecf8427e", timeout=2, retries=0)
    message = str(err.value)
    assert url in message and str(target) in message and "d41d8cd98f00b204e9800998ecf8427e" in message
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no temporary file left behind


def test_a_failed_transfer_is_tried_again_in_process(tmp_path, monkeypatch, caplog):
    # The data rules are not retried by Snakemake (a parse error is deterministic), so a
    # transient network error gets its retry here.
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload")
    real_urlopen = urllib.request.urlopen
    calls = []

    def flaky(url, *args, **kwargs):
        calls.append(url)
        if len(calls) == 1:
            raise OSError("connection reset by peer")
        return real_urlopen(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", flaky)
    target = tmp_path / "out" / "x.bin"
    with caplog.at_level(logging.WARNING, logger="hrq.data.download"):
        assert ensure_file(source.as_uri(), target, md5=_md5(b"payload"), retry_wait=0) == target
    assert len(calls) == 2 and target.read_bytes() == b"payload"
    assert "connection reset by peer" in caplog.text and "try 2 of 3" in caplog.text


def test_download_verifies_published_checksum(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"x" * 3_000_000)  # several 1 MiB chunks
    target = tmp_path / "out" / "copy.bin"
    with pytest.raises(ChecksumError):
        ensure_file(source.as_uri(), target, sha256="f" * 64)
    assert not target.exists() and list(target.parent.iterdir()) == []
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert ensure_file(source.as_uri(), target, sha256=digest) == target
    assert target.read_bytes() == source.read_bytes()
    assert not sidecar_path(target).exists()  # a published checksum needs no sidecar


def test_trust_on_first_use_records_and_then_enforces_sha256(tmp_path, caplog, monkeypatch):
    source = tmp_path / "reviews.json.gz"
    source.write_bytes(b"first version")
    target = tmp_path / "raw" / "reviews.json.gz"
    with caplog.at_level(logging.WARNING, logger="hrq.data.download"):
        ensure_file(source.as_uri(), target)
    assert "no published checksum" in caplog.text
    sidecar = sidecar_path(target)
    assert sidecar.name == "reviews.json.gz.sha256"
    assert sidecar.read_text().split() == [hashlib.sha256(b"first version").hexdigest(), "reviews.json.gz"]

    def urlopen(*args, **kwargs):
        raise AssertionError("network contacted")
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    assert ensure_file(source.as_uri(), target) == target  # verified against the sidecar
    target.write_bytes(b"tampered")
    with pytest.raises(ChecksumError, match="reviews.json.gz.sha256"):
        ensure_file(source.as_uri(), target)


# ---------------------------------------------------------------------------- MovieLens

MOVIES_DAT = (
    "1::Toy Story (1995)::Adventure|Animation|Children|Comedy|Fantasy\n"
    "2::Star Wars: Episode IV - A New Hope (a.k.a. Star Wars) (1977)::Action|Adventure|Sci-Fi\n"
    '3::Movie, "The" : Sequel:::Drama\n'  # commas, quotes, a title ending in ':'; no year
    "4::Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)::(no genres listed)\n"
    "5::Five (1951)::Drama\n"
    "6::Six (1960)::Drama\n"
)


def _ml_zip(path, movies: str = MOVIES_DAT, ratings: str = "") -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MOVIES_MEMBER, movies.encode("utf-8"))
        zf.writestr(RATINGS_MEMBER, ratings.encode("utf-8"))


def _ratings(rows) -> str:
    return "".join(f"{u}::{m}::{r}::{t}\n" for u, m, r, t in rows)


def test_read_movielens_parses_raw_layout(tmp_path):
    path = tmp_path / "ml-10m.zip"
    _ml_zip(path, ratings=_ratings([(7, 2, 5, 900), (7, 1, 3.5, 800), (12, 4, 0.5, 1000)]))
    items, inter = read_movielens(path)
    assert items["raw_id"].tolist() == ["1", "2", "3", "4", "5", "6"]
    assert items["title"].tolist()[1] == "Star Wars: Episode IV - A New Hope (a.k.a. Star Wars) (1977)"
    assert items["title"].tolist()[2] == 'Movie, "The" : Sequel:'
    assert items["year"].tolist()[:4] == [1995, 1977, pd.NA, 2001]
    assert items["genres"].tolist()[0] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert items["genres"].tolist()[2:4] == [["Drama"], []]
    assert items["title"].tolist()[3].startswith("Amélie")
    assert inter["user"].tolist() == ["7", "7", "12"]
    assert inter["raw_item"].tolist() == ["2", "1", "4"]
    assert inter["timestamp"].dtype == np.int64 and inter["timestamp"].tolist() == [900, 800, 1000]


@pytest.mark.parametrize("bad_line", [
    "1::2::4",              # 3 fields
    "1::2::4::5::6",        # 5 fields
    "1::x::4::5",           # non-integer movie id
    "u1::2::4::5",          # non-integer user id
    "1::2::4::",            # empty timestamp
    "1,5::2::4::5",         # a comma would be an extra field to a CSV parser
])
def test_malformed_rating_line_names_member_and_line(tmp_path, bad_line):
    path = tmp_path / "ml-10m.zip"
    good = _ratings([(1, 1, 4, 10), (1, 2, 4, 11)])
    _ml_zip(path, ratings=good + bad_line + "\n" + good)
    with pytest.raises(ValueError) as err:
        read_movielens(path)
    message = str(err.value)
    assert RATINGS_MEMBER in message and "line 3" in message and bad_line in message


def test_malformed_movie_line_names_member_and_line(tmp_path):
    path = tmp_path / "ml-10m.zip"
    _ml_zip(path, movies=MOVIES_DAT + "x7::Seven (1970)::Drama\n")
    with pytest.raises(ValueError, match=rf"{MOVIES_MEMBER}: line 7\b"):
        read_movielens(path)
    _ml_zip(path, movies="1::No genre field\n")
    with pytest.raises(ValueError, match=rf"{MOVIES_MEMBER}: line 1\b"):
        read_movielens(path)


BOM = "\ufeff"


def test_a_byte_order_mark_is_tolerated_in_both_movielens_members(tmp_path):
    path = tmp_path / "ml-10m.zip"
    ratings = _ratings([(7, 2, 5, 900), (7, 1, 3.5, 800)])
    _ml_zip(path, ratings=ratings)
    plain = read_movielens(path)
    for movies, rating_lines in ((BOM + MOVIES_DAT, ratings), (MOVIES_DAT, BOM + ratings),
                                 (BOM + MOVIES_DAT, BOM + ratings)):
        _ml_zip(path, movies=movies, ratings=rating_lines)
        items, inter = read_movielens(path)
        pd.testing.assert_frame_equal(items, plain[0])
        pd.testing.assert_frame_equal(inter, plain[1])
    # A BOM anywhere else is still malformed, and the line is right.
    _ml_zip(path, movies=MOVIES_DAT + BOM + "7::Seven (1970)::Drama\n")
    with pytest.raises(ValueError, match=rf"{MOVIES_MEMBER}: line 7\b"):
        read_movielens(path)
    _ml_zip(path, ratings=BOM + ratings + "x::1::4::5\n")
    with pytest.raises(ValueError, match=rf"{RATINGS_MEMBER}: line 3\b"):
        read_movielens(path)


def test_write_and_generate_movielens_round_trip(tmp_path):
    path = tmp_path / "w.zip"
    movies = pd.DataFrame({"movie_id": [1, 2], "title": ["A (1990)", "B: C (2000)"],
                           "genres": [["Drama", "War"], []]})
    ratings = pd.DataFrame({"user_id": [3, 3], "movie_id": [2, 1], "rating": [5.0, 3.5],
                            "timestamp": [20, 10]})
    write_movielens_zip(path, movies, ratings)
    with zipfile.ZipFile(path) as zf:
        assert zf.read(RATINGS_MEMBER) == b"3::2::5::20\n3::1::3.5::10\n"  # the original's format
        assert zf.read(MOVIES_MEMBER) == b"1::A (1990)::Drama|War\n2::B: C (2000)::(no genres listed)\n"

    gen = generate_movielens(tmp_path / "g.zip", users=50, movies=40, ratings_per_user_range=(3, 12), seed=1)
    items, inter = read_movielens(gen)
    assert len(items) == 40 and items["genres"].map(len).between(1, 3).all()
    per_user = inter.groupby("user").size()
    assert len(per_user) == 50 and per_user.between(3, 12).all()
    assert not inter.duplicated(["user", "raw_item"]).any()
    again = read_movielens(generate_movielens(tmp_path / "h.zip", users=50, movies=40,
                                              ratings_per_user_range=(3, 12), seed=1))[1]
    pd.testing.assert_frame_equal(inter, again)  # deterministic for a seed


# ---------------------------------------------------------------------------- Amazon

META_LINES = [
    # nested categories with a repeat, a description with quotes and commas, price, brand
    "{'asin': 'B001', 'title': 'Lip Balm &amp; Scrub', 'price': 7.5, 'brand': 'Acme', "
    "'categories': [['Beauty', 'Skin Care', 'Lips'], ['Beauty', 'Makeup']], "
    "'description': 'Soft, \"smooth\"   lips,\\nall day', 'salesRank': {'Beauty': 123}, "
    "'imUrl': 'http://x/y.jpg', 'related': {'also_bought': ['B002', 'B999']}}",
    # no title
    "{'asin': 'B002', 'categories': [['Beauty']], 'description': \"It's great, really\"}",
    # a product no review mentions: skipped (and never parsed)
    "{'asin': 'B999', 'title': 'Unreviewed', this is not a literal}",
]


def _review(user, asin, t, **extra):
    return json.dumps({"reviewerID": user, "asin": asin, "unixReviewTime": t, "overall": 5.0,
                       "reviewText": "ok", **extra})


def _amazon_files(tmp_path, reviews, meta=META_LINES):
    rp, mp = tmp_path / "reviews_Beauty_5.json.gz", tmp_path / "meta_Beauty.json.gz"
    with gzip.open(rp, "wt", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in reviews))
    with gzip.open(mp, "wt", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in meta))
    return rp, mp


def test_read_amazon_items_and_interactions(tmp_path, caplog):
    reviews = [_review("U1", "B002", 200), _review("U1", "B001", 100), _review("U2", "B003", 100)]
    rp, mp = _amazon_files(tmp_path, reviews)
    with caplog.at_level(logging.WARNING, logger="hrq.data.amazon"):
        items, inter = read_amazon(rp, mp)
    assert inter.to_dict("list") == {"user": ["U1", "U1", "U2"], "raw_item": ["B002", "B001", "B003"],
                                     "timestamp": [200, 100, 100]}
    assert items["raw_id"].tolist() == ["B001", "B002", "B003"]  # B999 (not reviewed) dropped
    b1, b2, b3 = items.to_dict("records")
    assert b1["title"] == "Lip Balm & Scrub" and b1["brand"] == "Acme" and b1["price"] == 7.5
    assert b1["categories"] == ["Beauty", "Skin Care", "Lips", "Makeup"]
    assert b1["text"] == ("Title: Lip Balm & Scrub\nBrand: Acme\nCategories: Beauty, Skin Care, Lips, Makeup\n"
                          'Price: 7.50\nDescription: Soft, "smooth" lips, all day')
    assert pd.isna(b2["title"]) and np.isnan(b2["price"])
    assert b2["text"] == "Categories: Beauty\nDescription: It's great, really"
    assert b3["text"] == "Item B003" and b3["categories"] == []  # no meta at all
    assert "1 of 3 reviewed items have no metadata" in caplog.text


def test_item_text_is_deterministic_and_never_empty():
    meta = {"asin": "A", "categories": [["X", "Y"], ["Y", "Z"]], "title": " T  1 "}
    assert item_text(meta) == item_text(dict(reversed(list(meta.items())))) == "Title: T 1\nCategories: X, Y, Z"
    assert item_text({"asin": "A9"}) == "Item A9"


def test_malformed_review_line_names_file_and_line(tmp_path):
    rp, mp = _amazon_files(tmp_path, [_review("U1", "B001", 1), '{"reviewerID": "U2", "asin": "B001"',
                                      _review("U3", "B001", 3)])
    with pytest.raises(ValueError, match=r"reviews_Beauty_5\.json\.gz: line 2\b"):
        read_amazon(rp, mp)
    rp, mp = _amazon_files(tmp_path, [_review("U1", "B001", 1), json.dumps({"reviewerID": "U2", "asin": "B001"})])
    with pytest.raises(ValueError, match=r"line 2\b.*unixReviewTime"):
        read_amazon(rp, mp)


def test_malformed_meta_line_names_file_and_line(tmp_path):
    bad = "{'asin': 'B001', 'title': 'Broken', 'price': __import__('os')}"  # not a literal: never run
    rp, mp = _amazon_files(tmp_path, [_review("U1", "B001", 1)], meta=[META_LINES[1], bad])
    with pytest.raises(ValueError, match=r"meta_Beauty\.json\.gz: line 2\b"):
        read_amazon(rp, mp)


def _many_reviews(n):
    # Random text so that the gzip stream is long and truncating it leaves whole lines before the cut.
    rng = np.random.default_rng(0)
    return [_review(f"U{i}", "B001", i, reviewText="".join(rng.choice(list("abcdefghij "), 200)))
            for i in range(n)]


def test_truncated_amazon_gzip_names_file_and_line(tmp_path):
    rp, mp = _amazon_files(tmp_path, _many_reviews(2000))
    data = rp.read_bytes()
    rp.write_bytes(data[: len(data) // 2])
    readable = 0
    with pytest.raises(EOFError), gzip.open(rp, "rb") as f:
        for _ in f:
            readable += 1
    assert 0 < readable < 2000
    with pytest.raises(ValueError) as err:
        read_amazon(rp, mp)
    message = str(err.value)
    assert message.startswith(f"{rp}: truncated gzip file: the compressed data ends after line {readable} ")
    assert "fetch it again" in message
    # the metadata file too
    rp, mp = _amazon_files(tmp_path, [_review("U1", "B001", 1)], meta=META_LINES * 3000)
    data = mp.read_bytes()
    mp.write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match=rf"^{mp}: truncated gzip file: the compressed data ends after line \d+ "):
        read_amazon(rp, mp)


def test_a_non_gzip_amazon_file_is_named(tmp_path):
    rp, mp = _amazon_files(tmp_path, [_review("U1", "B001", 1)])
    rp.write_text(_review("U1", "B001", 1) + "\n")  # the JSON itself, not gzipped
    with pytest.raises(ValueError, match=rf"^{rp}: not a gzip file \(Not a gzipped file"):
        read_amazon(rp, mp)
    rp, mp = _amazon_files(tmp_path, [_review("U1", "B001", 1)])
    mp.write_bytes(b"<html>404</html>")  # e.g. an error page saved under the file's name
    with pytest.raises(ValueError, match=rf"^{mp}: not a gzip file"):
        read_amazon(rp, mp)


@pytest.mark.parametrize("key", ["reviewerID", "asin"])
@pytest.mark.parametrize("value", [None, "", 17])
def test_a_null_review_id_is_rejected_with_file_and_line(tmp_path, key, value):
    bad = json.loads(_review("U2", "B001", 2))
    bad[key] = value
    rp, mp = _amazon_files(tmp_path, [_review("U1", "B001", 1), json.dumps(bad)])
    with pytest.raises(ValueError) as err:
        read_amazon(rp, mp)
    assert str(err.value).startswith(f"{rp}: line 2: not a review JSON object with reviewerID, asin and "
                                     f"unixReviewTime ({key} is {value!r}, not a non-empty string)")


def test_a_byte_order_mark_is_tolerated_in_amazon_files(tmp_path):
    reviews = [_review("U1", "B001", 1), _review("U2", "B002", 2)]
    rp, mp = _amazon_files(tmp_path, reviews)
    plain = read_amazon(rp, mp)
    rp, mp = _amazon_files(tmp_path, [BOM + reviews[0], reviews[1]], meta=[BOM + META_LINES[0], *META_LINES[1:]])
    items, inter = read_amazon(rp, mp)
    pd.testing.assert_frame_equal(inter, plain[1])
    pd.testing.assert_frame_equal(items, plain[0])


def test_json_lines_reader_names_a_truncated_gzip(tmp_path):
    # Amazon 2018 metadata and Yelp businesses go through first_json_records.
    from hrq.data.amazon import first_json_records

    path = tmp_path / "meta_Musical_Instruments.json.gz"
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps({"asin": f"A{i}", "title": "x" * (i % 97)}) + "\n" for i in range(20000))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"^{path}: truncated gzip file: the compressed data ends after line [1-9]\d* "):
        first_json_records(path, "asin", {"A1"}, gzipped=True)


# ---------------------------------------------------------------------------- sequences


def _frames(rows):
    inter = pd.DataFrame(rows, columns=["user", "raw_item", "timestamp"]).astype(
        {"user": "str", "raw_item": "str", "timestamp": "int64"})
    raw_ids = sorted(set(inter["raw_item"]))
    items = pd.DataFrame({"raw_id": raw_ids, "title": [f"title {r}" for r in raw_ids]})
    return inter, items


def test_sequences_time_order_ties_filter_truncate_reindex():
    rows = []
    # user "b": 6 interactions, file order scrambled; items i3/i1 share t=20 (file order i3, i1)
    rows += [("b", "i5", 50), ("b", "i3", 20), ("b", "i9", 10), ("b", "i1", 20), ("b", "i2", 40), ("b", "i4", 30)]
    # user "a": 4 interactions -> dropped (< 5); its item i8 must not appear
    rows += [("a", "i8", t) for t in range(4)]
    # user "c": 25 interactions, in reverse time order in the file -> last 20 kept
    rows += [("c", f"j{k:02d}", 1000 - k) for k in range(25)]
    inter, items = _frames(rows)
    items_out, seqs, stats = sequences_from_interactions(inter, items, min_length=5, max_length=20)

    assert seqs["user_id"].tolist() == ["b", "c"]
    raw = items_out["raw_id"].to_numpy()
    assert list(items_out["item_id"]) == list(range(len(items_out)))
    assert raw.tolist() == sorted(raw.tolist()) and "i8" not in raw
    assert items_out["title"].tolist() == [f"title {r}" for r in raw]  # metadata kept, aligned
    b, c = (raw[s].tolist() for s in seqs["items"])
    assert b == ["i9", "i3", "i1", "i4", "i2", "i5"]  # tie at t=20 keeps file order
    assert c == [f"j{k:02d}" for k in range(19, -1, -1)]  # the 20 most recent, oldest first
    # j20..j24 are cut from c's history but stay items of the catalogue (never a target)
    assert {j for j in raw if j.startswith("j")} == {f"j{k:02d}" for k in range(25)}
    assert all(s.dtype == np.int64 for s in seqs["items"])
    assert stats == {"users": 2, "items": 31, "interactions": 26, "users_raw": 3, "interactions_raw": 35}
    # same lists as the protocol's filter on the time-ordered histories
    assert [list(s) for s in seqs["items"]] == filter_and_truncate(list(seqs["items"]), 5, 20)


def test_sequences_many_ties_keep_file_order():
    # Enough rows that an unstable sort would reorder them (small inputs sort stably anyway).
    rng = np.random.default_rng(0)
    n = 300
    users = rng.choice(["u", "w"], size=n)
    times = rng.integers(0, 3, size=n)
    inter, items = _frames([(u, f"r{k:03d}", t) for k, (u, t) in enumerate(zip(users, times))])
    items_out, seqs, _ = sequences_from_interactions(inter, items, min_length=5, max_length=n)
    raw = items_out["raw_id"].to_numpy()
    for user, seq in zip(seqs["user_id"], seqs["items"]):
        expected = [f"r{k:03d}" for t in range(3) for k in range(n) if users[k] == user and times[k] == t]
        assert raw[seq].tolist() == expected


def test_sequences_ties_survive_huge_timestamp_spans():
    # A span this wide overflows the fast combined sort key; the fallback must also be stable.
    rows = [("u", "x", 2**62), ("u", "y", -(2**62)), ("u", "z", 0), ("u", "w", 0), ("u", "v", 0),
            ("v", "x", 1)]
    inter, items = _frames(rows)
    items_out, seqs, _ = sequences_from_interactions(inter, items, min_length=5)
    raw = items_out["raw_id"].to_numpy()
    assert raw[seqs["items"][0]].tolist() == ["y", "z", "w", "v", "x"]


def test_sequences_missing_item_rows_are_an_error():
    inter, items = _frames([("u", f"i{k}", k) for k in range(5)])
    with pytest.raises(ValueError, match="1 interacted items have no row"):
        sequences_from_interactions(inter, items[items["raw_id"] != "i2"])


def test_sequences_from_movielens_zip_end_to_end(tmp_path):
    path = tmp_path / "ml.zip"
    rows = [(1, m, 4, 100 + m) for m in (1, 2, 3, 4, 5)] + [(2, 6, 4, 1), (2, 1, 4, 2)]
    _ml_zip(path, ratings=_ratings(rows))
    items, inter = read_movielens(path)
    items_out, seqs, stats = sequences_from_interactions(inter, items)
    assert seqs["user_id"].tolist() == ["1"] and seqs["items"][0].tolist() == [0, 1, 2, 3, 4]
    assert items_out["raw_id"].tolist() == ["1", "2", "3", "4", "5"]
    assert items_out.columns.tolist() == ["item_id", "raw_id", "title", "year", "genres"]
    assert stats["users_raw"] == 2 and stats["interactions"] == 5
