"""Evaluation: metrics computed by hand, EASE's closed form and item bound, tuned ALS, baselines, and the release gate."""

import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from rec_core.data.bundle import DataBundle
from rec_core.data.schema import POSITIVE_INTERACTION_TYPES
from rec_core.data.splits import split_interactions
from rec_core.evaluation import (
    ALS_FACTORS,
    EASE,
    RankingTask,
    build_ranking_task,
    compare_with_baselines,
    interaction_matrix,
    popularity_scorer,
    ranking_metrics,
    tune_als,
    tune_ease,
)


def _task(seen: list[list[int]], heldout: list[list[int]], n_items: int) -> RankingTask:
    def matrix(rows):
        r = [i for i, cols in enumerate(rows) for _ in cols]
        c = [col for cols in rows for col in cols]
        return sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(rows), n_items))

    return RankingTask(
        [f"u{i}" for i in range(len(seen))],
        [f"i{j}" for j in range(n_items)],
        matrix(seen),
        matrix(heldout),
        pd.DataFrame(),
    )


def test_metrics_match_hand_computation():
    # user 0 has seen item 0 (excluded even though it scores highest); held out: items 1, 4
    # user 1 has seen nothing; held out: item 3
    task = _task(seen=[[0], []], heldout=[[1, 4], [3]], n_items=6)
    scores = np.array(
        [
            [9.0, 8.0, 7.0, 6.0, 0.0, 0.0],  # top 2 after exclusion: 1, 2 -> one hit at rank 1
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        ]
    )  # top 2: 5, 4 -> no hit
    m = ranking_metrics(lambda rows: scores[rows], task, k=2)
    assert m["recall_at_2"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["recall_capped_at_2"] == pytest.approx((1 / 2 + 0) / 2)
    ideal_user0 = 1 + 1 / np.log2(3)
    assert m["ndcg_at_2"] == pytest.approx((1 / ideal_user0 + 0) / 2)
    assert m["coverage_at_2"] == pytest.approx(4 / 6)  # items 1, 2, 5, 4
    # recall divides by all held-out items; capped recall by min(k, held-out)
    k1 = ranking_metrics(lambda rows: scores[rows], task, k=1)
    assert k1["recall_at_1"] == pytest.approx(0.25) and k1["recall_capped_at_1"] == pytest.approx(0.5)


def test_ranking_task_drops_reinteractions_and_users_without_heldout():
    frame = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "b", "c"],
            "item_id": ["x", "y", "x", "y", "z", "z"],
            "interaction_type": ["purchase", "cart", "rate", "negative_view", "purchase", "purchase"],
            "split": ["train", "train", "test", "test", "train", "train"],
            "timestamp": pd.to_datetime([0, 1, 2, 3, 4, 5], unit="s", utc=True),
        }
    )
    task = build_ranking_task(frame, ["x", "y", "z"], "test")
    # a's test item x was already seen; b's test row is a negative view; c has no test rows
    assert task.user_ids == []
    frame.loc[2, "item_id"] = "z"
    task = build_ranking_task(frame, ["x", "y", "z"], "test")
    assert task.user_ids == ["a"] and task.heldout.toarray().tolist() == [[0, 0, 1]]
    assert task.seen.toarray().tolist() == [[1, 1, 0]]


def _reference_task(frame: pd.DataFrame, item_ids: list[str], target: str) -> tuple[list, set, set]:
    """(evaluated users, seen pairs, held-out pairs) of `build_ranking_task`, pair by pair in plain Python."""
    rows = list(zip(frame["user_id"], frame["item_id"], frame["interaction_type"], frame["split"], strict=True))
    earlier = {"validation": {"train"}, "test": {"train", "validation"}}[target]
    history = {(u, i) for u, i, kind, s in rows if kind in POSITIVE_INTERACTION_TYPES and s in earlier}
    heldout = {
        (u, i)
        for u, i, kind, s in rows
        if kind in POSITIVE_INTERACTION_TYPES and s == target and i in set(item_ids) and (u, i) not in history
    }
    users = sorted({u for u, _ in heldout})
    seen = {(u, i) for u, i in history if u in set(users) and i in set(item_ids)}
    return users, seen, heldout


