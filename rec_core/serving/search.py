"""Search over the catalog by text (product names, then meaning) and by image (CLIP).

Text search answers with exact name matches first, then names starting with the query, then
items whose name and description embeddings are closest to the query's: a shopper typing a
product's name expects that product on top, and a description of it the nearest ones after.
Image search ranks items by the cosine of their CLIP image embedding to the uploaded picture's.

The lookup structures (`TextSearch`, `ImageSearch`) are built once per release, at load; the
functions `text_search` and `image_search` answer one request from them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rec_core.embeddings import embedding_matrix
from rec_core.filtering import keep_mask
from rec_core.serving.config import RecommenderConfig, request_rules
from rec_core.serving.query_encoders import QueryEncoders
from rec_core.serving.results import (
    FeatureUnavailableError,
    InvalidRequestError,
    Recommendations,
)
from rec_core.serving.topk import as_recommendations, filtered_top, flat_index

if TYPE_CHECKING:
    from rec_core.serving.state import ServingState


class TextSearch:
    """Name lookups (exact, prefix) over lower-cased names, and semantic search on text embeddings."""

    def __init__(self, items: pd.DataFrame, embeddings: pd.DataFrame | None, name_weight: float):
        names = items["product_name"].fillna("").astype(str).str.strip().str.lower().to_numpy(dtype=object)
        self._order = np.argsort(names, kind="stable")  # rows sorted by name
        self._sorted_names = names[self._order]
        self.model_name = ""
        self._semantic = None
        if embeddings is not None and len(embeddings):
            aligned = embeddings.drop_duplicates("item_id", keep="last")
            aligned = aligned.set_index(aligned["item_id"].astype(str)).reindex(items["item_id"].astype(str).to_numpy())
            present = aligned["name_embedding"].notna().to_numpy()
            dim = len(embeddings["name_embedding"].iloc[0])
            combined = np.zeros((len(items), dim), np.float32)  # [n_items, text_dim]
            if present.any():
                found = aligned[present]
                combined[present] = name_weight * embedding_matrix(found, "name_embedding") + (
                    1 - name_weight
                ) * embedding_matrix(found, "description_embedding")
            self._semantic, self._combined = flat_index(combined)
            if "model_id" in embeddings:
                self.model_name = str(embeddings["model_id"].iloc[0]).split("@")[0]

    @property
    def has_semantic(self) -> bool:
        return self._semantic is not None

    def lexical(self, query: str) -> list[tuple[np.ndarray, str]]:
        """[(rows whose name equals the query, "exact_name"), (rows whose name starts with it, "prefix_name")]."""
        key = query.strip().lower()
        lo = np.searchsorted(self._sorted_names, key, side="left")
        hi_exact = np.searchsorted(self._sorted_names, key, side="right")
        hi_prefix = np.searchsorted(self._sorted_names, key + "\U0010ffff", side="left")
        return [(self._order[lo:hi_exact], "exact_name"), (self._order[hi_exact:hi_prefix], "prefix_name")]

    def query_vector(self, encoder, query: str) -> np.ndarray:
        return encoder.encode([query.strip()])[0]

    def semantic_scores(self, query_vector: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return self._combined[rows] @ query_vector

    def semantic_top(self, query_vector: np.ndarray, k: int, keep) -> list[tuple[int, float]]:
        return filtered_top(self._semantic, query_vector, k, keep)


class ImageSearch:
    """Item CLIP image embeddings; empty when CLIP was disabled at materialization."""

    def __init__(self, item_ids: list[str], embeddings: pd.DataFrame | None):
        self.model_id = ""
        self.enabled = embeddings is not None and len(embeddings) > 0 and "clip_embedding" in embeddings
        if not self.enabled:
            return
        embeddings = embeddings.drop_duplicates("item_id", keep="last")
        position = {item_id: row for row, item_id in enumerate(item_ids)}
        rows = embeddings["item_id"].astype(str).map(position)
        embeddings = embeddings[rows.notna().to_numpy()]
        self.rows = rows.dropna().to_numpy(np.int64)  # catalog row of each embedding
        self.index, _ = flat_index(embedding_matrix(embeddings, "clip_embedding"))  # [n_with_image, clip_dim]
        if "model_id" in embeddings:
            self.model_id = str(embeddings["model_id"].iloc[0])

    def top(self, query_vector: np.ndarray, k: int, keep) -> list[tuple[int, float]]:
        found = filtered_top(self.index, query_vector, k, lambda local: keep(self.rows[local]))
        return [(int(self.rows[local]), score) for local, score in found]


def text_search(
    state: ServingState,
    config: RecommenderConfig,
    encoders: QueryEncoders,
    query: str,
    k: int,
    filters: Sequence | None,
) -> Recommendations:
    """Exact product-name matches, then prefix matches, then semantic matches on name and description."""
    if not isinstance(query, str) or not query.strip():
        raise InvalidRequestError("the search query is empty")
    if len(query) > config.max_query_chars:
        raise InvalidRequestError(
            f"the search query has {len(query)} characters; the limit is {config.max_query_chars}"
        )
    rules = request_rules(filters, config.search_filters)
    text = state.text
    lexical = [(rows, match) for rows, match in text.lexical(query) if len(rows)]
    picked: list[tuple[int, float, str]] = []
    taken: set[int] = set()
    query_vector = text.query_vector(encoders.text(text.model_name), query) if text.has_semantic else None
    for rows, match in lexical:
        rows = rows[keep_mask(state.attributes, rows, None, rules)]
        scores = text.semantic_scores(query_vector, rows) if query_vector is not None else np.ones(len(rows))
        for row, score in sorted(zip(rows.tolist(), scores.tolist()), key=lambda p: -p[1])[: k - len(picked)]:
            picked.append((row, score, match))
            taken.add(row)
    if len(picked) < k and query_vector is not None:
        result = text.semantic_top(
            query_vector,
            k - len(picked),
            lambda rows: keep_mask(state.attributes, rows, None, rules) & ~np.isin(rows, list(taken)),
        )
        picked += [(row, score, "semantic") for row, score in result]
    reason = None
    if len(picked) < k:
        reason = (
            "no text embeddings were materialized, so only name matches are searched"
            if query_vector is None
            else "fewer items pass the filters than requested"
        )
    return as_recommendations(state, picked, k, reason)


def image_search(
    state: ServingState, config: RecommenderConfig, encoders: QueryEncoders, image, k: int, filters: Sequence | None
) -> Recommendations:
    """Items whose CLIP image embedding is closest to `image` (bytes, a file path or a PIL image)."""
    if not state.image.enabled:
        from rec_core.encoders.clip import HOW_TO_ENABLE

        raise FeatureUnavailableError(
            "search by image is unavailable: CLIP is disabled (item_clip_embeddings is empty or missing). "
            + HOW_TO_ENABLE.format(model=config.clip_model or state.image.model_id or "openai/clip-vit-base-patch32")
        )
    picture = read_image(image)
    vector = encoders.clip(state.image.model_id).encode_image([picture])[0]
    rules = request_rules(filters, config.search_filters)
    result = state.image.top(vector, k, lambda rows: keep_mask(state.attributes, rows, None, rules))
    reason = None if len(result) >= k else "fewer items with images pass the filters than requested"
    return as_recommendations(state, [(row, score, "image") for row, score in result], k, reason)


def read_image(image):
    """A request's image as an RGB PIL image; an `InvalidRequestError` for anything unreadable."""
    from PIL import Image

    from rec_core.images import ImageInputError, load_image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if not isinstance(image, (bytes, bytearray, str, os.PathLike)):
        raise InvalidRequestError(f"image must be bytes, a file path or a PIL image, got {type(image).__name__}")
    try:
        return load_image(bytes(image) if isinstance(image, bytearray) else image, name="the uploaded image")
    except (ImageInputError, FileNotFoundError) as exc:
        raise InvalidRequestError(f"unreadable image: {exc}") from None
