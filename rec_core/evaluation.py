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
- Test metrics average over every such user up to `MAX_TEST_USERS`, and over a fixed seeded sample
  of that many above it (`evaluated_users` says how many); hyperparameters are chosen on at most
  `VALIDATION_USERS` validation users.

Baselines, each learned from the train split only and ranking from the same history:
- popularity: train positive counts.
- EASE (Steck 2019): closed-form item-item weights, lambda picked on the validation split. It needs
  a dense float32 Gram matrix over the items and its inverse, memory quadratic in the item count,
  so above `ease_max_items` items it is fit on the most popular train items only and says so.
- ALS (Hu, Koren & Volinsky 2008, `implicit`): the baseline that scales. Confidence is linear,
  `alpha * X` on the binary train matrix (1 on unobserved pairs); with binary input a log scaling
  would only be another value of alpha. Factors, alpha, regularization and iterations are tuned on
  validation recall by a seeded optuna TPE search with a fixed number of trials.
- on synthetic data, the generator's oracle (true affinities): an upper reference, not a model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import optuna
import pandas as pd
import scipy.sparse as sp
import torch
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from rec_core.data.bundle import DataBundle
from rec_core.data.schema import positive_interactions
from rec_core.progress import Progress
from rec_core.ranking import (  # the protocol: defined there, used here and imported from here by callers
    MAX_TEST_USERS,
    VALIDATION_USERS,
    RankingTask,
    ScoreFunction,
    build_ranking_task,
    interaction_matrix,
    ranking_metrics,
)

log = logging.getLogger(__name__)

EASE_LAMBDAS = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)
"""EASE regularization grid (x3 steps); the validation split picks one."""

EASE_MAX_ITEMS = 10_000
"""Above this many items with train interactions EASE keeps the most popular ones. Its time is cubic
and its memory quadratic in the items fit: on the 1M-interaction synthetic set (2 cores) one fit
took 1.2 s at 5k items, 12 s at 10k, 38 s at 15k and 58 s at 20k, holding about 0.2, 0.9, 2.5 and
4.4 GB, and tuning fits six lambdas. 10k keeps EASE near a minute and under 1 GB at any catalog
size; ALS is the baseline for larger catalogs."""

ALS_TRIALS = 12
"""Default optuna budget for ALS: about 30 s on MovieLens-small or the 2000 x 5000 synthetic set on 2 cores."""

ALS_FACTORS = (32, 64, 128, 256)
"""ALS latent dimensions the search chooses from."""


# ---- baselines ----------------------------------------------------------------------------
def popularity_scorer(train: pd.DataFrame, task: RankingTask) -> ScoreFunction:
    """Every user gets the items ranked by their number of positive train interactions."""
    counts = positive_interactions(train)["item_id"].value_counts()
    popularity = counts.reindex(task.item_ids).fillna(0).to_numpy(np.float32)  # [n_items]
    return lambda rows: np.broadcast_to(popularity, (len(rows), len(popularity)))


# ---- EASE ------------------------------------------------------------------------------------
@dataclass
class EASE:
    """Embarrassingly Shallow Autoencoder: item-item weights B = I - P / diag(P), P = (X'X + lambda I)^-1."""

    weights: np.ndarray  # [n_used, n_used] over `active_items`
    active_items: np.ndarray  # positions in the task's item list the model was fit on (never recommends others)
    regularization: float
    restriction: str | None = None  # why EASE left items with train interactions out, if it did

    @classmethod
    def fit(
        cls,
        train_matrix: sp.csr_matrix,
        regularization: float,
        max_items: int = EASE_MAX_ITEMS,
        gram: np.ndarray | None = None,
    ) -> EASE:
        active, restriction = ease_items(train_matrix, max_items)
        if gram is None:
            gram = _gram(train_matrix, active)
        g = torch.from_numpy(gram).to(torch.float32, copy=True)  # the caller's Gram matrix serves every lambda
        g.diagonal().add_(regularization)
        factor = torch.linalg.cholesky(g)  # X'X + lambda I is symmetric positive definite
        del g  # at most three n x n matrices alive at once
        p = torch.cholesky_inverse(factor)
        del factor
        p.div_(-p.diagonal())
        p.fill_diagonal_(0.0)
        return cls(p.numpy(), active, regularization, restriction)

    def scorer(self, task: RankingTask) -> ScoreFunction:
        """Scores = history @ weights with the batch's history made dense: one BLAS product is 3x as fast as
        scipy's single-threaded sparse one (0.5 s against 1.7 s for 671 users at 10k items)."""
        history = task.seen[:, self.active_items].tocsr()

        def score(rows: np.ndarray) -> np.ndarray:
            out = np.full((len(rows), len(task.item_ids)), -np.inf, np.float32)
            out[:, self.active_items] = history[rows].toarray() @ self.weights
            return out

        return score


