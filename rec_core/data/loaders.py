"""Loaders that map public datasets into the users / items / interactions schema.

- MovieLens, both public layouts: the CSV layout (`ratings.csv`, `movies.csv`, optional
  `tags.csv`; ml-latest, ml-25m, ...) and the 100K layout (`u.data`, `u.item`, `u.user`).
- The Amazon sales CSV layout (prices such as `₹1,099`, percentages such as `64%`,
  comma-joined user and review ids per product row).
- The Amazon review JSON-lines layouts, 2014/2018 and 2023, with optional metadata
  (`rec_core.data.amazon_reviews`, which reuses the rating mapping below).

Every loader returns tables already validated with `conform`, so a bad file fails here, with
the file and column named, before anything is written.

`load_dataset(path, format)` picks the loader by name from a registry. Another format plugs in
without editing this package: `register_source_format(name, loader, detect)` in the process that
loads (a Dagster code location imports the module that calls it), or an installed package's
entry point in the `rec_core.source_formats` group.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rec_core.data.paths import exported_table_file, table_file
from rec_core.data.validation import DataValidationError, check_references, conform

log = logging.getLogger(__name__)

ML_100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)


SourceLoader = Callable[[Path], tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]]
"""Reads a dataset path into (users, items, interactions) DataFrames in the schemas of `rec_core.data.schema`."""

ENTRY_POINT_GROUP = "rec_core.source_formats"
"""Installed packages add formats here: `[project.entry-points."rec_core.source_formats"] NAME = "pkg.module:loader"`."""


@dataclass(frozen=True)
class SourceFormat:
    load: SourceLoader
    detect: Callable[[Path], bool] | None = None  # True when a path is in this format (for `auto`)
    validated: bool = False  # the loader conforms its tables itself (the built-in ones); else `load_dataset` does


SOURCE_FORMATS: dict[str, SourceFormat] = {}
"""Every format by name (the built-in ones are added at the end of this module); add one with `register_source_format`."""


def register_source_format(name: str, loader: SourceLoader, detect: Callable[[Path], bool] | None = None) -> None:
    """Makes `name` a dataset format: `load_dataset(path, name)`, the `source_tables` asset's `format` config and
    `python -m rec_core.bench quality --dataset name:PATH` then read such paths with `loader`.

    With `detect`, `format="auto"` recognises the format too (before the built-in ones). The tables a
    loader returns are conformed and cross-checked by `load_dataset`, errors naming the path.
    Registering a name again replaces its loader.
    """
    if not name or name == "auto" or ":" in name:
        raise ValueError(f"invalid dataset format name {name!r}: non-empty, not 'auto', no ':'")
    SOURCE_FORMATS[name] = SourceFormat(loader, detect)


def source_formats() -> tuple[str, ...]:
    """Every dataset format `load_dataset` reads: the built-in ones, registered ones and installed plugins'."""
    _load_entry_points()
    return tuple(SOURCE_FORMATS)


