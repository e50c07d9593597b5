"""The Amazon sales CSV layout (one row per product, its reviewers comma-joined) as the three tables.

Registered by `rec_core.data.loaders` as the `amazon` source format; the review datasets
(McAuley et al.) are `rec_core.data.amazon_reviews`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from rec_core.data.loaders import _read_csv, _require_columns, users_from_interactions, validated_tables
from rec_core.data.validation import DataValidationError

_MONEY = re.compile(r"[^\d.]")


def _money(series: pd.Series, column: str, source: Path) -> pd.Series:
    """'₹1,099' -> 1099.0; counts the values that are not prices."""
    cleaned = pd.to_numeric(series.astype(str).str.replace(_MONEY, "", regex=True), errors="coerce")
    bad = int((cleaned.isna() & series.notna()).sum())
    if bad:
        raise DataValidationError(str(source), column, bad, "values that are not prices (e.g. '₹1,099')")
    return cleaned.fillna(0.0)


def load_amazon(path: str | Path):
    """Loads the Amazon sales CSV layout: one row per product, reviewers comma-joined.

    Each (product, reviewer) pair becomes a `rate` interaction carrying the product's rating
    (the file has no per-review stars); timestamps are unknown, so they are spread over one
    day in file order to keep a deterministic time split possible.
    """
    path = Path(path)
    frame = _read_csv(path, dtype=str, keep_default_na=False)
    required = [
        "product_id",
        "product_name",
        "category",
        "discounted_price",
        "actual_price",
        "discount_percentage",
        "rating",
        "rating_count",
        "about_product",
        "user_id",
        "review_id",
    ]
    _require_columns(frame, required, path)
    frame = frame.drop_duplicates("product_id").reset_index(drop=True)
    rating = pd.to_numeric(frame["rating"], errors="coerce")
    discount = pd.to_numeric(frame["discount_percentage"].str.rstrip("%"), errors="coerce")
    bad = int(discount.isna().sum())
    if bad:
        raise DataValidationError(str(path), "discount_percentage", bad, "values that are not percentages (e.g. '64%')")
    epoch = pd.Timestamp("2023-01-01", tz="UTC")
    items = pd.DataFrame(
        {
            "item_id": frame["product_id"],
            "product_name": frame["product_name"],
            "category": frame["category"],
            "actual_price": _money(frame["actual_price"], "actual_price", path),
            "discounted_price": _money(frame["discounted_price"], "discounted_price", path),
            "discount_percentage": discount,
            "rating": rating,
            "rating_count": pd.to_numeric(frame["rating_count"].str.replace(",", ""), errors="coerce")
            .fillna(0)
            .astype("int64"),
            "about_product": frame["about_product"],
            "arrival_date": epoch,
            "img_link": frame["img_link"] if "img_link" in frame else None,
        }
    )
    pairs = []
    for row, (product, users, reviews) in enumerate(zip(frame["product_id"], frame["user_id"], frame["review_id"])):
        user_list, review_list = users.split(","), reviews.split(",")
        titles = frame.at[row, "review_title"].split(",") if "review_title" in frame else []
        for j, user in enumerate(u.strip() for u in user_list):
            if user:
                review = review_list[j].strip() if j < len(review_list) else f"{product}-{j}"
                pairs.append(
                    (review or f"{product}-{j}", user, product, titles[j].strip() if j < len(titles) else None)
                )
    ids, user_ids, item_ids, titles = map(list, zip(*pairs)) if pairs else ([], [], [], [])
    item_rating = items.set_index("item_id")["rating"]
    n = len(ids)
    interactions = pd.DataFrame(
        {
            "interaction_id": [f"{r}:{u}" for r, u in zip(ids, user_ids)],
            "user_id": user_ids,
            "item_id": item_ids,
            "timestamp": epoch + pd.to_timedelta(np.arange(n) * (86_400 / max(n, 1)), unit="s"),
            "interaction_type": "rate",
            "rating": item_rating.reindex(item_ids).to_numpy(),
            "quantity": None,
            "review_title": titles,
            "review_content": None,
        }
    ).drop_duplicates("interaction_id")
    users = users_from_interactions(interactions)
    return validated_tables(users, items, interactions, path)
