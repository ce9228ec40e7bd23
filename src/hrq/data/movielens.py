"""MovieLens-10M (``ml-10m.zip`` from GroupLens): reader, writer and a synthetic generator.

The zip holds ``ml-10M100K/movies.dat`` (``MovieID::Title::Genres``, genres ``|``-separated,
titles like ``Toy Story (1995)``) and ``ml-10M100K/ratings.dat``
(``UserID::MovieID::Rating::Timestamp``, ratings in half stars), UTF-8. The reader reads the
members straight from the zip. ``ratings.dat`` has 10 M lines, so it goes through pyarrow's
C++ CSV parser (``::`` turned into ``,`` first); per-line Python runs only to locate the line
that made the fast parser fail. :func:`write_movielens_zip` writes the same layout (tests,
benchmarks) and :func:`generate_movielens` makes a synthetic dataset in it.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from hrq.data.download import ensure_file
from hrq.io import atomic_output

__all__ = [
    "GENRES",
    "ML10M_MD5",
    "ML10M_URL",
    "MOVIES_MEMBER",
    "RATINGS_MEMBER",
    "fetch_movielens",
    "generate_movielens",
    "read_movielens",
    "write_movielens_zip",
]

ML10M_URL = "https://files.grouplens.org/datasets/movielens/ml-10m.zip"
ML10M_MD5 = "ce571fd55effeba0271552578f2648bd"
MOVIES_MEMBER = "ml-10M100K/movies.dat"
RATINGS_MEMBER = "ml-10M100K/ratings.dat"
NO_GENRES = "(no genres listed)"
# The genres that occur in ML-10M's movies.dat.
GENRES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)

_YEAR_RE = re.compile(r"\((\d{4})\)\s*$")
# What a well-formed ratings line looks like; used only to find the line a fast parse rejected.
_RATING_LINE_RE = re.compile(rb"\d+::\d+::\d+(?:\.\d+)?::\d+\r?")
_RATING_COLUMNS = ["user", "item", "rating", "timestamp"]
# Ids stay strings (they are raw ids, and casting 10 M ints back to strings is slower than a
# digit check); "" is no null marker, so an empty id fails that check.
_RATING_TYPES = {"user": pa.string(), "item": pa.string(), "rating": pa.float64(), "timestamp": pa.int64()}


def fetch_movielens(directory: str | Path) -> Path:
    """``<directory>/ml-10m.zip``, downloaded and md5-verified if needed (see :func:`ensure_file`)."""
    return ensure_file(ML10M_URL, Path(directory) / "ml-10m.zip", md5=ML10M_MD5)


def _read_member(zf: zipfile.ZipFile, zip_path: Path, member: str) -> bytes:
    try:
        return zf.read(member)
    except KeyError:
        raise ValueError(f"{zip_path} has no member {member!r} (members: {zf.namelist()[:10]}); "
                         "is it MovieLens-10M's ml-10m.zip?") from None


_BOM = b"\xef\xbb\xbf"


def _parse_movies(data: bytes, where: str) -> pd.DataFrame:
    raw_ids, titles, years, genres = [], [], [], []
    seen: dict[str, int] = {}
    # A UTF-8 byte order mark at the start is no part of the first MovieID (as in ratings.dat,
    # whose CSV parser drops it).
    data = data[len(_BOM):] if data.startswith(_BOM) else data
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{where}: line {lineno}: not UTF-8 ({exc})") from None
        if not line:
            continue
        # Split the id off the left and the genres off the right: titles may contain ':'
        # (even end with one, "Foo:::Drama"), genres never do.
        movie_id, sep, rest = line.partition("::")
        title, sep2, genre_field = rest.rpartition("::")
        if not (sep and sep2) or not movie_id.isdigit() or not title:
            raise ValueError(f"{where}: line {lineno}: expected MovieID::Title::Genres with an integer "
                             f"MovieID, got {line!r}")
        if movie_id in seen:
            raise ValueError(f"{where}: line {lineno}: MovieID {movie_id} repeats line {seen[movie_id]}")
        seen[movie_id] = lineno
        year = _YEAR_RE.search(title)
        raw_ids.append(movie_id)
        titles.append(title)
        years.append(int(year.group(1)) if year else None)
        genres.append([] if genre_field in ("", NO_GENRES) else genre_field.split("|"))
    return pd.DataFrame({
        "raw_id": pd.Series(raw_ids, dtype="str"),
        "title": pd.Series(titles, dtype="str"),
        "year": pd.array(years, dtype="Int64"),
        "genres": pd.Series(genres, dtype="object"),
    })


def _first_bad_rating_line(data: bytes) -> tuple[int, bytes] | None:
    for lineno, line in enumerate(data.split(b"\n"), start=1):
        if line not in (b"", b"\r") and not _RATING_LINE_RE.fullmatch(line):
            return lineno, line
    return None


def _parse_ratings(data: bytes, where: str) -> pd.DataFrame:
    data = data[len(_BOM):] if data.startswith(_BOM) else data  # tolerated, as in movies.dat
    def malformed(detail: str) -> ValueError:
        bad = _first_bad_rating_line(data)
        if bad is None:
            return ValueError(f"{where}: malformed ratings ({detail})")
        lineno, line = bad
        return ValueError(f"{where}: line {lineno}: expected UserID::MovieID::Rating::Timestamp with "
                          f"integer ids and timestamp, got {line.decode('utf-8', 'replace')!r} ({detail})")

    # ',' is the separator the fast parser sees; one already in the data would silently add a field.
    if b"," in data:
        raise malformed("',' in the data")
    try:
        table = pacsv.read_csv(
            io.BytesIO(data.replace(b"::", b",")),
            read_options=pacsv.ReadOptions(column_names=_RATING_COLUMNS),
            parse_options=pacsv.ParseOptions(quote_char=False),
            convert_options=pacsv.ConvertOptions(column_types=_RATING_TYPES),
        )
    except pa.ArrowInvalid as exc:
        raise malformed(str(exc)) from None
    # Empty or "NA" numbers parse as nulls and "nan" as NaN instead of failing.
    if (table["rating"].null_count or table["timestamp"].null_count
            or pc.any(pc.is_nan(table["rating"]), min_count=0).as_py()):
        raise malformed("missing values")
    for column in ("user", "item"):
        if not pc.all(pc.ascii_is_decimal(table[column]), min_count=0).as_py():
            raise malformed(f"non-integer {column} id")
    return pa.table({"user": table["user"], "raw_item": table["item"], "timestamp": table["timestamp"]}).to_pandas()


def read_movielens(zip_path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read MovieLens-10M from its zip.

    Returns:
        items: one row per line of movies.dat, in file order; columns ``raw_id`` (str MovieID),
            ``title`` (str, as in the file, year included), ``year`` (Int64, ``<NA>`` if the
            title has no "(YYYY)"), ``genres`` (list[str]; ``[]`` for "(no genres listed)").
        interactions: one row per line of ratings.dat, in file order; columns ``user`` (str
            UserID), ``raw_item`` (str MovieID), ``timestamp`` (int64 Unix seconds). Every rating
            counts as an interaction; the rating value is not kept.

    Raises:
        ValueError: a member is missing, or a line is malformed (the message names the zip
            member and the 1-based line number).
    """
    zip_path = Path(zip_path)
    with zipfile.ZipFile(zip_path) as zf:
        movies = _read_member(zf, zip_path, MOVIES_MEMBER)
        ratings = _read_member(zf, zip_path, RATINGS_MEMBER)
    items = _parse_movies(movies, f"{zip_path}:{MOVIES_MEMBER}")
    interactions = _parse_ratings(ratings, f"{zip_path}:{RATINGS_MEMBER}")
    return items, interactions


