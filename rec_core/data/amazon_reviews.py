"""Loader for the JSON-lines Amazon review datasets (McAuley et al.), 2014, 2018 and 2023 releases.

Where the files are: `path` is either one reviews file, or a folder holding exactly one reviews
file and at most one metadata file. Files end in `.json`, `.jsonl`, `.json.gz` or `.jsonl.gz`
(gzip is recognised by its magic bytes, whatever the name); in a folder, the metadata file's
name starts with `meta_` (`meta_Electronics.json.gz`, `meta_Books.jsonl`) and the other file is
the reviews (`reviews_Electronics_5.json.gz`, `Electronics_5.json`, `Books.jsonl`).

Layouts, recognised from the first record of each file:
- reviews 2014/2018: `reviewerID`, `asin`, `overall`, `unixReviewTime` (seconds), `summary`, `reviewText`;
- reviews 2023: `user_id`, `parent_asin`, `rating`, `timestamp` (milliseconds), `title`, `text`;
- metadata: `asin` (2014/2018) or `parent_asin` (2023), `title`, categories as a list of lists
  (2014 `categories`), a list (2018 `category`, 2023 `categories`) or 2023 `main_category`,
  `price` (a number, "$12.99", a range "$5.99 - $9.99": the lower end), `description` (text or
  a list of texts), and an image URL (`imUrl`, `imageURL`/`imageURLHighRes` lists, or 2023
  `images`: dicts with `large`/`hi_res`/`thumb`).
Old metadata files are Python literals (`{'asin': ...}`) rather than JSON: a line that is not
JSON is read with `ast.literal_eval`, which evaluates literals only, never code.

What each table gets:
- interactions: one per review, mapped from its stars exactly as MovieLens ratings are
  (`loaders.rating_interactions`), with the review's title and text kept.
- users: the reviewer ids only; Amazon publishes no demographics or stated preferences.
- items: every reviewed item (metadata rows of items nobody reviewed are skipped while
  streaming, which keeps a full-category metadata file cheap). Missing metadata falls back to
  what the reviews say: the name from the most frequent words of the review titles, the
  description from the first review texts, the category from the reviews file's name
  (`reviews_Electronics_5` -> `Electronics`). Category paths start at `Amazon` (as MovieLens's
  start at `Movies`), so every item has a department level: `Amazon|Electronics|Headphones`. Prices that cannot be read (some 2018 rows hold
  page markup) count as unknown (0.0), as a missing price does. No catalog rating is set:
  averaging the reviews would leak the test split.

Malformed lines and records without a required key raise `DataValidationError` naming the file,
the key and the number of bad rows, before anything is returned.
"""

from __future__ import annotations

import ast
import gzip
import html
import json
import logging
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from rec_core.data.loaders import numeric_column, rating_interactions, users_from_interactions, validated_tables
from rec_core.data.validation import DataValidationError

log = logging.getLogger(__name__)

JSON_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
CATEGORY_ROOT = "Amazon"  # the root of every category path, as 'Movies' is for MovieLens: each path has a second level
META_PREFIX = "meta_"
REVIEW_LAYOUTS = {
    # layout: (user key, item key, rating key, time key, time units per second, title key, text key)
    "2014/2018": ("reviewerID", "asin", "overall", "unixReviewTime", 1, "summary", "reviewText"),
    "2023": ("user_id", "parent_asin", "rating", "timestamp", 1000, "title", "text"),
}
CHUNK_ROWS = 100_000  # records turned into a DataFrame at a time while streaming
NAME_WORDS = 4  # review-title words that make up a name when the metadata has none
SNIPPETS, SNIPPET_CHARS, DESCRIPTION_CHARS = 3, 200, 1000  # review text kept for a description without metadata
_STOPWORDS = frozenset(
    "a about after all also am an and any are as at be been but by can did do does for from get got had has have "
    "he her his how i if in into is it it's its just me more most much my no not of on one only or our out so "
    "than that the their them then there these they this those to too up us very was we well were what when which "
    "while who will with would you your five four three two star stars great good nice love loved excellent best "
    "awesome perfect product works work really".split()
)
_WORD = re.compile(r"[a-z][a-z0-9'&+-]+")
_PRICE = re.compile(r"^\s*[$€£¥₹]?\s*(\d[\d,]*(?:\.\d+)?)")


