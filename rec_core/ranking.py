"""The ranking protocol every model is scored by: who is evaluated on what, and the metrics.

See `rec_core.evaluation` for the protocol in words and the baselines scored by it. Kept apart so
training (early stopping), the baselines and the cold-start report share one definition.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from rec_core.data.schema import positive_interactions

ScoreFunction = Callable[[np.ndarray], np.ndarray]
"""Maps rows of a `RankingTask` (user positions) to scores [len(rows), n_items] over `task.item_ids`.

A writable array that owns its memory is overwritten in place (seen items set to -inf), so a
scorer must not return one it keeps; views and read-only arrays are copied first."""

VALIDATION_USERS = 5000
"""Validation users (a fixed seeded sample when there are more) that rank hyperparameters: the
two-tower's epochs, EASE's lambdas and ALS's trials. Enough to tell settings apart, and every
trial then costs the same at any user count."""

MAX_TEST_USERS = 50_000
"""Test users every model is scored on; above this many, a fixed seeded sample. A pass over 1,000
users costs about 1 s at 200k items on 2 cores (every user is scored against every item), so the
200k-user data would take over 3 minutes per model; the sample's standard error on a recall is at
most 0.0023 (about 0.0013 at recall 0.1). Data up to 10x the default (20k users) is scored whole."""

SCORE_BATCH_BYTES = 128 * 2**20
"""float32 scores held per batch of users by `ranking_metrics`: 671 users at 50k items, 6,710 at 5k."""


@dataclass
class RankingTask:
    """Who is evaluated on what."""

    user_ids: list[str]  # evaluated users: those with at least one held-out positive
    item_ids: list[str]  # the catalog, the columns of every score matrix
    seen: sp.csr_matrix  # [n_users, n_items] binary: the users' input history (never recommended)
    heldout: sp.csr_matrix  # [n_users, n_items] binary: held-out positives
    history: pd.DataFrame  # positive interactions of the input history (all users, for the towers)


def build_ranking_task(
    splits: pd.DataFrame, item_ids: list[str], target: str = "test", max_users: int | None = None, seed: int = 0
) -> RankingTask:
    """The task of predicting `target`-split positives from the earlier splits' positives.

    `max_users` evaluates a fixed random subset of users (for fast per-epoch validation and
    baseline tuning). Pairs are integer codes (user code x catalog size + item position), so
    the cost is a few sorts of the interactions, not a Python object per pair.
    """
    earlier = {"validation": ("train",), "test": ("train", "validation")}[target]
    positives = positive_interactions(splits)
    in_history = positives["split"].isin(earlier).to_numpy()
    history = positives[in_history]
    user_code, user_values = pd.factorize(positives["user_id"])
    item_code = pd.Index(item_ids, dtype=object).get_indexer(positives["item_id"])  # -1: not in the catalog
    in_catalog = item_code >= 0
    pair = user_code.astype(np.int64) * len(item_ids) + item_code
    is_heldout = (positives["split"] == target).to_numpy() & in_catalog
    is_heldout &= ~pd.Series(pair).isin(pair[in_history & in_catalog]).to_numpy()  # in the history: never retrievable
    user_ids = sorted(user_values[np.unique(user_code[is_heldout])])
    if max_users is not None and len(user_ids) > max_users:
        chosen = np.random.default_rng(seed).choice(len(user_ids), max_users, replace=False)
        user_ids = sorted(np.asarray(user_ids, dtype=object)[chosen])
    row_of_code = np.full(len(user_values), -1, np.int64)
    row_of_code[user_values.get_indexer(user_ids)] = np.arange(len(user_ids))
    row = row_of_code[user_code]
    evaluated = (row >= 0) & in_catalog

    def matrix(kept: np.ndarray) -> sp.csr_matrix:
        kept = kept & evaluated
        m = sp.csr_matrix(
            (np.ones(int(kept.sum()), np.float32), (row[kept], item_code[kept])), shape=(len(user_ids), len(item_ids))
        )
        m.data[:] = 1.0  # duplicates collapse to binary
        return m

    return RankingTask(list(user_ids), list(item_ids), matrix(in_history), matrix(is_heldout), history)


def ranking_metrics(
    score: ScoreFunction, task: RankingTask, k: int = 10, batch_bytes: int = SCORE_BATCH_BYTES
) -> dict[str, float]:
    """recall@k, capped recall@k, NDCG@k and coverage@k of a score function on a task.

    Users are scored in batches of about `batch_bytes` of float32 scores. Hits are looked up
    among the held-out (user, item) codes, sorted once, rather than in a dense copy of each batch.
    """
    n_users, n_items = task.heldout.shape
    if n_users == 0:
        raise ValueError("the ranking task has no users with held-out positives")
    heldout = task.heldout.tocsr(copy=True)
    heldout.sum_duplicates()
    heldout.eliminate_zeros()
    n_heldout = np.diff(heldout.indptr).astype(np.int64)  # [n_users]
    heldout_codes = np.sort(np.repeat(np.arange(n_users, dtype=np.int64), n_heldout) * n_items + heldout.indices)
    recall, capped, ndcg = np.zeros(n_users), np.zeros(n_users), np.zeros(n_users)
    recommended = np.zeros(n_items, bool)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))  # [k]
    batch_users = max(1, batch_bytes // (4 * n_items))
    for start in range(0, n_users, batch_users):
        rows = np.arange(start, min(start + batch_users, n_users))
        scores = np.asarray(score(rows), dtype=np.float32)  # [b, n_items]
        if scores.base is not None or not scores.flags.writeable:  # the scorer's own memory, or a view of it
            scores = scores.copy()
        scores[task.seen[rows].nonzero()] = -np.inf
        top = torch.topk(torch.from_numpy(scores), min(k, n_items), dim=1).indices.numpy()  # [b, k]
        del scores
        codes = rows[:, None] * n_items + top  # [b, k]
        found = np.minimum(np.searchsorted(heldout_codes, codes), max(len(heldout_codes) - 1, 0))
        hits = heldout_codes[found] == codes if len(heldout_codes) else np.zeros(codes.shape, bool)  # [b, k]
        batch_heldout = n_heldout[rows]
        recall[rows] = hits.sum(1) / batch_heldout
        capped[rows] = hits.sum(1) / np.minimum(k, batch_heldout)
        ideal = np.cumsum(discounts)[np.minimum(k, batch_heldout) - 1]
        ndcg[rows] = (hits * discounts[: hits.shape[1]]).sum(1) / ideal
        recommended[top.ravel()] = True
    return {
        f"recall_at_{k}": float(recall.mean()),
        f"recall_capped_at_{k}": float(capped.mean()),
        f"ndcg_at_{k}": float(ndcg.mean()),
        f"coverage_at_{k}": float(recommended.mean()),
        "evaluated_users": float(n_users),
    }


def interaction_matrix(interactions: pd.DataFrame, item_ids: list[str]) -> sp.csr_matrix:
    """Binary [n_users, n_items] matrix of positive interactions (users in sorted order)."""
    positives = positive_interactions(interactions)
    positives = positives[positives["item_id"].isin(set(item_ids))]
    users = pd.Index(sorted(positives["user_id"].unique()), dtype=object)
    items = pd.Series(np.arange(len(item_ids)), index=pd.Index(item_ids, dtype=object))
    rows = users.get_indexer(positives["user_id"])
    cols = items[positives["item_id"]].to_numpy()
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(users), len(item_ids)))
    m.data[:] = 1.0
    return m