def load_dataset(path: str | Path, fmt: str = "auto") -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Loads `path` in format `fmt`: `movielens`, `amazon` (sales CSV), `amazon-reviews` (JSON lines), `parquet` (a
    folder of our own tables), a registered format, or `auto` (detected from the path)."""
    path = Path(path)
    fmt = _detect_format(path) if fmt == "auto" else fmt
    if fmt not in SOURCE_FORMATS:
        _load_entry_points()
    if fmt not in SOURCE_FORMATS:
        raise ValueError(f"unknown dataset format '{fmt}': use auto, {', '.join(SOURCE_FORMATS)}")
    source = SOURCE_FORMATS[fmt]
    log.info("reading %s as %s", path, fmt)
    tables = source.load(path)
    return tables if source.validated else validated_tables(*tables, path)


def _detect_format(path: Path) -> str:
    # the latest registration first: a user's detector is more specific than the built-in ones (any JSON lines file
    # could be Amazon reviews)
    found = next(
        (
            name
            for name, source in reversed(SOURCE_FORMATS.items())
            if source.detect is not None and source.detect(path)
        ),
        None,
    )
    if found is None:
        raise DataValidationError(
            str(path),
            None,
            0,
            "not a MovieLens folder, an Amazon CSV, Amazon review JSON lines, "
            "a folder of parquet tables or a registered format",
        )
    return found


def _load_entry_points() -> None:
    """Registers the formats installed packages declare (once per name; a registered name wins)."""
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name not in SOURCE_FORMATS:
            register_source_format(entry.name, entry.load())


def _read_csv(path: Path, **kwargs) -> pd.DataFrame:
    if not path.exists():
        raise DataValidationError(str(path), None, 0, "file not found")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataValidationError(str(path), None, 0, "the file is empty")
    encoding = kwargs.pop("encoding", "utf-8")
    if encoding == "utf-8":
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            bad = sum(1 for line in raw.split(b"\n") if not _is_utf8(line))
            raise DataValidationError(str(path), None, bad, "bytes that are not valid UTF-8") from None
    try:
        return pd.read_csv(path, encoding=encoding, **kwargs)
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataValidationError(str(path), None, 0, f"cannot be parsed: {exc}") from exc


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _require_columns(frame: pd.DataFrame, columns: list[str], source: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataValidationError(str(source), missing[0], len(frame), f"missing column(s) {missing}")


def numeric_column(frame: pd.DataFrame, column: str, source: Path) -> pd.Series:
    """`frame[column]` as numbers, or an error counting the values that are not."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = int(values.isna().sum())
    if bad:
        raise DataValidationError(str(source), column, bad, "values that are not numbers")
    return values


def _movie_year(titles: pd.Series) -> pd.Series:
    return pd.to_numeric(titles.str.extract(r"\((\d{4})\)\s*$")[0], errors="coerce")


def _movie_items(
    ids: pd.Series, titles: pd.Series, genres: list[list[str]], arrival: pd.Series, extra_text: pd.Series | None = None
) -> pd.DataFrame:
    genre_text = [", ".join(g) if g else "no genre listed" for g in genres]
    about = [f"{t}. Genres: {g}." for t, g in zip(titles, genre_text)]
    if extra_text is not None:
        about = [f"{a} Tags: {x}." if isinstance(x, str) and x else a for a, x in zip(about, extra_text)]
    return pd.DataFrame(
        {
            "item_id": ids.astype(str).to_numpy(),
            "product_name": titles.to_numpy(),
            "category": ["Movies|" + "|".join(g[:2]) if g else "Movies|Unknown" for g in genres],
            "actual_price": 0.0,
            "discounted_price": 0.0,
            "discount_percentage": 0.0,
            "rating": np.nan,  # no catalog rating: averaging the ratings would leak the test split
            "rating_count": 0,
            "about_product": about,
            "arrival_date": arrival.to_numpy(),
            "img_link": None,
        }
    )


def rating_interactions(
    user: pd.Series, item: pd.Series, rating: pd.Series, seconds: pd.Series, negative_below: float | None
) -> pd.DataFrame:
    """One interaction per rating (ids r0, r1, ...): `rate` with its stars, `negative_view` under `negative_below`.

    Every loader of rated reviews maps stars through here, so all datasets mean the same by a type.
    """
    kind = np.full(len(rating), "rate", dtype=object)
    if negative_below is not None:
        kind[rating.to_numpy() < negative_below] = "negative_view"
    return pd.DataFrame(
        {
            "interaction_id": [f"r{i}" for i in range(len(rating))],
            "user_id": user.astype(str).to_numpy(),
            "item_id": item.astype(str).to_numpy(),
            "timestamp": pd.to_datetime(seconds.astype(np.int64), unit="s", utc=True),
            "interaction_type": kind,
            "rating": rating.astype(float).to_numpy(),
            "quantity": None,
            "review_title": None,
            "review_content": None,
        }
    )


