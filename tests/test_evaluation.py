"""Evaluation: metrics computed by hand, EASE's closed form, baselines, and the blocking release gate."""

import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from rec_core.data.splits import split_interactions
from rec_core.evaluation import (
    EASE,
    RankingTask,
    build_ranking_task,
    compare_with_baselines,
    interaction_matrix,
    popularity_scorer,
    ranking_metrics,
    tune_ease,
)


def _task(seen: list[list[int]], heldout: list[list[int]], n_items: int) -> RankingTask:
    def matrix(rows):
        r = [i for i, cols in enumerate(rows) for _ in cols]
        c = [col for cols in rows for col in cols]
        return sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(rows), n_items))

    return RankingTask([f"u{i}" for i in range(len(seen))], [f"i{j}" for j in range(n_items)], matrix(seen), matrix(heldout),
                       pd.DataFrame())


def test_metrics_match_hand_computation():
    # user 0 has seen item 0 (excluded even though it scores highest); held out: items 1, 4
    # user 1 has seen nothing; held out: item 3
    task = _task(seen=[[0], []], heldout=[[1, 4], [3]], n_items=6)
    scores = np.array([[9.0, 8.0, 7.0, 6.0, 0.0, 0.0],   # top 2 after exclusion: 1, 2 -> one hit at rank 1
                       [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])  # top 2: 5, 4 -> no hit
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
    frame = pd.DataFrame({
        "user_id": ["a", "a", "a", "b", "b", "c"],
        "item_id": ["x", "y", "x", "y", "z", "z"],
        "interaction_type": ["purchase", "cart", "rate", "negative_view", "purchase", "purchase"],
        "split": ["train", "train", "test", "test", "train", "train"],
        "timestamp": pd.to_datetime([0, 1, 2, 3, 4, 5], unit="s", utc=True),
    })
    task = build_ranking_task(frame, ["x", "y", "z"], "test")
    # a's test item x was already seen; b's test row is a negative view; c has no test rows
    assert task.user_ids == []
    frame.loc[2, "item_id"] = "z"
    task = build_ranking_task(frame, ["x", "y", "z"], "test")
    assert task.user_ids == ["a"] and task.heldout.toarray().tolist() == [[0, 0, 1]]
    assert task.seen.toarray().tolist() == [[1, 1, 0]]


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
    assert ranking_metrics(ease.scorer(test), test)["recall_at_10"] > popularity["recall_at_10"] > chance["recall_at_10"]
    assert interaction_matrix(train, item_ids).shape[1] == len(item_ids)


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
    result = two_tower_model(context=dg.build_asset_context(), config=TwoTowerTrainingConfig(max_epochs=10),
                             artifacts=artifacts, device=DeviceResource(device="cpu"), **inputs)
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
    from rec_assets.assets.model import two_tower_beats_popularity
    from safetensors.torch import load_file, save_file

    artifacts, inputs, _ = model_assets
    spec = next(iter(two_tower_beats_popularity.check_specs))
    assert spec.blocking
    good = two_tower_beats_popularity(artifacts=artifacts, **inputs)
    assert good.passed
    assert good.metadata["two_tower_recall_at_10"].value > good.metadata["popularity_recall_at_10"].value

    # deliberately break the model: every weight zero, so every item gets the same score
    weights_file = artifacts.path("two_tower_model", "model.safetensors")
    weights = load_file(str(weights_file))
    save_file({name: torch.zeros_like(t) if t.is_floating_point() else t for name, t in weights.items()}, str(weights_file))
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
    for name in ("two_tower", "popularity", "ease", "oracle"):
        assert 0.0 <= result.metadata[f"{name}_recall_at_10"] <= 1.0
    assert result.metadata["oracle_recall_at_10"] > result.metadata["popularity_recall_at_10"]
    assert "| ease |" in result.metadata["baselines"].value
    assert json.loads(artifacts.path("model_evaluation", "metrics.json").read_text())["ease"]["ease_lambda"] > 0


def test_compare_with_baselines_needs_every_evaluated_user(model_assets):
    from rec_core.inference import TwoTowerEncoder

    artifacts, inputs, _ = model_assets
    encoder = TwoTowerEncoder.load(artifacts.path("two_tower_model"))
    with pytest.raises(ValueError, match="missing from the users table"):
        compare_with_baselines(encoder, inputs["users"].iloc[5:], inputs["items"], inputs["interaction_splits"])
