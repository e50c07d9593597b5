"""The filtered top-k: the k best catalog rows for a query vector that pass the filter rules.

Filters can remove most candidates, so a single request over-fetches: `k * overfetch_factor`
plus the items the user already saw, widened by the survival rate seen so far; when that is
not enough, a search restricted to the rows that pass the filters (then, if needed, an exact
scan of them). A list shorter than k comes back only when the catalog itself runs out, with
the reason.

`batch_top_k` (the offline top-k for every user) gives the same answers by another route: it
evaluates catalog-level rules once as a mask and hands per-user exclusions to one
multithreaded index search per block of users, so it never over-fetches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa

from rec_core.filtering import FilterRule, ListsExcludedRows, UserProfile, keep_mask
from rec_core.serving.config import RecommenderConfig
from rec_core.serving.results import Recommendations, RecommendedItem

if TYPE_CHECKING:
    from rec_core.serving.state import ServingState


def ranked(
    state: ServingState,
    config: RecommenderConfig,
    query: np.ndarray,
    k: int,
    profile: UserProfile | None,
    rules: list[FilterRule],
    match: str,
    excluded: np.ndarray | None = None,
) -> Recommendations:
    """Top-k rows passing `rules`: over-fetching index searches, then an exact scan if still short."""
    index = state.index
    n = len(index)
    excluded = np.empty(0, np.int64) if excluded is None else excluded
    seen = len(profile.items_with(None)) if profile is not None else 0
    fetch = min(n, k * config.overfetch_factor + seen + len(excluded))
    query = np.asarray(query, dtype=np.float32).reshape(1, -1)
    for _ in range(config.search_rounds):
        scores, rows = index.search(query, fetch)
        valid = rows[0] >= 0
        scores, rows = scores[0][valid], rows[0][valid]
        keep = keep_mask(state.attributes, rows, profile, rules)
        if len(excluded):
            keep &= ~np.isin(rows, excluded)
        survivors = int(keep.sum())
        if survivors >= k or (fetch >= n and index.is_exact):
            picked = [(int(r), float(s), match) for r, s in zip(rows[keep][:k], scores[keep][:k])]
            return as_recommendations(state, picked, k, shortfall(state, len(picked), k, rules))
        # candidates needed at this survival rate; past max_fetch a search restricted to allowed rows is cheaper
        needed = n if survivors == 0 else int(1.5 * fetch * k / survivors)
        if needed > config.max_fetch or fetch >= n:
            break
        fetch = min(n, max(needed, 2 * fetch))
    allowed = allowed_rows(state, profile, rules)
    allowed[excluded] = False
    picked = [(row, score, match) for row, score in index.search_allowed(query[0], allowed, k)]
    return as_recommendations(state, picked, k, shortfall(state, len(picked), k, rules))


def batch_top_k(
    state: ServingState,
    user_ids: list[str],
    embeddings: np.ndarray,
    k: int,
    rules: list[FilterRule],
    batch_size: int,
    threads: int | None,
) -> pd.DataFrame:
    """`user_id`, `top_k_item_ids`, `top_k_scores` for every user: the same lists as `ranked`, per block of users.

    Catalog-level rules are one mask over the catalog; per-user rules that list their exclusions
    (`ListsExcludedRows`) become (user, row) pairs the index search skips. Users whose probed
    cells hold fewer than k allowed items, and every user when a per-user rule cannot list its
    exclusions, get the restricted search `ranked` falls back to.
    """
    index = state.index
    user_rules = [r for r in rules if r.per_user]
    catalog_keep = keep_mask(state.attributes, state.all_rows, None, [r for r in rules if not r.per_user])  # [n_items]
    top_rows = np.full((len(user_ids), k), -1, np.int64)  # [U, k], -1 past a short list's end
    top_scores = np.zeros((len(user_ids), k), np.float32)
    for start in range(0, len(user_ids), batch_size):
        block = slice(start, start + batch_size)
        profiles = [state.feature_source.user_profile(u) for u in user_ids[block]] if user_rules else []
        if all(isinstance(rule, ListsExcludedRows) for rule in user_rules):

            def excluded(profiles=profiles):  # the (user, row) pairs the rules drop, built while FAISS assigns cells
                pairs = [rule.excluded_rows(state.attributes, profiles) for rule in user_rules]
                return tuple(np.concatenate([p[i] for p in pairs]) for i in (0, 1)) if pairs else None

            scores, rows = index.search_batch(embeddings[block], k, threads, catalog_keep, excluded)  # [B, k] each
            top_rows[block], top_scores[block] = rows, np.where(rows >= 0, scores, 0)
            short = np.flatnonzero(rows[:, -1] < 0)  # the probed cells ran out of allowed items
        else:
            short = np.arange(len(profiles))  # a per-user rule that cannot list its exclusions: every user alone
        for b in short.tolist():
            allowed = allowed_rows(state, profiles[b] if profiles else None, rules, catalog_keep)
            found = index.search_allowed(embeddings[start + b], allowed, k)
            top_rows[start + b] = -1
            top_rows[start + b, : len(found)] = [row for row, _ in found]
            top_scores[start + b, : len(found)] = [score for _, score in found]
    item_ids, scores = ranked_lists(pa.array(state.attributes.item_ids, pa.string()), top_rows, top_scores)
    return pd.DataFrame(
        {
            "user_id": user_ids,
            "top_k_item_ids": pd.arrays.ArrowExtensionArray(item_ids),
            "top_k_scores": pd.arrays.ArrowExtensionArray(scores),
        }
    )


def ranked_lists(catalog_ids: pa.Array, rows: np.ndarray, scores: np.ndarray) -> tuple[pa.ListArray, pa.ListArray]:
    """Per-user lists of item ids (list<string>) and scores (list<double>) from [U, k] catalog rows and scores,
    each list cut at its first -1 row. Built as Arrow arrays in bulk: no Python object per item."""
    found = rows >= 0  # [U, k]; a short list's -1 rows come after its items
    offsets = pa.array(np.concatenate([[0], np.cumsum(found.sum(axis=1))]), pa.int32())
    ids = pa.ListArray.from_arrays(offsets, catalog_ids.take(pa.array(rows[found])))
    return ids, pa.ListArray.from_arrays(offsets, pa.array(scores[found].astype(np.float64)))


def allowed_rows(
    state: ServingState,
    profile: UserProfile | None,
    rules: Sequence[FilterRule],
    catalog_keep: np.ndarray | None = None,
) -> np.ndarray:
    """[n_items] bool: every catalog row passing `rules` (catalog-level part precomputed when given)."""
    if catalog_keep is None:
        return keep_mask(state.attributes, state.all_rows, profile, rules)
    user_rules = [r for r in rules if r.per_user]
    return catalog_keep & keep_mask(state.attributes, state.all_rows, profile, user_rules)


def shortfall(state: ServingState, found: int, k: int, rules: Sequence[FilterRule]) -> str | None:
    """Why a list holds fewer than k items (None when it does not): the catalog ran out under these rules."""
    if found >= k:
        return None
    names = ", ".join(rule.name for rule in rules) or "none"
    return f"only {found} of {len(state.index)} catalog items pass the filters ({names})"


def as_recommendations(
    state: ServingState, picked: list[tuple[int, float, str]], k: int, reason: str | None
) -> Recommendations:
    """(row, score, match) triples as a `Recommendations` list with the rows' display fields and the release id."""
    d, item_ids = state.display, state.index.item_ids
    items = tuple(
        RecommendedItem(
            item_ids[row],
            score,
            match,
            d["product_name"][row],
            d["category"][row],
            d["discounted_price"][row],
            d["actual_price"][row],
            d["rating"][row],
            d["rating_count"][row],
            d["img_link"][row],
        )
        for row, score, match in picked
    )
    return Recommendations(items, k, reason, state.release["release_id"] if state.release else None)


def flat_index(vectors: np.ndarray) -> tuple[faiss.IndexFlatIP, np.ndarray]:
    """An exact inner-product index over `vectors` [n, dim], and a read view of the copy FAISS holds
    (so large text-embedding matrices are kept once, not twice)."""
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    view = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)
    return index, view


def filtered_top(index: faiss.Index, query: np.ndarray, k: int, keep) -> list[tuple[int, float]]:
    """Top-k rows of an exact index that pass `keep(rows) -> bool mask`: over-fetch, then a full scan."""
    n = index.ntotal
    fetch = min(n, 4 * k)
    query = np.asarray(query, np.float32).reshape(1, -1)
    while True:
        scores, rows = index.search(query, fetch)
        valid = rows[0] >= 0
        rows, scores = rows[0][valid], scores[0][valid]
        mask = keep(rows)
        if mask.sum() >= k or fetch >= n:
            return [(int(r), float(s)) for r, s in zip(rows[mask][:k], scores[mask][:k])]
        fetch = min(n, fetch * 8)
