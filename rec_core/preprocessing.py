"""Feature preprocessing for the two towers: fitted once on training data, applied identically at serving.

Why a fitted object: scalers and vocabularies learned from the training split must be replayed
exactly when the model serves, or the towers see inputs they were never trained on. The fitted
state is plain JSON (`preprocessing.json` in the model artifact), never a pickle.

Features are computed per entity (one row per user / item), not per interaction row, so a
popular item is not transformed thousands of times and there is one source of truth per entity.

Column order is deterministic: numerical and categorical columns are listed in the constants
below, vocabularies are sorted, and the item-id vocabulary follows sorted item ids.

Index 0 of every vocabulary is the out-of-vocabulary / missing bucket (and the padding index of
the multi-hot and history bags), so unseen values at serving time map to a learned "unknown"
embedding (categoricals) or to nothing (bags).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rec_core.data.schema import positive_interactions, split_pipe

PREPROCESSING_VERSION = 1

ITEM_NUMERICAL_COLUMNS = (
    "log_discounted_price",
    "log_actual_price",
    "discount_fraction",
    "rating_filled",
    "rating_missing",
    "log_rating_count",
    "log_days_since_arrival",
)
USER_NUMERICAL_COLUMNS = ("age_filled", "age_missing", "preference_count")
USER_CATEGORICAL_COLUMNS = ("gender", "age_bucket")
AGE_BUCKETS = (18, 25, 35, 45, 55, 65)  # upper bounds; bucket names are 'lt18', '18-24', ..., '65+'


@dataclass
class PreprocessingConfig:
    max_history: int = 100  # most recent positive interactions summarised per user
    category_levels: int = 3  # taxonomy prefixes used as categorical columns; the last is always the full path
    min_item_interactions: int = 1  # items with fewer positive train interactions get no id embedding (cold)


@dataclass
class ItemFeatures:
    """Item inputs of the item tower, one row per item of `ids`."""

    ids: list[str]
    id_index: torch.Tensor  # [n] long: row in the item-id embedding table, 0 = no id (cold item)
    numerical: torch.Tensor  # [n, len(ITEM_NUMERICAL_COLUMNS)] float, standardized
    categorical: torch.Tensor  # [n, category_levels] long, 0 = out of vocabulary
    category_tokens: torch.Tensor  # [n, T] long: category node names (multi-hot), 0 = padding
    text: torch.Tensor | None  # [n, item_text_dim] float: name + description embeddings
    image: torch.Tensor | None  # [n, item_image_dim] float: CLIP image embedding


@dataclass
class UserFeatures:
    """User inputs of the user tower except the history, one row per user of `ids`."""

    ids: list[str]
    numerical: torch.Tensor  # [n, len(USER_NUMERICAL_COLUMNS)] float, standardized
    categorical: torch.Tensor  # [n, len(USER_CATEGORICAL_COLUMNS)] long, 0 = out of vocabulary
    preference_tokens: torch.Tensor  # [n, P] long: stated preferences in the category-node vocabulary, 0 = padding
    text: torch.Tensor | None  # [n, user_text_dim] float: preferences text embedding
    id_index: torch.Tensor | None = None  # [n] long: row in the user-id embedding table, 0 = no id (new user)


@dataclass
class FittedPreprocessing:
    """Everything learned from training data that serving needs to build tower inputs (`data_preprocess` fits it)."""

    config: PreprocessingConfig
    item_ids: list[str]  # the item-id vocabulary; item_ids[k] has embedding row k + 1
    category_vocabularies: list[list[str]]  # per taxonomy level; value v has index position + 1
    category_nodes: list[str]  # node names shared by item categories and user preferences
    gender_vocabulary: list[str]
    item_numerical_mean: list[float]
    item_numerical_std: list[float]
    user_numerical_mean: list[float]
    user_numerical_std: list[float]
    item_text_dim: int = 0  # 0 = no text embeddings at fit time
    item_image_dim: int = 0  # 0 = no image embeddings at fit time
    user_text_dim: int = 0
    user_ids: list[str] = field(default_factory=list)  # the user-id vocabulary (users with positive train interactions)
    reference_time_s: float = 0.0  # "now" for item age: the last train interaction (Unix seconds)
    version: int = PREPROCESSING_VERSION
    _lookups: dict = field(default_factory=dict, repr=False, compare=False)

    # ---- sizes the model is built from ---------------------------------------------------
    @property
    def n_item_ids(self) -> int:
        return len(self.item_ids)

    @property
    def n_user_ids(self) -> int:
        return len(self.user_ids)

    @property
    def category_vocabulary_sizes(self) -> list[int]:
        return [len(v) + 1 for v in self.category_vocabularies]

    @property
    def user_category_vocabulary_sizes(self) -> list[int]:
        return [len(self.gender_vocabulary) + 1, len(AGE_BUCKETS) + 2]

    @property
    def n_category_nodes(self) -> int:
        return len(self.category_nodes)

    # ---- transforms ---------------------------------------------------------------------
    def item_id_index(self, item_ids) -> np.ndarray:
        """Rows in the item-id embedding table (0 for items outside the vocabulary)."""
        return self._id_rows("item_ids", self.item_ids, item_ids)

    def user_id_index(self, user_ids) -> np.ndarray:
        """Rows in the user-id embedding table (0 for users outside the vocabulary: new users)."""
        return self._id_rows("user_ids", self.user_ids, user_ids)

    def _id_rows(self, name: str, vocabulary: list[str], ids) -> np.ndarray:
        return self._lookup(name, vocabulary).get_indexer(pd.Index(ids, dtype=object).astype(str)) + 1

    def transform_items(
        self,
        items: pd.DataFrame,
        item_text_embeddings: pd.DataFrame | None = None,
        item_clip_embeddings: pd.DataFrame | None = None,
    ) -> ItemFeatures:
        ids = items["item_id"].astype(str).tolist()
        numerical = _standardize(
            _item_numerical_raw(items, self.reference_time_s), self.item_numerical_mean, self.item_numerical_std
        )
        levels = _category_levels(items["category"], self.config.category_levels)
        categorical = (
            np.stack(
                [
                    _encode(level, self._lookup(f"level{j}", vocab))
                    for j, (level, vocab) in enumerate(zip(levels, self.category_vocabularies, strict=True))
                ],
                axis=1,
            )
            if levels
            else np.zeros((len(items), 0), np.int64)
        )
        tokens = self._encode_nodes(items["category"])
        text = None
        if self.item_text_dim:
            half = self.item_text_dim // 2
            name = _aligned_embeddings(ids, item_text_embeddings, "item_id", "name_embedding", half)
            description = _aligned_embeddings(ids, item_text_embeddings, "item_id", "description_embedding", half)
            text = torch.from_numpy(np.concatenate([name, description], axis=1))
        image = _optional_embeddings(ids, item_clip_embeddings, "item_id", "clip_embedding", self.item_image_dim)
        return ItemFeatures(
            ids=ids,
            id_index=torch.from_numpy(self.item_id_index(ids)),
            numerical=torch.from_numpy(numerical),
            categorical=torch.from_numpy(categorical),
            category_tokens=torch.from_numpy(tokens),
            text=text,
            image=image,
        )

    def transform_users(self, users: pd.DataFrame, user_text_embeddings: pd.DataFrame | None = None) -> UserFeatures:
        ids = users["user_id"].astype(str).tolist()
        numerical = _standardize(_user_numerical_raw(users), self.user_numerical_mean, self.user_numerical_std)
        gender = _encode(users["gender"], self._lookup("gender", self.gender_vocabulary))
        age_bucket = _age_bucket(users["age"])
        text = _optional_embeddings(ids, user_text_embeddings, "user_id", "preferences_embedding", self.user_text_dim)
        return UserFeatures(
            ids=ids,
            numerical=torch.from_numpy(numerical),
            categorical=torch.from_numpy(np.stack([gender, age_bucket], axis=1)),
            preference_tokens=torch.from_numpy(self._encode_nodes(users["preferences"])),
            text=text,
            id_index=torch.from_numpy(self.user_id_index(ids)),
        )

    def history_matrix(self, user_ids: list[str], interactions: pd.DataFrame | None) -> torch.Tensor:
        """[n_users, max_history] long: each user's most recent positive items (id rows), newest last, 0-padded.

        Users absent from `interactions` (or `interactions` None) get an all-padding row: cold start.
        Items outside the id vocabulary are dropped, as the model has no embedding for them.
        """
        length = self.config.max_history
        history = np.zeros((len(user_ids), length), np.int64)
        if interactions is None or len(interactions) == 0 or length == 0:
            return torch.from_numpy(history)
        frame = positive_interactions(interactions)[["user_id", "item_id", "timestamp"]].copy()
        frame["row"] = _positions(pd.Index(user_ids, dtype=object), frame["user_id"].astype(str))
        frame["item"] = self.item_id_index(frame["item_id"].to_numpy())
        frame = frame[(frame["row"] >= 0) & (frame["item"] > 0)]
        if frame.empty:
            return torch.from_numpy(history)
        frame = frame.sort_values(["row", "timestamp", "item"], kind="stable")
        # position counted from the newest interaction: 0 = newest
        from_end = frame.groupby("row").cumcount(ascending=False).to_numpy()
        keep = from_end < length
        rows = frame["row"].to_numpy(np.int64)[keep]
        columns = length - 1 - from_end[keep]
        history[rows, columns] = frame["item"].to_numpy(np.int64)[keep]
        return torch.from_numpy(history)

    # ---- persistence --------------------------------------------------------------------
    def to_json(self) -> str:
        state = asdict(self)
        state.pop("_lookups")
        return json.dumps(state, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FittedPreprocessing:
        state = json.loads(text)
        if state.get("version") != PREPROCESSING_VERSION:
            raise ValueError(
                f"preprocessing version {state.get('version')} is not supported (expected {PREPROCESSING_VERSION})"
            )
        state["config"] = PreprocessingConfig(**state["config"])
        return cls(**state)

    def save(self, path: str | Path) -> None:
        """Writes the fitted state as JSON, atomically."""
        from rec_core.storage import write_bytes

        write_bytes(self.to_json().encode(), path)

    @classmethod
    def load(cls, path: str | Path) -> FittedPreprocessing:
        return cls.from_json(Path(path).read_text())

    # ---- helpers ------------------------------------------------------------------------
    def _lookup(self, name: str, vocabulary: list[str]) -> pd.Index:
        """The vocabulary as an index (kept: its hash table is built once); value v has code position + 1."""
        if name not in self._lookups:
            self._lookups[name] = pd.Index(vocabulary, dtype=object)
            if not self._lookups[name].is_unique:
                raise ValueError(f"preprocessing vocabulary '{name}' repeats values; refit the preprocessing")
        return self._lookups[name]

    def _encode_nodes(self, pipes: pd.Series) -> np.ndarray:
        """[n, widest] codes of the known nodes of each pipe-separated value, left-aligned, 0-padded."""
        paths = [split_pipe(p) for p in pipes]
        owner = np.repeat(np.arange(len(paths)), [len(path) for path in paths])
        codes = self._lookup("nodes", self.category_nodes).get_indexer([n for path in paths for n in path]) + 1
        owner, codes = owner[codes > 0], codes[codes > 0]
        counts = np.bincount(owner, minlength=len(paths))
        out = np.zeros((len(paths), max(int(counts.max(initial=0)), 1)), np.int64)
        out[owner, np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)] = codes
        return out


def data_preprocess(
    users: pd.DataFrame,
    items: pd.DataFrame,
    train_interactions: pd.DataFrame,
    item_text_embeddings: pd.DataFrame | None = None,
    user_text_embeddings: pd.DataFrame | None = None,
    item_clip_embeddings: pd.DataFrame | None = None,
    config: PreprocessingConfig | None = None,
) -> tuple[FittedPreprocessing, UserFeatures, ItemFeatures]:
    """Fits preprocessing on training data and transforms every user and item once.

    Vocabularies, scalers and the reference time are learned from `train_interactions` only, so no
    validation or test interaction leaks into the features. The embedding tables give the fitted state
    their widths (an absent or empty table: the towers get no such input).
    """
    config = config or PreprocessingConfig()
    positives = positive_interactions(train_interactions)
    counts = positives["item_id"].astype(str).value_counts()
    item_ids = sorted(counts.index[counts >= config.min_item_interactions])
    levels = _category_levels(items["category"], config.category_levels)
    category_vocabularies = [sorted(set(level.dropna())) for level in levels]
    nodes = set(n for path in items["category"] for n in split_pipe(path))
    nodes |= set(n for prefs in users["preferences"] for n in split_pipe(prefs))
    times = _unix_seconds(positives["timestamp"]) if len(positives) else _unix_seconds(items["arrival_date"])
    reference_time_s = float(times.max()) if len(times) and np.isfinite(times.max()) else 0.0
    # statistics from finite values only: one infinite price must not blank the column for every item
    item_numeric = _finite_or_nan(_item_numerical_raw(items, reference_time_s))
    user_numeric = _finite_or_nan(_user_numerical_raw(users))
    fitted = FittedPreprocessing(
        config=config,
        item_ids=item_ids,
        category_vocabularies=category_vocabularies,
        category_nodes=sorted(nodes),
        gender_vocabulary=sorted(set(users["gender"].dropna().astype(str))),
        item_numerical_mean=np.nanmean(item_numeric, axis=0).tolist() if len(items) else [0.0] * item_numeric.shape[1],
        item_numerical_std=_safe_std(item_numeric),
        user_numerical_mean=np.nanmean(user_numeric, axis=0).tolist() if len(users) else [0.0] * user_numeric.shape[1],
        user_numerical_std=_safe_std(user_numeric),
        item_text_dim=2 * _embedding_dim(item_text_embeddings, "name_embedding"),
        item_image_dim=_embedding_dim(item_clip_embeddings, "clip_embedding"),
        user_text_dim=_embedding_dim(user_text_embeddings, "preferences_embedding"),
        user_ids=sorted(positives["user_id"].astype(str).unique()),
        reference_time_s=reference_time_s,
    )
    fitted.item_numerical_mean = [v if math.isfinite(v) else 0.0 for v in fitted.item_numerical_mean]
    fitted.user_numerical_mean = [v if math.isfinite(v) else 0.0 for v in fitted.user_numerical_mean]
    return (
        fitted,
        fitted.transform_users(users, user_text_embeddings),
        fitted.transform_items(items, item_text_embeddings, item_clip_embeddings),
    )


data_preproccess = data_preprocess
"""The seed's spelling, kept so existing callers keep working."""