def ease_items(train_matrix: sp.csr_matrix, max_items: int) -> tuple[np.ndarray, str | None]:
    """(sorted item positions EASE is fit on, the reason for leaving items out or None).

    The items with train interactions, or the `max_items` most popular of them (ties: lower position).
    """
    counts = np.asarray(train_matrix.sum(axis=0)).ravel()
    active = np.flatnonzero(counts > 0)
    if len(active) <= max_items:
        return active, None
    kept = np.sort(active[np.argsort(-counts[active], kind="stable")[:max_items]])
    return kept, (
        f"{len(active)} items have train interactions, above ease_max_items={max_items}: EASE is fit on "
        f"the {max_items} most popular (a dense Gram matrix is quadratic in items) and never recommends the rest"
    )


def _gram(train_matrix: sp.csr_matrix, items: np.ndarray) -> np.ndarray:
    x = train_matrix[:, items]
    return (x.T @ x).toarray().astype(np.float32, copy=False)


def tune_ease(
    train: pd.DataFrame,
    validation_task: RankingTask,
    k: int = 10,
    lambdas: tuple[float, ...] = EASE_LAMBDAS,
    max_items: int = EASE_MAX_ITEMS,
    progress: Progress | None = None,
) -> tuple[EASE, dict[float, float]]:
    """Fits EASE on train positives for each lambda (each reported to `progress`); keeps the best validation recall@k."""
    matrix = interaction_matrix(train, validation_task.item_ids)
    gram = _gram(matrix, ease_items(matrix, max_items)[0])
    progress = (progress or Progress("EASE", unit="lambdas")).start(len(lambdas))
    best, recalls = None, {}
    for lam in lambdas:
        model = EASE.fit(matrix, lam, max_items, gram)
        recalls[lam] = ranking_metrics(model.scorer(validation_task), validation_task, k)[f"recall_at_{k}"]
        if best is None or recalls[lam] > recalls[best.regularization]:
            best = model
        progress.advance(1, note=f"lambda {lam:g}: validation recall {recalls[lam]:.4f}")
    progress.finish()
    return best, recalls


# ---- ALS -------------------------------------------------------------------------------------
@dataclass
class ALS:
    """Implicit-feedback matrix factorization; users are re-encoded from whatever history a task gives."""

    model: AlternatingLeastSquares

    @classmethod
    def fit(
        cls,
        train_matrix: sp.csr_matrix,
        factors: int,
        regularization: float,
        alpha: float,
        iterations: int,
        seed: int = 0,
    ) -> ALS:
        with threadpool_limits(1, "blas"):  # implicit parallelizes itself; threaded BLAS inside it only contends
            model = AlternatingLeastSquares(
                factors=factors, regularization=regularization, alpha=alpha, iterations=iterations, random_state=seed
            )
            model.fit(train_matrix, show_progress=False)
        return cls(model)

    @property
    def params(self) -> dict[str, float]:
        m = self.model
        return {
            "als_factors": float(m.factors),
            "als_regularization": float(m.regularization),
            "als_alpha": float(m.alpha),
            "als_iterations": float(m.iterations),
        }

    def scorer(self, task: RankingTask) -> ScoreFunction:
        item_factors = self.model.item_factors  # [n_items, factors]
        if task.seen.shape[1] != item_factors.shape[0]:
            raise ValueError(f"ALS was fit on {item_factors.shape[0]} items but the task has {task.seen.shape[1]}")
        with threadpool_limits(1, "blas"):  # least squares for each user, from the task's history only
            user_factors = self.model.recalculate_user(np.arange(task.seen.shape[0]), task.seen)  # [n_users, factors]
        return lambda rows: user_factors[rows] @ item_factors.T