def users_from_interactions(interactions: pd.DataFrame, demographics: pd.DataFrame | None = None) -> pd.DataFrame:
    """The users an interaction table names, signed up at their first interaction; no preferences; age and
    gender unknown unless `demographics` (user_id, age, gender) says."""
    first = interactions.groupby("user_id", sort=True)["timestamp"].min()
    users = pd.DataFrame(
        {
            "user_id": first.index.to_numpy(),
            "signup_date": first.to_numpy(),
            "preferences": "",
            "age": pd.array([pd.NA] * len(first), dtype="Int32"),
            "gender": None,
        }
    )
    if demographics is not None:
        users = users.drop(columns=["age", "gender"]).merge(demographics, on="user_id", how="left")
    return users


def load_movielens(path: str | Path, negative_below: float | None = None):
    """Loads a MovieLens folder in either public layout.

    Every rating becomes a `rate` interaction carrying its stars (the usual implicit-feedback
    protocol); with `negative_below`, ratings under it become `negative_view` instead.
    MovieLens has no stated preferences, so `preferences` is empty; demographics come from
    `u.user` in the 100K layout.
    """
    path = Path(path)
    if (path / "ratings.csv").exists():
        return _load_movielens_csv(path, negative_below)
    if (path / "u.data").exists():
        return _load_movielens_100k(path, negative_below)
    raise DataValidationError(str(path), None, 0, "no ratings.csv (CSV layout) or u.data (100K layout) found")


def _movielens_interactions(
    ratings: pd.DataFrame, user_column: str, item_column: str, negative_below: float | None
) -> pd.DataFrame:
    """`rating_interactions` of a MovieLens ratings table; the releases name their id columns differently."""
    return rating_interactions(
        ratings[user_column].astype(int),
        ratings[item_column].astype(int),
        ratings["rating"],
        ratings["timestamp"],
        negative_below,
    )


def _load_movielens_csv(path: Path, negative_below: float | None):
    ratings_path, movies_path = path / "ratings.csv", path / "movies.csv"
    ratings = _read_csv(ratings_path)
    _require_columns(ratings, ["userId", "movieId", "rating", "timestamp"], ratings_path)
    movies = _read_csv(movies_path)
    _require_columns(movies, ["movieId", "title", "genres"], movies_path)
    for column in ("userId", "movieId", "rating", "timestamp"):
        ratings[column] = numeric_column(ratings, column, ratings_path)
    movies["movieId"] = numeric_column(movies, "movieId", movies_path)
    tags = None
    if (path / "tags.csv").exists():
        raw_tags = _read_csv(path / "tags.csv")
        if {"movieId", "tag"} <= set(raw_tags.columns):
            tags = (
                raw_tags.dropna(subset=["tag"])
                .groupby("movieId")["tag"]
                .agg(lambda s: ", ".join(dict.fromkeys(s.astype(str).str.strip().str.lower())))
            )
    genres = [[] if g == "(no genres listed)" else g.split("|") for g in movies["genres"].fillna("").astype(str)]
    first_seen = pd.Timestamp(int(ratings["timestamp"].min()), unit="s", tz="UTC")
    year = _movie_year(movies["title"].astype(str))
    arrival = pd.to_datetime(year.fillna(first_seen.year).astype(int).astype(str) + "-01-01", utc=True)
    extra = movies["movieId"].map(tags) if tags is not None else None
    items = _movie_items(movies["movieId"].astype(int), movies["title"].astype(str), genres, arrival, extra)
    interactions = _movielens_interactions(ratings, "userId", "movieId", negative_below)
    users = users_from_interactions(interactions)
    return validated_tables(users, items, interactions, ratings_path)