def _pairs(task: RankingTask, matrix: sp.csr_matrix) -> set:
    rows, cols = matrix.nonzero()
    return {(task.user_ids[r], task.item_ids[c]) for r, c in zip(rows, cols, strict=True)}


@pytest.mark.parametrize("target", ["validation", "test"])
def test_ranking_task_matches_a_pair_by_pair_reference(target):
    rng = np.random.default_rng(3)
    n = 3000
    frame = pd.DataFrame(
        {
            "user_id": [f"u{v}" for v in rng.integers(0, 150, n)],
            "item_id": [f"i{v}" for v in rng.integers(0, 60, n)],  # i50..i59 are not in the catalog
            "interaction_type": rng.choice(["purchase", "cart", "rate", "negative_view"], n),
            "split": rng.choice(["train", "validation", "test"], n, p=[0.6, 0.15, 0.25]),
            "timestamp": pd.to_datetime(np.arange(n), unit="s", utc=True),
        }
    )
    item_ids = [f"i{v}" for v in range(50)][::-1]  # catalog order is not id order
    task = build_ranking_task(frame, item_ids, target)
    users, seen, heldout = _reference_task(frame, item_ids, target)
    assert task.user_ids == users and 0 < len(users) < 150
    assert _pairs(task, task.seen) == seen and _pairs(task, task.heldout) == heldout
    assert set(task.seen.data) == set(task.heldout.data) == {1.0}
    sample = build_ranking_task(frame, item_ids, target, max_users=40, seed=1)
    assert (
        len(sample.user_ids) == 40 and set(sample.user_ids) <= set(users) and sample.user_ids == sorted(sample.user_ids)
    )
    assert _pairs(sample, sample.heldout) == {(u, i) for u, i in heldout if u in set(sample.user_ids)}
    assert build_ranking_task(frame, item_ids, target, max_users=40, seed=1).user_ids == sample.user_ids


def test_metrics_do_not_depend_on_the_batch_size_and_leave_the_scorer_alone():
    rng = np.random.default_rng(0)
    n_users, n_items = 50, 40
    seen = [rng.choice(n_items, rng.integers(0, 6), replace=False).tolist() for _ in range(n_users)]
    heldout = [
        rng.choice(np.setdiff1d(np.arange(n_items), s), rng.integers(1, 5), replace=False).tolist() for s in seen
    ]
    task = _task(seen, heldout, n_items)
    stored = rng.random((n_users, n_items)).astype(np.float32)
    kept = stored.copy()
    whole = ranking_metrics(lambda rows: stored[rows[0] : rows[-1] + 1], task, k=5)  # views of the scorer's matrix
    assert np.array_equal(stored, kept)  # seen items were masked in a copy
    one_row = ranking_metrics(lambda rows: stored[rows], task, k=5, batch_bytes=4 * n_items)  # one user per batch
    assert one_row == whole
    # the dense reference: mask seen, take the top k, count held-out hits
    masked = np.where(task.seen.toarray() > 0, -np.inf, stored)
    top = np.argsort(-masked, axis=1, kind="stable")[:, :5]
    hits = np.take_along_axis(task.heldout.toarray(), top, axis=1) > 0
    assert whole["recall_at_5"] == pytest.approx(np.mean(hits.sum(1) / task.heldout.toarray().sum(1)))


def test_ease_matches_the_closed_form():
    rng = np.random.default_rng(0)
    x = sp.csr_matrix((rng.random((40, 12)) < 0.3).astype(np.float32))
    model = EASE.fit(x, regularization=5.0)
    dense = x.toarray().astype(np.float64)
    p = np.linalg.inv(dense.T @ dense + 5.0 * np.eye(12))
    expected = np.eye(12) - p / np.diag(p)
    active = model.active_items
    assert np.allclose(model.weights, expected[np.ix_(active, active)], atol=1e-4)
    assert np.allclose(np.diag(model.weights), 0.0)


