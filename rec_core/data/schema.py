"""Table schemas for users, items and interactions.

Every loader (synthetic, MovieLens, Amazon) produces tables in exactly these schemas, and
every reader validates against them, so the rest of the library can trust column names,
types and nullability. Each field carries its meaning in the schema metadata, which is what
`describe()` prints and what the Dagster UI shows.
"""

from __future__ import annotations

import math

import pandas as pd
import pyarrow as pa

INTERACTION_TYPES = ("positive_view", "negative_view", "cart", "purchase", "rate")
"""Allowed values of `interactions.interaction_type`; every type but `negative_view` is a positive signal."""

POSITIVE_INTERACTION_TYPES = tuple(t for t in INTERACTION_TYPES if t != "negative_view")

TIMESTAMP = pa.timestamp("us", tz="UTC")


def _field(name: str, type_: pa.DataType, nullable: bool, doc: str) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"doc": doc})


USERS_SCHEMA = pa.schema(
    [
        _field("user_id", pa.string(), False, "Unique user identifier."),
        _field("signup_date", TIMESTAMP, False, "When the user registered (UTC)."),
        _field(
            "preferences",
            pa.string(),
            False,
            "Stated interests: pipe-separated category node names (e.g. 'Audio|Kitchen'); may be empty.",
        ),
        _field("age", pa.int32(), True, "Age in years; null when unknown."),
        _field("gender", pa.string(), True, "Self-reported gender ('F', 'M', 'X'); null when unknown."),
    ]
)

ITEMS_SCHEMA = pa.schema(
    [
        _field("item_id", pa.string(), False, "Unique item identifier."),
        _field("product_name", pa.string(), False, "Display name."),
        _field(
            "category",
            pa.string(),
            False,
            "Pipe-separated taxonomy path from root to leaf, e.g. 'Electronics|WearableTechnology|SmartWatches'.",
        ),
        _field("actual_price", pa.float64(), False, "List price before discount (>= 0)."),
        _field("discounted_price", pa.float64(), False, "Selling price after discount (>= 0)."),
        _field("discount_percentage", pa.float64(), False, "Discount in percent of the list price, 0..100."),
        _field("rating", pa.float64(), True, "Average customer rating, 1..5; null when unrated."),
        _field("rating_count", pa.int64(), False, "Number of customer ratings (>= 0)."),
        _field("about_product", pa.string(), False, "Free-text description."),
        _field("arrival_date", TIMESTAMP, False, "When the item became available (UTC)."),
        _field("img_link", pa.string(), True, "Image location (URL or artifact-relative path); null when none."),
    ]
)

INTERACTIONS_SCHEMA = pa.schema(
    [
        _field("interaction_id", pa.string(), False, "Unique interaction identifier."),
        _field("user_id", pa.string(), False, "The acting user; must exist in users."),
        _field("item_id", pa.string(), False, "The item acted on; must exist in items."),
        _field("timestamp", TIMESTAMP, False, "When it happened (UTC)."),
        _field("interaction_type", pa.string(), False, f"One of {', '.join(INTERACTION_TYPES)}."),
        _field("rating", pa.float64(), True, "Explicit rating 0.5..5 when given, else null."),
        _field("quantity", pa.int32(), True, "Units for cart and purchase events, else null."),
        _field("review_title", pa.string(), True, "Review headline when a review was written."),
        _field("review_content", pa.string(), True, "Review text when a review was written."),
    ]
)

SPLIT_VALUES = ("train", "validation", "test")

SPLITS_SCHEMA = INTERACTIONS_SCHEMA.append(
    _field("split", pa.string(), False, "Which split the interaction belongs to: train, validation or test.")
)


def positive_interactions(interactions: pd.DataFrame) -> pd.DataFrame:
    """The rows of a positive type: what training learns from and evaluation counts as relevant."""
    return interactions[interactions["interaction_type"].isin(POSITIVE_INTERACTION_TYPES)]


def split_pipe(value) -> list[str]:
    """The parts of a pipe-separated value (`category` paths, `preferences`), trimmed, empty parts
    dropped; a missing value (None, NA, NaN) has none."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return []
    return [part.strip() for part in str(value).split("|") if part.strip()]


SCHEMAS: dict[str, pa.Schema] = {
    "users": USERS_SCHEMA,
    "items": ITEMS_SCHEMA,
    "interactions": INTERACTIONS_SCHEMA,
    "interaction_splits": SPLITS_SCHEMA,
}

PRIMARY_KEYS = {
    "users": "user_id",
    "items": "item_id",
    "interactions": "interaction_id",
    "interaction_splits": "interaction_id",
}


def describe(schema: pa.Schema) -> str:
    """A markdown table of a schema: column, type, nullability, meaning."""
    rows = ["| column | type | nullable | meaning |", "|---|---|---|---|"]
    for f in schema:
        doc = (f.metadata or {}).get(b"doc", b"").decode()
        rows.append(f"| `{f.name}` | {f.type} | {'yes' if f.nullable else 'no'} | {doc} |")
    return "\n".join(rows)