# ---- raw feature extraction (before standardization) ---------------------------------------
def _category_levels(categories: pd.Series, levels: int) -> list[pd.Series]:
    """Taxonomy prefixes of depth 1..levels-1 plus the full path, as strings (None when too shallow)."""
    paths = [split_pipe(c) for c in categories]
    columns = []
    for depth in range(1, levels):
        columns.append(pd.Series(["|".join(p[:depth]) if len(p) >= depth else None for p in paths], dtype=object))
    if levels >= 1:
        columns.append(pd.Series(["|".join(p) if p else None for p in paths], dtype=object))
    return columns


def _unix_seconds(timestamps: pd.Series) -> np.ndarray:
    return pd.to_datetime(timestamps, utc=True).astype("int64").to_numpy() / 1e9 if len(timestamps) else np.zeros(0)


def _item_numerical_raw(items: pd.DataFrame, reference_time_s: float) -> np.ndarray:
    age_days = np.maximum(reference_time_s - _unix_seconds(items["arrival_date"]), 0.0) / 86_400.0
    rating = pd.to_numeric(items["rating"], errors="coerce").astype(float)
    columns = [
        np.log1p(pd.to_numeric(items["discounted_price"], errors="coerce").astype(float).clip(lower=0)),
        np.log1p(pd.to_numeric(items["actual_price"], errors="coerce").astype(float).clip(lower=0)),
        pd.to_numeric(items["discount_percentage"], errors="coerce").astype(float) / 100.0,
        rating.fillna(rating.mean() if rating.notna().any() else 0.0),
        rating.isna().astype(float),
        np.log1p(pd.to_numeric(items["rating_count"], errors="coerce").astype(float).clip(lower=0)),
        np.log1p(age_days),
    ]
    return np.stack([np.asarray(c, np.float64) for c in columns], axis=1).reshape(
        len(items), len(ITEM_NUMERICAL_COLUMNS)
    )