def test_ease_and_popularity_beat_chance_and_lambda_is_tuned(small_dataset):
    splits = split_interactions(small_dataset.interactions, method="random", seed=0)
    item_ids = small_dataset.items["item_id"].tolist()
    validation, test = build_ranking_task(splits, item_ids, "validation"), build_ranking_task(splits, item_ids, "test")
    train = splits[splits["split"] == "train"]
    ease, recalls = tune_ease(train, validation, lambdas=(1.0, 30.0, 1000.0))
    assert ease.regularization == max(recalls, key=recalls.get)
    chance = ranking_metrics(lambda rows: np.random.default_rng(0).random((len(rows), len(item_ids))), test)
    popularity = ranking_metrics(popularity_scorer(train, test), test)
    assert (
        ranking_metrics(ease.scorer(test), test)["recall_at_10"] > popularity["recall_at_10"] > chance["recall_at_10"]
    )
    assert interaction_matrix(train, item_ids).shape[1] == len(item_ids)


def test_ease_fit_leaves_a_shared_gram_matrix_unregularized():
    # tune_ease hands one Gram matrix to every lambda's fit: each must start from X'X, not the last lambda's
    x = sp.csr_matrix((np.random.default_rng(0).random((40, 12)) < 0.3).astype(np.float32))
    gram = (x.T @ x).toarray().astype(np.float32)
    kept = gram.copy()
    for lam in (5.0, 50.0):
        assert np.allclose(EASE.fit(x, lam, gram=gram).weights, EASE.fit(x, lam).weights, atol=1e-6)
    assert np.array_equal(gram, kept)


def test_ease_above_max_items_keeps_the_most_popular_and_says_why():
    # item at position perm[j] is liked by users 0..j, so popularity is j + 1 (all distinct)
    n_users, n_items, max_items = 40, 30, 10
    perm = np.random.default_rng(1).permutation(n_items)
    dense = np.zeros((n_users, n_items), np.float32)
    for j in range(n_items):
        dense[: j + 1, perm[j]] = 1.0
    model = EASE.fit(sp.csr_matrix(dense), regularization=1.0, max_items=max_items)
    popular = set(perm[n_items - max_items :].tolist())
    assert set(model.active_items.tolist()) == popular and model.weights.shape == (max_items, max_items)
    assert "30 items" in model.restriction and "ease_max_items=10" in model.restriction
    assert EASE.fit(sp.csr_matrix(dense), regularization=1.0, max_items=n_items).restriction is None

    # every user has seen two items (one popular, one not); the top 5 of the rest are popular items only
    seen = [[int(perm[u % 20]), int(perm[29 - u % 10])] for u in range(n_users)]
    task = _task(seen=seen, heldout=[[int(perm[0])]] * n_users, n_items=n_items)
    scores = model.scorer(task)(np.arange(n_users))
    outside = sorted(set(range(n_items)) - popular)
    assert np.isneginf(scores[:, outside]).all()
    scores[task.seen.nonzero()] = -np.inf
    assert set(np.argsort(-scores, axis=1)[:, :5].ravel().tolist()) <= popular


def test_tune_ease_restricted_to_popular_items(small_dataset):
    splits = split_interactions(small_dataset.interactions, method="random", seed=0)
    item_ids = small_dataset.items["item_id"].tolist()
    validation = build_ranking_task(splits, item_ids, "validation")
    train = splits[splits["split"] == "train"]
    ease, _ = tune_ease(train, validation, lambdas=(30.0,), max_items=100)
    counts = np.asarray(interaction_matrix(train, item_ids).sum(axis=0)).ravel()
    assert len(ease.active_items) == 100 and ease.restriction is not None
    assert counts[ease.active_items].min() >= np.delete(counts, ease.active_items).max()


