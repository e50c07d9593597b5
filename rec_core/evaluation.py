"""Offline retrieval metrics and the baselines every trained model is compared with.

Protocol (the same for the two-tower and every baseline, so numbers are comparable):
- Relevance is binary: a held-out interaction of a positive type (`POSITIVE_INTERACTION_TYPES`).
- Each evaluated user's input history is their positive interactions in the earlier splits
  (train for validation; train + validation for test). Items in that history are never
  recommended, and held-out items the user already has in that history are dropped (they can
  never be retrieved, so they would only lower every model equally).
- recall@k = hits in the top k / the user's held-out items, averaged over users with held-out
  items; `recall_capped` divides by min(k, held-out) instead; NDCG@k uses binary gains;
  coverage@k = distinct items in anyone's top k / catalog size.

Baselines: popularity (train counts), EASE (Steck 2019, closed form, lambda chosen on the
validation split), and on synthetic data the generator's oracle (true affinities).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from rec_core.data.schema import positive_interactions

ScoreFunction = Callable[[np.ndarray], np.ndarray]
"""Maps rows of a `RankingTask` (user positions) to scores [len(rows), n_items] over `task.item_ids`."""

EASE_LAMBDAS = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)
"""EASE regularization grid (x3 steps); the validation split picks one."""


@dataclass
class RankingTask:
    """Who is evaluated on what."""

    user_ids: list[str]  # evaluated users: those with at least one held-out positive
    item_ids: list[str]  # the catalog, the columns of every score matrix
    seen: sp.csr_matrix  # [n_users, n_items] binary: the users' input history (never recommended)
    heldout: sp.csr_matrix  # [n_users, n_items] binary: held-out positives
    history: pd.DataFrame  # positive interactions of the input history (all users, for the towers)


def build_ranking_task(splits: pd.DataFrame, item_ids: list[str], target: str = "test", max_users: int | None = None,
                       seed: int = 0) -> RankingTask:
    """The task of predicting `target`-split positives from the earlier splits' positives.

    `max_users` evaluates a fixed random subset of users (for fast per-epoch validation).
    """
    earlier = {"validation": ("train",), "test": ("train", "validation")}[target]
    positives = positive_interactions(splits)
    history = positives[positives["split"].isin(earlier)]
    heldout = positives[positives["split"] == target]
    item_position = pd.Series(np.arange(len(item_ids)), index=pd.Index(item_ids, dtype=object))
    heldout = heldout[heldout["item_id"].isin(item_position.index)]
    seen_pairs = set(zip(history["user_id"], history["item_id"]))
    heldout = heldout[[pair not in seen_pairs for pair in zip(heldout["user_id"], heldout["item_id"])]]
    user_ids = sorted(heldout["user_id"].unique())
    if max_users is not None and len(user_ids) > max_users:
        chosen = np.random.default_rng(seed).choice(len(user_ids), max_users, replace=False)
        user_ids = sorted(np.asarray(user_ids, dtype=object)[chosen])
    user_position = pd.Series(np.arange(len(user_ids)), index=pd.Index(user_ids, dtype=object))

    def matrix(frame: pd.DataFrame) -> sp.csr_matrix:
        frame = frame[frame["user_id"].isin(user_position.index) & frame["item_id"].isin(item_position.index)]
        rows = user_position[frame["user_id"]].to_numpy()
        cols = item_position[frame["item_id"]].to_numpy()
        m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(user_ids), len(item_ids)))
        m.data[:] = 1.0  # duplicates collapse to binary
        return m

    return RankingTask(list(user_ids), list(item_ids), matrix(history), matrix(heldout), history)


def ranking_metrics(score: ScoreFunction, task: RankingTask, k: int = 10, batch_users: int = 1024) -> dict[str, float]:
    """recall@k, capped recall@k, NDCG@k and coverage@k of a score function on a task."""
    n_users, n_items = task.heldout.shape
    if n_users == 0:
        raise ValueError("the ranking task has no users with held-out positives")
    recall, capped, ndcg = np.zeros(n_users), np.zeros(n_users), np.zeros(n_users)
    recommended = np.zeros(n_items, bool)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))  # [k]
    for start in range(0, n_users, batch_users):
        rows = np.arange(start, min(start + batch_users, n_users))
        scores = np.asarray(score(rows), dtype=np.float32).copy()  # [b, n_items]
        seen = task.seen[rows]
        scores[seen.nonzero()] = -np.inf
        top = torch.topk(torch.from_numpy(scores), min(k, n_items), dim=1).indices.numpy()  # [b, k]
        heldout = task.heldout[rows]
        hits = np.take_along_axis(heldout.toarray(), top, axis=1) > 0  # [b, k]
        n_heldout = np.asarray(heldout.sum(axis=1)).ravel().astype(np.int64)
        recall[rows] = hits.sum(1) / n_heldout
        capped[rows] = hits.sum(1) / np.minimum(k, n_heldout)
        ideal = np.cumsum(discounts)[np.minimum(k, n_heldout) - 1]
        ndcg[rows] = (hits * discounts[: hits.shape[1]]).sum(1) / ideal
        recommended[top.ravel()] = True
    return {
        f"recall_at_{k}": float(recall.mean()),
        f"recall_capped_at_{k}": float(capped.mean()),
        f"ndcg_at_{k}": float(ndcg.mean()),
        f"coverage_at_{k}": float(recommended.mean()),
        "evaluated_users": float(n_users),
    }


# ---- baselines ----------------------------------------------------------------------------
def popularity_scorer(train: pd.DataFrame, task: RankingTask) -> ScoreFunction:
    """Every user gets the items ranked by their number of positive train interactions."""
    counts = positive_interactions(train)["item_id"].value_counts()
    popularity = counts.reindex(task.item_ids).fillna(0).to_numpy(np.float32)  # [n_items]
    return lambda rows: np.broadcast_to(popularity, (len(rows), len(popularity)))


@dataclass
class EASE:
    """Embarrassingly Shallow Autoencoder: item-item weights B = I - P / diag(P), P = (X'X + lambda I)^-1."""

    weights: np.ndarray  # [n_active, n_active] over `active_items`
    active_items: np.ndarray  # positions in the task's item list that have train interactions
    regularization: float

    @classmethod
    def fit(cls, train_matrix: sp.csr_matrix, regularization: float, gram: np.ndarray | None = None) -> "EASE":
        active = np.flatnonzero(np.asarray(train_matrix.sum(axis=0)).ravel() > 0)
        if gram is None:
            gram = _gram(train_matrix, active)
        g = torch.from_numpy(gram).to(torch.float32)
        g.diagonal().add_(regularization)
        p = torch.cholesky_inverse(torch.linalg.cholesky(g))  # X'X + lambda I is symmetric positive definite
        b = p / (-p.diagonal())
        b.fill_diagonal_(0.0)
        return cls(b.numpy(), active, regularization)

    def scorer(self, task: RankingTask) -> ScoreFunction:
        history = task.seen[:, self.active_items].tocsr()

        def score(rows: np.ndarray) -> np.ndarray:
            out = np.zeros((len(rows), len(task.item_ids)), np.float32)
            out[:, self.active_items] = history[rows] @ self.weights
            return out

        return score


def _gram(train_matrix: sp.csr_matrix, active: np.ndarray) -> np.ndarray:
    x = train_matrix[:, active]
    return (x.T @ x).toarray().astype(np.float32)


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


def tune_ease(train: pd.DataFrame, validation_task: RankingTask, k: int = 10,
              lambdas: tuple[float, ...] = EASE_LAMBDAS) -> tuple[EASE, dict[float, float]]:
    """Fits EASE on train positives for each lambda; keeps the best validation recall@k."""
    matrix = interaction_matrix(train, validation_task.item_ids)
    active = np.flatnonzero(np.asarray(matrix.sum(axis=0)).ravel() > 0)
    gram = _gram(matrix, active)
    best, recalls = None, {}
    for lam in lambdas:
        model = EASE.fit(matrix, lam, gram)
        recalls[lam] = ranking_metrics(model.scorer(validation_task), validation_task, k)[f"recall_at_{k}"]
        if best is None or recalls[lam] > recalls[best.regularization]:
            best = model
    return best, recalls


def oracle_scorer(oracle, task: RankingTask) -> ScoreFunction:
    """The data generator's true affinities (synthetic data only): an upper reference, not a model."""
    columns = pd.Index(list(oracle.item_ids), dtype=object).get_indexer(task.item_ids)
    if (columns < 0).any():
        raise ValueError(f"the oracle does not score {int((columns < 0).sum())} catalog item(s)")
    users = np.asarray(task.user_ids, dtype=object)

    def score(rows: np.ndarray) -> np.ndarray:
        return np.asarray(oracle.score(list(users[rows])), dtype=np.float32)[:, columns]

    return score


def baseline_table(results: dict[str, dict[str, float]], k: int = 10) -> str:
    """A markdown table of models by recall@k, capped recall, NDCG@k and coverage@k."""
    lines = [f"| model | recall@{k} | recall_capped@{k} | NDCG@{k} | coverage@{k} |", "|---|---|---|---|---|"]
    for name, m in sorted(results.items(), key=lambda kv: -kv[1][f"recall_at_{k}"]):
        lines.append(
            f"| {name} | {m[f'recall_at_{k}']:.4f} | {m[f'recall_capped_at_{k}']:.4f} | {m[f'ndcg_at_{k}']:.4f} | {m[f'coverage_at_{k}']:.4f} |"
        )
    return "\n".join(lines)


# ---- the two-tower on a task, and the full comparison ----------------------------------------
def two_tower_scorer(encoder, users: pd.DataFrame, items: pd.DataFrame, task: RankingTask,
                     item_text_embeddings: pd.DataFrame | None = None, user_text_embeddings: pd.DataFrame | None = None,
                     item_clip_embeddings: pd.DataFrame | None = None) -> ScoreFunction:
    """Scores of a `rec_core.inference.TwoTowerEncoder`: users encoded from the task's history."""
    item_ids, item_vectors = encoder.encode_items(items, item_text_embeddings, item_clip_embeddings)
    item_vectors = item_vectors[pd.Index(item_ids, dtype=object).get_indexer(task.item_ids)]  # [n_items, D]
    task_users = users[users["user_id"].isin(set(task.user_ids))]
    user_ids, user_vectors = encoder.encode_users(task_users, task.history, user_text_embeddings)
    missing = len(task.user_ids) - len(user_ids)
    if missing:
        raise ValueError(f"users: {missing} evaluated user(s) are missing from the users table")
    user_vectors = user_vectors[pd.Index(user_ids, dtype=object).get_indexer(task.user_ids)]  # [n_users, D]
    return lambda rows: user_vectors[rows] @ item_vectors.T


def _two_tower_and_popularity(encoder, users: pd.DataFrame, items: pd.DataFrame, splits: pd.DataFrame,
                              item_text_embeddings, user_text_embeddings, item_clip_embeddings, k: int):
    """(train rows, test task, {"two_tower": metrics, "popularity": metrics}) on the test split."""
    train = splits[splits["split"] == "train"]
    test = build_ranking_task(splits, items["item_id"].astype(str).tolist(), "test")
    results = {
        "two_tower": ranking_metrics(two_tower_scorer(encoder, users, items, test, item_text_embeddings,
                                                      user_text_embeddings, item_clip_embeddings), test, k),
        "popularity": ranking_metrics(popularity_scorer(train, test), test, k),
    }
    return train, test, results


def compare_with_baselines(encoder, users: pd.DataFrame, items: pd.DataFrame, splits: pd.DataFrame,
                           item_text_embeddings: pd.DataFrame | None = None,
                           user_text_embeddings: pd.DataFrame | None = None,
                           item_clip_embeddings: pd.DataFrame | None = None,
                           oracle=None, k: int = 10, ease_lambdas: tuple[float, ...] = EASE_LAMBDAS) -> dict[str, dict[str, float]]:
    """Test-split metrics of the two-tower, popularity, EASE (lambda tuned on validation) and the oracle.

    All models learn from the train split only and rank from the same train + validation
    history, so the comparison is like for like.
    """
    train, test, results = _two_tower_and_popularity(encoder, users, items, splits, item_text_embeddings,
                                                     user_text_embeddings, item_clip_embeddings, k)
    validation = build_ranking_task(splits, items["item_id"].astype(str).tolist(), "validation")
    ease, _ = tune_ease(train, validation, k, ease_lambdas)  # the recall per lambda is in tune_ease's result
    results["ease"] = ranking_metrics(ease.scorer(test), test, k) | {"ease_lambda": ease.regularization}
    if oracle is not None:
        results["oracle"] = ranking_metrics(oracle_scorer(oracle, test), test, k)
    return results


def popularity_gate(encoder, users: pd.DataFrame, items: pd.DataFrame, splits: pd.DataFrame,
                    item_text_embeddings: pd.DataFrame | None = None, user_text_embeddings: pd.DataFrame | None = None,
                    item_clip_embeddings: pd.DataFrame | None = None, k: int = 10) -> dict[str, float]:
    """Test recall@k of a trained encoder and of popularity; `passed` = 1.0 when the model is strictly better.

    The release gate: a model that cannot beat "recommend the bestsellers" must not be served.
    """
    _, _, results = _two_tower_and_popularity(encoder, users, items, splits, item_text_embeddings,
                                              user_text_embeddings, item_clip_embeddings, k)
    model, popularity = results["two_tower"][f"recall_at_{k}"], results["popularity"][f"recall_at_{k}"]
    return {f"two_tower_recall_at_{k}": model, f"popularity_recall_at_{k}": popularity, "passed": float(model > popularity)}