def _user_numerical_raw(users: pd.DataFrame) -> np.ndarray:
    age = pd.to_numeric(users["age"], errors="coerce").astype(float)
    columns = [
        age.fillna(age.mean() if age.notna().any() else 0.0),
        age.isna().astype(float),
        pd.Series([len(split_pipe(p)) for p in users["preferences"]], dtype=float),
    ]
    return np.stack([np.asarray(c, np.float64) for c in columns], axis=1).reshape(
        len(users), len(USER_NUMERICAL_COLUMNS)
    )


def _age_bucket(age: pd.Series) -> np.ndarray:
    values = pd.to_numeric(age, errors="coerce").to_numpy(float)
    bucket = np.searchsorted(np.asarray(AGE_BUCKETS, float), values, side="right") + 1  # 1..len+1
    return np.where(np.isnan(values), 0, bucket).astype(np.int64)


def _finite_or_nan(values: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(values), values, np.nan)


def _safe_std(values: np.ndarray) -> list[float]:
    if len(values) == 0:
        return [1.0] * values.shape[1]
    std = np.nanstd(values, axis=0)
    return [float(s) if np.isfinite(s) and s > 1e-8 else 1.0 for s in std]


def _standardize(values: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    with np.errstate(over="ignore"):
        out = ((values - np.asarray(mean)) / np.asarray(std)).astype(np.float32)  # beyond float32 range: inf, then 0
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def _encode(values: pd.Series, vocabulary: pd.Index) -> np.ndarray:
    """Code of each value as a string (position in `vocabulary` + 1); 0 when missing or outside the vocabulary."""
    values = pd.Series(values, dtype=object)
    codes = vocabulary.get_indexer(values.astype(str)) + 1
    codes[values.isna().to_numpy()] = 0
    return codes.astype(np.int64)


def _positions(ids: pd.Index, values) -> np.ndarray:
    """Position of each of `values` in `ids` (the last one when an id repeats), -1 when absent."""
    if ids.is_unique:
        return ids.get_indexer(values)
    last = ~ids.duplicated(keep="last")
    found = ids[last].get_indexer(values)
    return np.where(found >= 0, np.flatnonzero(last)[found], -1)


def _embedding_dim(table: pd.DataFrame | None, column: str) -> int:
    if table is None or len(table) == 0 or column not in table.columns:
        return 0
    return int(len(table[column].iloc[0]))


def _optional_embeddings(
    ids: list[str], table: pd.DataFrame | None, key: str, column: str, dim: int
) -> torch.Tensor | None:
    """`_aligned_embeddings` as a tensor, or None when the model was fitted without this input (`dim` 0)."""
    return torch.from_numpy(_aligned_embeddings(ids, table, key, column, dim)) if dim else None


def _aligned_embeddings(ids: list[str], table: pd.DataFrame | None, key: str, column: str, dim: int) -> np.ndarray:
    """Embeddings in the order of `ids`; rows missing from `table` (or a missing table) are zeros."""
    out = np.zeros((len(ids), dim), np.float32)
    if table is None or len(table) == 0 or column not in table.columns:
        return out
    positions = pd.Series(range(len(table)), index=table[key].astype(str).to_numpy())
    positions = positions[~positions.index.duplicated(keep="last")]
    rows = positions.reindex(ids)
    present = rows.notna().to_numpy()
    if present.any():
        values = table[column].to_numpy()[rows[present].to_numpy(np.int64)]
        sizes = {np.size(v) for v in values}
        if sizes != {dim}:
            raise ValueError(
                f"{column}: embeddings have {', '.join(map(str, sorted(sizes)))} dimensions, the model was fitted with {dim}"
            )
        stacked = np.stack([np.asarray(v, np.float32).reshape(dim) for v in values])
        stacked[~np.isfinite(stacked).all(axis=1)] = 0.0  # a corrupt (NaN/inf) vector counts as missing
        out[present] = stacked
    return out