@pytest.fixture(scope="module")
def als_setup(small_dataset):
    splits = split_interactions(small_dataset.interactions, method="random", seed=0)
    item_ids = small_dataset.items["item_id"].tolist()
    validation, test = build_ranking_task(splits, item_ids, "validation"), build_ranking_task(splits, item_ids, "test")
    train = splits[splits["split"] == "train"]
    return train, validation, test, tune_als(train, validation, trials=4, seed=0)


def test_tuned_als_beats_popularity(als_setup):
    train, validation, test, (als, trials) = als_setup
    assert len(trials) == 4 and all(0.0 <= t["validation_recall_at_10"] <= 1.0 for t in trials)
    assert als.params["als_factors"] in ALS_FACTORS and 10 <= als.params["als_iterations"] <= 30
    best = max(t["validation_recall_at_10"] for t in trials)
    assert ranking_metrics(als.scorer(validation), validation)["recall_at_10"] == pytest.approx(best)
    popularity = ranking_metrics(popularity_scorer(train, test), test)["recall_at_10"]
    assert ranking_metrics(als.scorer(test), test)["recall_at_10"] > popularity


def test_als_tuning_is_deterministic_for_a_seed(als_setup):
    train, validation, test, (als, trials) = als_setup
    again, trials_again = tune_als(train, validation, trials=4, seed=0)
    assert trials_again == trials and again.params == als.params
    assert ranking_metrics(again.scorer(test), test) == ranking_metrics(als.scorer(test), test)


def test_als_encodes_users_from_the_task_history_only(als_setup):
    _, _, test, (als, _) = als_setup
    emptied = sp.lil_matrix(test.seen)
    emptied[0, :] = 0
    blank = RankingTask(test.user_ids, test.item_ids, sp.csr_matrix(emptied), test.heldout, test.history)
    rows = np.array([0, 1])
    assert np.allclose(als.scorer(blank)(rows)[0], 0.0) and not np.allclose(als.scorer(test)(rows)[0], 0.0)
    assert np.allclose(als.scorer(blank)(rows)[1], als.scorer(test)(rows)[1], atol=1e-5)
    narrow = RankingTask(test.user_ids, test.item_ids[:-1], test.seen[:, :-1], test.heldout[:, :-1], test.history)
    with pytest.raises(ValueError, match="ALS was fit on"):
        als.scorer(narrow)


@pytest.fixture(scope="module")
def model_assets(small_dataset, tmp_path_factory):
    """The `two_tower_model` asset materialized for the small synthetic dataset."""
    from rec_assets.assets.model import TwoTowerTrainingConfig, two_tower_model
    from rec_assets.resources import ArtifactStore, DeviceResource

    root = tmp_path_factory.mktemp("artifacts")
    artifacts = ArtifactStore(root=str(root))
    inputs = {
        "interaction_splits": split_interactions(small_dataset.interactions, method="time"),
        "users": small_dataset.users,
        "items": small_dataset.items,
        "item_text_embeddings": pd.DataFrame(columns=["item_id", "name_embedding", "description_embedding"]),
        "user_text_embeddings": pd.DataFrame(columns=["user_id", "preferences_embedding"]),
        "item_clip_embeddings": pd.DataFrame(columns=["item_id", "clip_embedding"]),
    }
    result = two_tower_model(
        context=dg.build_asset_context(),
        config=TwoTowerTrainingConfig(max_epochs=10),
        artifacts=artifacts,
        device=DeviceResource(device="cpu"),
        **inputs,
    )
    return artifacts, inputs, result


def test_model_asset_writes_a_pickle_free_artifact_with_metadata(model_assets):
    artifacts, _, result = model_assets
    directory = artifacts.path("two_tower_model")
    names = sorted(p.name for p in directory.iterdir())
    assert {"model.safetensors", "model_config.json", "preprocessing.json", "metrics.json"} <= set(names)
    assert all(name.endswith((".json", ".safetensors")) for name in names)
    metrics = json.loads((directory / "metrics.json").read_text())
    assert 0.0 < metrics["validation_recall_at_10"] <= 1.0
    assert isinstance(result.metadata["validation_recall_at_10"], float)
    assert "data:image/png;base64," in result.metadata["training_curve"].value