def is_amazon_reviews(path: Path) -> bool:
    """Whether `path` is a JSON-lines file or a folder holding one (what `load_amazon_reviews` reads)."""
    if path.is_file():
        return path.name.lower().endswith(JSON_SUFFIXES)
    return path.is_dir() and any(p.name.lower().endswith(JSON_SUFFIXES) for p in path.iterdir() if p.is_file())


def amazon_review_files(path: str | Path) -> tuple[Path, Path | None]:
    """(reviews file, metadata file or None) for a file or a folder, by the convention in the module doc."""
    path = Path(path)
    if path.is_file():
        return path, None
    if not path.is_dir():
        raise DataValidationError(str(path), None, 0, "no such file or folder")
    found = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(JSON_SUFFIXES))
    meta = [p for p in found if p.name.lower().startswith(META_PREFIX)]
    reviews = [p for p in found if p not in meta]
    if len(reviews) != 1 or len(meta) > 1:
        raise DataValidationError(
            str(path),
            None,
            0,
            (
                f"expected one reviews file and at most one '{META_PREFIX}*' metadata file ({', '.join(JSON_SUFFIXES)}), "
                f"found reviews {[p.name for p in reviews]} and metadata {[p.name for p in meta]}"
            ),
        )
    return reviews[0], (meta[0] if meta else None)


def load_amazon_reviews(path: str | Path, negative_below: float | None = None):
    """(users, items, interactions) from Amazon review JSON lines; see the module doc.

    `negative_below` maps low stars to `negative_view`, as `load_movielens` does.
    """
    reviews_path, meta_path = amazon_review_files(path)
    reviews = _read_reviews(reviews_path)
    interactions = rating_interactions(
        reviews["user"], reviews["item"], reviews["rating"], reviews["seconds"], negative_below
    )
    interactions["review_title"] = reviews["title"].to_numpy()
    interactions["review_content"] = reviews["text"].to_numpy()
    reviewed = set(reviews["item"])
    meta = _read_metadata(meta_path, reviewed) if meta_path is not None else None
    described = 0 if meta is None else len(reviewed & set(meta["item"]))
    if described < len(reviewed):
        log.info(
            "%s: %d of %d reviewed items have no metadata; their names and descriptions come from the reviews",
            reviews_path,
            len(reviewed) - described,
            len(reviewed),
        )
    items = _items(reviews, meta, _category_from_file_name(reviews_path))
    users = users_from_interactions(interactions)
    return validated_tables(users, items, interactions, reviews_path)


# ---- reading JSON lines --------------------------------------------------------------------
def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) of a plain or gzipped file, blank lines skipped."""
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    with gzip.open(path, "rb") if gzipped else open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line


def _parse(line: bytes) -> dict | None:
    """One record: JSON, else a Python literal (old metadata files); None when it is neither or not a mapping."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        try:
            record = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
    return record if isinstance(record, dict) else None


def _first_record(path: Path) -> dict:
    """The first well-formed record, which tells the layout (malformed lines are counted by `_stream`)."""
    bad = 0
    for _, line in _lines(path):
        record = _parse(line)
        if record is not None:
            return record
        bad += 1
    if bad:
        raise DataValidationError(str(path), None, bad, "lines that are not JSON objects (no line is)")
    raise DataValidationError(str(path), None, 0, "the file has no records")


def _stream(path: Path, columns: list[str], extract: Callable[[dict], tuple | None]) -> pd.DataFrame:
    """The file as a DataFrame of `columns`, one row per record `extract` keeps (it returns None to skip).

    Records are parsed one line at a time and gathered CHUNK_ROWS at a time, so memory holds the
    kept columns, not the records. Every malformed line is counted before the error is raised.
    """
    frames, rows, bad, first_bad = [], [], 0, None
    for number, line in _lines(path):
        record = _parse(line)
        if record is None:
            bad += 1
            first_bad = first_bad or number
            continue
        row = extract(record)
        if row is not None:
            rows.append(row)
        if len(rows) >= CHUNK_ROWS:
            frames.append(pd.DataFrame.from_records(rows, columns=columns))
            rows = []
    if bad:
        raise DataValidationError(
            str(path), None, bad, f"lines that are not JSON objects (the first is line {first_bad})"
        )
    if rows or not frames:
        frames.append(pd.DataFrame.from_records(rows, columns=columns))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _require(frame: pd.DataFrame, keys: list[str], path: Path, layout: str) -> None:
    for key in keys:
        missing = int(frame[key].isna().sum())
        if missing:
            raise DataValidationError(
                str(path), key, missing, f"records without a value for the required key '{key}' ({layout} layout)"
            )