def write_movielens_zip(path: str | Path, movies: pd.DataFrame, ratings: pd.DataFrame) -> Path:
    """Write ``movies`` and ``ratings`` as an ml-10m.zip (same members and line formats), atomically.

    Args:
        movies: columns ``movie_id`` (int), ``title`` (str), ``genres`` (list[str] or a
            ``|``-joined str; empty means "(no genres listed)").
        ratings: columns ``user_id``, ``movie_id``, ``timestamp`` (ints) and ``rating``
            (float; whole stars are written without a decimal, like the original: ``5``, ``3.5``).
    """
    genres = [g if isinstance(g, str) else "|".join(g) for g in movies["genres"]]
    movie_lines = "".join(f"{int(m)}::{t}::{g or NO_GENRES}\n"
                          for m, t, g in zip(movies["movie_id"], movies["title"], genres))
    table = pa.table({
        "user": pa.array(ratings["user_id"].to_numpy(np.int64)),
        "item": pa.array(ratings["movie_id"].to_numpy(np.int64)),
        "rating": pa.array(ratings["rating"].to_numpy(np.float64)),
        "timestamp": pa.array(ratings["timestamp"].to_numpy(np.int64)),
    })
    # pyarrow's C++ CSV writer is the fast way to format 10 M lines; it takes a one-byte
    # delimiter only, so write tabs (no field contains one) and turn them into '::'.
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none"))
    path = Path(path)
    with atomic_output(path) as tmp:
        # compresslevel 1: several times faster than the default on 250 MB and only a bit larger.
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            zf.writestr(MOVIES_MEMBER, movie_lines.encode("utf-8"))
            zf.writestr(RATINGS_MEMBER, buf.getvalue().replace(b"\t", b"::"))
    return path