def test_blocking_check_passes_a_trained_model_and_stops_a_broken_one(model_assets):
    from safetensors.torch import load_file, save_file

    from rec_assets.assets.model import two_tower_beats_popularity

    artifacts, inputs, _ = model_assets
    spec = next(iter(two_tower_beats_popularity.check_specs))
    assert spec.blocking
    good = two_tower_beats_popularity(artifacts=artifacts, **inputs)
    assert good.passed
    assert good.metadata["two_tower_recall_at_10"].value > good.metadata["popularity_recall_at_10"].value

    # deliberately break the model: every weight zero, so every item gets the same score
    weights_file = artifacts.path("two_tower_model", "model.safetensors")
    weights = load_file(str(weights_file))
    save_file(
        {name: torch.zeros_like(t) if t.is_floating_point() else t for name, t in weights.items()}, str(weights_file)
    )
    try:
        broken = two_tower_beats_popularity(artifacts=artifacts, **inputs)
    finally:
        save_file(weights, str(weights_file))
    assert not broken.passed


def test_model_evaluation_reports_every_baseline(model_assets, small_dataset):
    from rec_assets.assets.model import model_evaluation

    artifacts, inputs, _ = model_assets
    small_dataset.oracle.save(artifacts.path("synthetic_truth"))
    result = model_evaluation(context=dg.build_asset_context(), artifacts=artifacts, **inputs)
    for name in ("two_tower", "popularity", "ease", "als", "oracle"):
        assert 0.0 <= result.metadata[f"{name}_recall_at_10"] <= 1.0
    assert result.metadata["oracle_recall_at_10"] > result.metadata["popularity_recall_at_10"]
    assert "| ease |" in result.metadata["baselines"].value and "| als |" in result.metadata["baselines"].value
    saved = json.loads(artifacts.path("model_evaluation", "metrics.json").read_text())
    assert saved["ease"]["ease_lambda"] > 0 and saved["ease"]["ease_items"] > 0
    assert saved["als"]["als_factors"] in ALS_FACTORS and saved["als"]["als_trials"] == 12


def test_every_model_is_scored_on_the_same_capped_sample_of_test_users(model_assets, monkeypatch):
    import rec_core.evaluation as evaluation
    from rec_core.inference import TwoTowerEncoder

    artifacts, inputs, _ = model_assets
    encoder = TwoTowerEncoder.load(artifacts.path("two_tower_model"))
    data = DataBundle(inputs["users"], inputs["items"], inputs["interaction_splits"])
    everyone = evaluation.test_split_scores(encoder, data)
    monkeypatch.setattr(evaluation, "MAX_TEST_USERS", 60)
    gate = evaluation.test_split_scores(encoder, data)
    assert everyone["two_tower"]["evaluated_users"] > 60
    assert gate["two_tower"]["evaluated_users"] == gate["popularity"]["evaluated_users"] == 60
    assert evaluation.test_split_scores(encoder, data) == gate  # a fixed sample
    results = compare_with_baselines(encoder, data, ease_lambdas=(300.0,), als_trials=1)
    assert {m["evaluated_users"] for m in results.values()} == {60.0}
    assert results["two_tower"] == gate["two_tower"]


def test_compare_with_baselines_needs_every_evaluated_user(model_assets):
    from rec_core.inference import TwoTowerEncoder

    artifacts, inputs, _ = model_assets
    encoder = TwoTowerEncoder.load(artifacts.path("two_tower_model"))
    with pytest.raises(ValueError, match="missing from the users table"):
        compare_with_baselines(
            encoder, DataBundle(inputs["users"].iloc[5:], inputs["items"], inputs["interaction_splits"])
        )