# ---- reviews -------------------------------------------------------------------------------
def _read_reviews(path: Path) -> pd.DataFrame:
    """Columns user, item, rating, seconds, title, text (title/text None when absent)."""
    first = _first_record(path)
    layout = "2014/2018" if "reviewerID" in first else "2023" if "user_id" in first else None
    if layout is None:
        raise DataValidationError(
            str(path),
            "reviewerID",
            1,
            "the first record has neither 'reviewerID' (2014/2018 "
            "layout) nor 'user_id' (2023 layout): not an Amazon reviews file",
        )
    user, item, rating, time, per_second, title, text = REVIEW_LAYOUTS[layout]
    keys = [user, item, rating, time, title, text]
    frame = _stream(path, keys, lambda record: tuple(record.get(k) for k in keys))
    if frame.empty:
        raise DataValidationError(str(path), None, 0, "the file has no reviews")
    _require(frame, [user, item, rating, time], path, layout)
    seconds = numeric_column(frame, time, path) // per_second
    return pd.DataFrame(
        {
            "user": frame[user].astype(str),
            "item": frame[item].astype(str),
            "rating": numeric_column(frame, rating, path),
            "seconds": seconds.astype(np.int64),
            "title": _optional_text(frame[title]),
            "text": _optional_text(frame[text]),
        }
    )


def _optional_text(values: pd.Series) -> pd.Series:
    return values.map(lambda v: html.unescape(str(v)).strip() if isinstance(v, str) and v.strip() else None)


# ---- metadata ------------------------------------------------------------------------------
META_COLUMNS = ["item", "name", "category", "price", "description", "image"]


def _read_metadata(path: Path, reviewed: set[str]) -> pd.DataFrame:
    """META_COLUMNS for the reviewed items, parsed while streaming (other items are skipped)."""
    missing_id = 0

    def extract(record: dict) -> tuple | None:
        nonlocal missing_id
        item = record.get("parent_asin") or record.get("asin")
        if item is None:
            missing_id += 1
            return None
        if str(item) not in reviewed:
            return None
        return (
            str(item),
            _text(record.get("title")) or None,
            _category_path(record),
            _price(record.get("price")),
            _text(record.get("description"))[:DESCRIPTION_CHARS] or None,
            _image(record),
        )

    frame = _stream(path, META_COLUMNS, extract)
    if missing_id:
        raise DataValidationError(str(path), "asin", missing_id, "records without 'asin' or 'parent_asin'")
    return frame.drop_duplicates("item", keep="first")


def _text(value) -> str:
    """A text field that may be a string, a list of strings or missing, as one unescaped line."""
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value if v is not None)
    if not isinstance(value, str):
        return ""
    return " ".join(html.unescape(value).split())


def _category_path(record: dict) -> str | None:
    """A pipe path from root to leaf: 2014 `categories` (first list), 2018 `category`, 2023 `categories` or `main_category`."""
    nodes = record.get("categories") or record.get("category") or []
    if isinstance(nodes, str):
        nodes = [nodes]
    if nodes and isinstance(nodes[0], (list, tuple)):
        nodes = nodes[0]
    if not nodes and isinstance(record.get("main_category"), str):
        nodes = [record["main_category"]]
    cleaned = [html.unescape(str(n)).replace("|", "/").strip() for n in nodes]
    return "|".join(dict.fromkeys(n for n in cleaned if n)) or None


