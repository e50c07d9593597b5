"""Cold-item retrieval: how well models rank items that have no training interactions at all.

Pairs with the `cold-items` split (`rec_core.data.splits`), where a seeded share of the items
has every interaction in test. Protocol, chosen so that the question is "which of the new
items will this user like" rather than "new or old item":
- Candidates are the cold items only: each score matrix ranks the cold items among themselves.
  Ranking them against the whole catalog would mostly measure how far a model pushes items
  without an id embedding down below the popular warm ones.
- Evaluated users are those with at least one held-out positive on a cold item and at least one
  positive in train + validation (a user with no history is a cold-user problem, not this one).
- A user's history is their train + validation positives, as in `rec_core.evaluation`.

Models compared (recall@k, NDCG@k, coverage@k as in `ranking_metrics`):
- `two_tower`: the trained encoder. Items absent from the train split get id row 0 in the fitted
  preprocessing (`FittedPreprocessing.item_id_index`), so the item tower sees their content
  (text, category, numbers) with the id path off.
- `content`: cosine between an item's text vector (name and description embeddings joined) and
  the mean text vector of the user's history items; no training at all.
- `random`: seeded random scores, the floor.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rec_core.data.schema import positive_interactions
from rec_core.embeddings import embedding_matrix
from rec_core.evaluation import RankingTask, ScoreFunction, build_ranking_task, ranking_metrics, two_tower_scorer

TEXT_VECTOR_COLUMNS = ("name_embedding", "description_embedding")
"""The columns of an item text embedding table that make up an item's text vector."""


def cold_item_task(splits: pd.DataFrame, cold_item_ids: list[str]) -> RankingTask:
    """The test task restricted to cold-item candidates and to users with a history (see the module doc)."""
    earlier = splits["split"].isin(("train", "validation"))
    users_with_history = set(positive_interactions(splits[earlier])["user_id"])
    kept = earlier | splits["user_id"].isin(users_with_history)
    return build_ranking_task(splits[kept], sorted(str(i) for i in cold_item_ids), "test")


def item_text_vectors(item_text_embeddings: pd.DataFrame, item_ids: list[str]) -> np.ndarray:
    """[len(item_ids), 2 * dim] float32 unit rows: name and description embeddings side by side.

    With unit name and description vectors the cosine of two joined rows is the mean of the name
    and description cosines. Items without a row (or with all-zero text) get the zero vector.
    """
    table = item_text_embeddings.drop_duplicates("item_id", keep="last")
    table = table.set_index(table["item_id"].astype(str))
    joined = np.concatenate([embedding_matrix(table, column) for column in TEXT_VECTOR_COLUMNS], axis=1)
    positions = table.index.get_indexer(pd.Index(item_ids, dtype=object))
    out = np.zeros((len(item_ids), joined.shape[1]), np.float32)
    out[positions >= 0] = joined[positions[positions >= 0]]
    return _unit_rows(out)


def content_scorer(item_text_embeddings: pd.DataFrame, task: RankingTask) -> ScoreFunction:
    """Cosine between each candidate's text vector and the mean text vector of the user's history items."""
    candidates = item_text_vectors(item_text_embeddings, task.item_ids)  # [n_items, 2d]
    history = task.history[task.history["user_id"].isin(set(task.user_ids))]
    history_items = sorted(history["item_id"].astype(str).unique())
    history_vectors = item_text_vectors(item_text_embeddings, history_items)  # [n_history_items, 2d]
    users = pd.Index(task.user_ids, dtype=object)
    profiles = np.zeros((len(users), candidates.shape[1]), np.float32)  # [n_users, 2d]
    counts = np.zeros(len(users), np.float32)
    pairs = history[["user_id", "item_id"]].astype(str).drop_duplicates()
    rows = users.get_indexer(pairs["user_id"])
    np.add.at(profiles, rows, history_vectors[pd.Index(history_items).get_indexer(pairs["item_id"])])
    np.add.at(counts, rows, 1.0)
    profiles = _unit_rows(profiles / np.maximum(counts, 1.0)[:, None])  # the mean's direction: cosine needs no more
    return lambda user_rows: profiles[user_rows] @ candidates.T


def random_scorer(task: RankingTask, seed: int = 0) -> ScoreFunction:
    """Seeded uniform random scores: the same user rows get the same scores on every call."""
    scores = np.random.default_rng(seed).random((len(task.user_ids), len(task.item_ids)), dtype=np.float32)
    return lambda user_rows: scores[user_rows]


def cold_item_metrics(
    encoder,
    users: pd.DataFrame,
    items: pd.DataFrame,
    splits: pd.DataFrame,
    cold_item_ids: list[str],
    item_text_embeddings: pd.DataFrame,
    k: int = 10,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """{"two_tower" | "content" | "random": ranking metrics} on the cold-item task (see the module doc).

    `encoder` is a `rec_core.inference.TwoTowerEncoder`; `item_text_embeddings` holds the
    `TEXT_VECTOR_COLUMNS` per item_id, the same table the two-tower was trained with.
    """
    task = cold_item_task(splits, cold_item_ids)
    cold_items = items[items["item_id"].astype(str).isin(set(task.item_ids))]
    return {
        "two_tower": ranking_metrics(two_tower_scorer(encoder, users, cold_items, task, item_text_embeddings), task, k),
        "content": ranking_metrics(content_scorer(item_text_embeddings, task), task, k),
        "random": ranking_metrics(random_scorer(task, seed), task, k),
    }


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms > 0, norms, 1.0)).astype(np.float32)