def generate_movielens(path: str | Path, users: int = 1000, movies: int = 500,
                       ratings_per_user_range: tuple[int, int] = (5, 60), seed: int = 0) -> Path:
    """Write a synthetic MovieLens-10M-format zip to ``path`` (vectorised; 10 M ratings in seconds).

    Movies ``1..movies`` are titled "Movie <id> (<year>)" with one to three genres from
    :data:`GENRES`. Each user has one or two favourite genres: 70 % of their ratings fall on
    movies of those genres, which also get higher ratings, so the data has structure a
    recommender can learn. Within a genre, low movie ids are more popular. Each user rates
    ``ratings_per_user_range[0]..[1]`` (inclusive) distinct movies (fewer only if the user's
    draws hit too few distinct movies, e.g. with a tiny catalogue) at increasing timestamps
    with some ties; ratings.dat is sorted by user, then movie id, like the original.
    """
    lo, hi = ratings_per_user_range
    if not 1 <= lo <= hi:
        raise ValueError(f"ratings_per_user_range must satisfy 1 <= low <= high, got {ratings_per_user_range}")
    rng = np.random.default_rng(seed)
    n_genres = len(GENRES)

    # Movies: a random non-empty genre set each, encoded as a boolean matrix.
    movie_ids = np.arange(1, movies + 1)
    years = rng.integers(1920, 2009, size=movies)
    k = rng.integers(1, 4, size=movies)
    has_genre = np.argsort(rng.random((movies, n_genres)), axis=1) < k[:, None]
    genre_names = np.array(GENRES, dtype=object)
    movie_table = pd.DataFrame({
        "movie_id": movie_ids,
        "title": [f"Movie {m} ({y})" for m, y in zip(movie_ids, years)],
        "genres": [list(genre_names[row]) for row in has_genre],
    })
    # Per genre, its movies in id order (the pools favourite-genre draws pick from).
    pool_genre, pool_movie = np.nonzero(has_genre.T)
    pool_start = np.searchsorted(pool_genre, np.arange(n_genres))
    pool_size = np.bincount(pool_genre, minlength=n_genres)

    # Users: one or two favourite genres, among those that have movies.
    nonempty = np.flatnonzero(pool_size)
    fav = rng.choice(nonempty, size=(users, 2))
    fav[:, 1] = np.where(rng.random(users) < 0.5, fav[:, 0], fav[:, 1])
    n_user = rng.integers(lo, hi + 1, size=users)

    # Oversample, drop repeated (user, movie) pairs, keep each user's first n_user draws.
    n_draw = n_user + n_user // 2 + 5
    user = np.repeat(np.arange(users), n_draw)
    g = fav[user, rng.integers(0, 2, size=user.size)]
    # u**2 skews towards the start of the pool: low ids are the popular movies.
    in_pool = (rng.random(user.size) ** 2 * pool_size[g]).astype(np.int64)
    favourite = rng.random(user.size) < 0.7
    movie = np.where(favourite, pool_movie[pool_start[g] + in_pool],
                     (rng.random(user.size) ** 2 * movies).astype(np.int64))
    _, first = np.unique(user * movies + movie, return_index=True)
    first.sort()
    user, movie, favourite = user[first], movie[first], favourite[first]
    starts = np.searchsorted(user, np.arange(users))
    rank = np.arange(user.size) - starts[user]
    keep = rank < n_user[user]
    user, movie, favourite = user[keep], movie[keep], favourite[keep]

    # Time: a start per user in 2000..2008, then exponential gaps (a tenth of them 0: ties).
    gaps = np.rint(rng.exponential(86400.0, size=user.size)) * (rng.random(user.size) >= 0.1)
    t0 = rng.integers(946684800, 1230768000, size=users)
    cum = np.cumsum(gaps)
    starts = np.searchsorted(user, np.arange(users))
    first_cum = cum[starts] - gaps[starts]  # every user keeps at least their first draw
    timestamp = t0[user] + (cum - first_cum[user]).astype(np.int64)
    stars = np.where(favourite, 4.0, 3.0) + rng.normal(0.0, 0.8, size=user.size)
    rating = np.clip(np.rint(stars * 2) / 2, 0.5, 5.0)

    order = np.lexsort((movie, user))
    ratings = pd.DataFrame({
        "user_id": user[order] + 1,
        "movie_id": movie[order] + 1,
        "rating": rating[order],
        "timestamp": timestamp[order],
    })
    return write_movielens_zip(path, movie_table, ratings)