def _price(value) -> float:
    """12.99, "$12.99", "$1,299.00", "$5.99 - $9.99" (lower end) -> a number; missing or unreadable -> 0.0."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) and value >= 0 else 0.0
    match = _PRICE.match(value) if isinstance(value, str) else None
    return float(match.group(1).replace(",", "")) if match else 0.0


def _image(record: dict) -> str | None:
    """The first image URL: 2014 `imUrl`, 2018 `imageURLHighRes`/`imageURL`, 2023 `images` (large, hi_res, thumb)."""
    images = record.get("images")
    if isinstance(images, dict):  # the columnar form: {"large": [...], "hi_res": [...], ...}
        images = [dict(zip(images, values)) for values in zip(*images.values())] if images else []
    for image in images if isinstance(images, list) else []:
        if isinstance(image, dict):
            url = next(
                (image[k] for k in ("large", "hi_res", "thumb") if isinstance(image.get(k), str) and image[k]), None
            )
            if url:
                return url
    for key in ("imageURLHighRes", "imageURL", "imUrl"):
        value = record.get(key)
        value = value[0] if isinstance(value, list) and value else value
        if isinstance(value, str) and value:
            return value
    return None


# ---- items ---------------------------------------------------------------------------------
def _items(reviews: pd.DataFrame, meta: pd.DataFrame | None, file_category: str) -> pd.DataFrame:
    """One row per reviewed item: metadata where present, what the reviews say otherwise."""
    first_seen = reviews.groupby("item", sort=True)["seconds"].min()
    known = pd.DataFrame({"item": first_seen.index}).merge(
        meta if meta is not None else pd.DataFrame(columns=META_COLUMNS), on="item", how="left"
    )
    needs_words = known["name"].isna() | known["description"].isna()
    derived = _review_derived(reviews[reviews["item"].isin(set(known.loc[needs_words, "item"]))])
    name = known["name"].fillna(known["item"].map(derived["name"]))
    price = pd.to_numeric(known["price"], errors="coerce").fillna(0.0)
    return pd.DataFrame(
        {
            "item_id": known["item"].to_numpy(),
            "product_name": name.fillna("Amazon item " + known["item"]).to_numpy(),
            "category": (CATEGORY_ROOT + "|" + known["category"].fillna(file_category)).to_numpy(),
            "actual_price": price.to_numpy(),
            "discounted_price": price.to_numpy(),
            "discount_percentage": 0.0,
            "rating": np.nan,  # no catalog rating: averaging the reviews would leak the test split
            "rating_count": 0,
            "about_product": known["description"]
            .fillna(known["item"].map(derived["description"]))
            .fillna("")
            .to_numpy(),
            "arrival_date": pd.to_datetime(first_seen.to_numpy(), unit="s", utc=True),
            "img_link": known["image"].where(known["image"].notna(), None).to_numpy(),
        }
    )


def _review_derived(reviews: pd.DataFrame) -> pd.DataFrame:
    """Per item (index): `name` from the NAME_WORDS most frequent title words outside _STOPWORDS (ties
    alphabetical; the earliest review title when no word is left), `description` from the first
    SNIPPETS review texts."""
    ordered = reviews.sort_values(["item", "seconds"], kind="stable")
    words = ordered[["item", "title"]].dropna().assign(word=lambda f: f["title"].str.lower().str.findall(_WORD))
    words = words.explode("word").dropna(subset=["word"])
    words = words[~words["word"].isin(_STOPWORDS)]
    counts = words.groupby(["item", "word"]).size().rename("n").reset_index()
    counts = counts.sort_values(["item", "n", "word"], ascending=[True, False, True]).groupby("item").head(NAME_WORDS)
    keywords = counts.groupby("item")["word"].agg(lambda w: " ".join(x.capitalize() for x in w))
    first_title = ordered.dropna(subset=["title"]).groupby("item")["title"].first()
    texts = ordered.dropna(subset=["text"]).groupby("item").head(SNIPPETS)
    snippets = texts.assign(text=texts["text"].str.slice(0, SNIPPET_CHARS)).groupby("item")["text"].agg(" … ".join)
    items = pd.Index(ordered["item"].unique())
    return pd.DataFrame(
        {
            "name": keywords.reindex(items).combine_first(first_title.reindex(items)),
            "description": ("From reviews: " + snippets.reindex(items)).str.slice(0, DESCRIPTION_CHARS),
        },
        index=items,
    )


def _category_from_file_name(path: Path) -> str:
    """`reviews_Cell_Phones_and_Accessories_5.json.gz` -> 'Cell Phones and Accessories'; 'Unknown' when nothing is left."""
    stem = path.name
    for suffix in sorted(JSON_SUFFIXES, key=len, reverse=True):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    stem = re.sub(r"^reviews_?", "", stem, flags=re.IGNORECASE)
    stem = re.sub(r"_5$", "", stem)
    return stem.replace("_", " ").replace("|", "/").strip() or "Unknown"