def tune_als(
    train: pd.DataFrame,
    validation_task: RankingTask,
    k: int = 10,
    trials: int = ALS_TRIALS,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[ALS, list[dict[str, float]]]:
    """Fits ALS on train positives `trials` times (seeded TPE, each reported to `progress`); keeps the best validation recall@k.

    Returns the best model (already fit on train, so it is scored on test as is) and every trial's
    parameters and validation recall.
    """
    if trials < 1:
        raise ValueError(f"ALS tuning needs at least one trial, got {trials}")
    matrix = interaction_matrix(train, validation_task.item_ids)
    # a third of the budget explores at random, the rest follows the TPE model (optuna's default
    # of 10 random trials would leave a 12-trial budget almost unguided)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, trials // 3), multivariate=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    best: dict = {}
    progress = (progress or Progress("ALS", unit="trials")).start(trials)

    # Regularization is searched relative to alpha: alpha scales every observed term of the loss, so
    # reg / alpha sets the effective strength and the two axes stay nearly independent, which
    # TPE needs. Iterations stop at 30: on MovieLens-small 10, 20 and 50 scored within noise
    # of each other while 50 cost 2.5 times as much.
    def objective(trial: optuna.Trial) -> float:
        alpha = trial.suggest_float("alpha", 1.0, 100.0, log=True)
        model = ALS.fit(
            matrix,
            factors=trial.suggest_categorical("factors", ALS_FACTORS),
            regularization=alpha * trial.suggest_float("regularization_over_alpha", 0.03, 30.0, log=True),
            alpha=alpha,
            iterations=trial.suggest_int("iterations", 10, 30, step=5),
            seed=seed,
        )
        recall = ranking_metrics(model.scorer(validation_task), validation_task, k)[f"recall_at_{k}"]
        if not best or recall > best["recall"]:
            best.update(model=model, recall=recall)
        progress.advance(1, note=f"validation recall {recall:.4f} (best {best['recall']:.4f})")
        return recall

    study.optimize(objective, n_trials=trials)
    progress.finish()
    history = [{**t.params, f"validation_recall_at_{k}": t.value} for t in study.trials]
    return best["model"], history


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
def two_tower_scorer(
    encoder,
    users: pd.DataFrame,
    items: pd.DataFrame,
    task: RankingTask,
    item_text_embeddings: pd.DataFrame | None = None,
    user_text_embeddings: pd.DataFrame | None = None,
    item_clip_embeddings: pd.DataFrame | None = None,
) -> ScoreFunction:
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


def test_split_scores(encoder, data: DataBundle, k: int = 10) -> dict[str, dict[str, float]]:
    """{"two_tower": metrics, "popularity": metrics} on the test split: the release gate's scoring pass, which the
    full comparison reuses rather than scoring the same model twice."""
    test = _test_task(data)
    return {
        "two_tower": ranking_metrics(
            two_tower_scorer(encoder, data.users, data.items, test, **data.embeddings()), test, k
        ),
        "popularity": ranking_metrics(popularity_scorer(data.split("train"), test), test, k),
    }


def _test_task(data: DataBundle) -> RankingTask:
    """The test task of every model: the same users (at most `MAX_TEST_USERS`, seeded) for the gate and the comparison."""
    return build_ranking_task(
        data.interaction_splits, data.items["item_id"].astype(str).tolist(), "test", MAX_TEST_USERS
    )


def compare_with_baselines(
    encoder,
    data: DataBundle,
    oracle=None,
    k: int = 10,
    ease_lambdas: tuple[float, ...] = EASE_LAMBDAS,
    ease_max_items: int = EASE_MAX_ITEMS,
    als_trials: int = ALS_TRIALS,
    seed: int = 0,
    test_scores: dict[str, dict[str, float]] | None = None,
    progress: Progress | None = None,
) -> dict[str, dict[str, float | str]]:
    """Test-split metrics of the two-tower, popularity, EASE and ALS (tuned on validation) and the oracle.

    All models learn from the train split only and rank from the same train + validation
    history, so the comparison is like for like. Besides metrics, "ease" holds its lambda, item
    count and (when restricted) `ease_restriction`, the reason; "als" holds its chosen
    hyperparameters, its trial count and its tuning seconds. EASE and ALS are tuned on at most
    `VALIDATION_USERS` validation users (seeded by `seed`). `test_scores`: the two-tower's and
    popularity's scores when `test_split_scores` already computed them (the release gate's). `progress`
    reports the EASE lambdas and the ALS trials as each finishes.
    """
    progress = progress or Progress("model_evaluation")
    results = dict(test_scores or test_split_scores(encoder, data, k))
    item_ids = data.items["item_id"].astype(str).tolist()
    train = data.split("train")
    test = _test_task(data)
    validation = build_ranking_task(data.interaction_splits, item_ids, "validation", VALIDATION_USERS, seed)
    ease, _ = tune_ease(
        train,
        validation,
        k,
        ease_lambdas,
        ease_max_items,  # the recall per lambda is in tune_ease's result
        progress.stage("EASE", unit="lambdas"),
    )
    results["ease"] = ranking_metrics(ease.scorer(test), test, k) | {
        "ease_lambda": ease.regularization,
        "ease_items": float(len(ease.active_items)),
    }
    if ease.restriction is not None:
        log.warning("EASE: %s", ease.restriction)
        results["ease"]["ease_restriction"] = ease.restriction
    started = time.perf_counter()
    als, trials = tune_als(train, validation, k, als_trials, seed, progress.stage("ALS", unit="trials"))
    tuning_seconds = time.perf_counter() - started
    log.info("ALS: %d trials in %.1f s, chosen %s", len(trials), tuning_seconds, als.params)
    results["als"] = (
        ranking_metrics(als.scorer(test), test, k)
        | als.params
        | {"als_trials": float(len(trials)), "als_tuning_s": tuning_seconds}
    )
    if oracle is not None:
        results["oracle"] = ranking_metrics(oracle_scorer(oracle, test), test, k)
    return results