def _load_movielens_100k(path: Path, negative_below: float | None):
    data_path, item_path, user_path = path / "u.data", path / "u.item", path / "u.user"
    ratings = _read_csv(data_path, sep="\t", header=None, names=["user", "item", "rating", "timestamp"])
    for column in ("user", "item", "rating", "timestamp"):
        ratings[column] = numeric_column(ratings, column, data_path)
    movies = _read_csv(
        item_path,
        sep="|",
        header=None,
        encoding="latin-1",
        names=["item", "title", "release", "video_release", "url", *ML_100K_GENRES],
    )
    flags = movies[list(ML_100K_GENRES)].fillna(0).astype(int).to_numpy()
    genres = [[g for g, f in zip(ML_100K_GENRES, row) if f and g != "unknown"] for row in flags]
    release = pd.to_datetime(movies["release"], format="%d-%b-%Y", errors="coerce", utc=True)
    first_seen = pd.Timestamp(int(ratings["timestamp"].min()), unit="s", tz="UTC")
    items = _movie_items(movies["item"].astype(int), movies["title"].astype(str), genres, release.fillna(first_seen))
    interactions = _movielens_interactions(ratings, "user", "item", negative_below)
    demographics = None
    if user_path.exists():
        raw = _read_csv(user_path, sep="|", header=None, names=["user", "age", "gender", "occupation", "zip"])
        demographics = pd.DataFrame(
            {
                "user_id": raw["user"].astype(str),
                "age": pd.to_numeric(raw["age"], errors="coerce").astype("Int32"),
                "gender": raw["gender"].astype(str).str.upper().where(raw["gender"].notna()),
            }
        )
    users = users_from_interactions(interactions, demographics)
    return validated_tables(users, items, interactions, data_path)


def load_parquet_dir(path: str | Path):
    """Loads `users`, `items`, `interactions` parquet files (plain or `recommendation_` prefixed)."""
    from rec_core.storage import read_input_table

    path = Path(path)
    tables = []
    for kind in ("users", "items", "interactions"):
        candidates = [path / exported_table_file(kind), path / table_file(kind)]
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            raise DataValidationError(str(path), None, 0, f"no {kind} parquet file")
        tables.append(read_input_table(found, kind).to_pandas())
    check_references(tables[2], tables[0], tables[1], str(path))
    return tuple(tables)


def validated_tables(users: pd.DataFrame, items: pd.DataFrame, interactions: pd.DataFrame, source: Path):
    """The three tables conformed to their schemas and cross-checked, errors naming `source`."""
    users_t = conform(users, "users", f"{source} (users)")
    items_t = conform(items, "items", f"{source} (items)")
    inter_t = conform(interactions, "interactions", str(source))
    check_references(inter_t, users_t, items_t, str(source))
    return users_t.to_pandas(), items_t.to_pandas(), inter_t.to_pandas()


def _load_amazon_sales(path: Path):
    from rec_core.data.amazon_sales import load_amazon  # it imports this module's helpers

    return load_amazon(path)


def _load_amazon_reviews(path: Path):
    from rec_core.data.amazon_reviews import load_amazon_reviews  # it imports this module's helpers

    return load_amazon_reviews(path)


def _is_amazon_reviews(path: Path) -> bool:
    from rec_core.data.amazon_reviews import is_amazon_reviews

    return is_amazon_reviews(path)


def _is_parquet_dir(path: Path) -> bool:
    return (path / exported_table_file("interactions")).exists() or (path / table_file("interactions")).exists()


# The built-in formats; `auto` tries them last to first: an Amazon CSV, MovieLens, parquet, then any JSON lines.
SOURCE_FORMATS["amazon-reviews"] = SourceFormat(_load_amazon_reviews, _is_amazon_reviews, True)
SOURCE_FORMATS["parquet"] = SourceFormat(load_parquet_dir, _is_parquet_dir, True)
SOURCE_FORMATS["movielens"] = SourceFormat(
    load_movielens, lambda path: (path / "ratings.csv").exists() or (path / "u.data").exists(), True
)
SOURCE_FORMATS["amazon"] = SourceFormat(
    _load_amazon_sales, lambda path: path.is_file() and path.suffix.lower() == ".csv", True
)
