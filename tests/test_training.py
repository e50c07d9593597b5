"""Training: the loss does what it says, training learns, is deterministic and resumes from checkpoints."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from rec_core.data.splits import split_interactions
from rec_core.evaluation import build_ranking_task, popularity_scorer, ranking_metrics, two_tower_scorer
from rec_core.inference import TwoTowerEncoder
from rec_core.training import (
    TrainingConfig,
    is_time_split,
    prepare_training_data,
    sampled_softmax_loss,
    train_two_tower,
)


@pytest.fixture(scope="module")
def splits(small_dataset):
    return split_interactions(small_dataset.interactions, method="time", seed=0)


@pytest.fixture(scope="module")
def trained(small_dataset, splits):
    config = TrainingConfig(max_epochs=15, seed=0)
    data = prepare_training_data(small_dataset.users, small_dataset.items, splits, config=config)
    return train_two_tower(data, config, progress=False)


def test_sampled_softmax_subtracts_log_q_and_masks_accidental_hits():
    users = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    items = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2], [0.3, 1.0], [1.0, 1.0]]), dim=1)
    positive = torch.tensor([0, 1])
    log_q = torch.log(torch.tensor([0.5, 0.25, 0.25]))
    loss = sampled_softmax_loss(users, items, positive, log_q, temperature=0.1)
    logits = users @ items.T / 0.1 - log_q
    expected = -torch.log_softmax(logits, dim=1)[torch.arange(2), positive]
    assert torch.allclose(loss, expected)
    # column 2 is the same item as row 0's positive seen again: masked, it no longer competes
    hits = torch.tensor([[False, False, True], [False, False, False]])
    masked = sampled_softmax_loss(users, items, positive, log_q, temperature=0.1, accidental_hits=hits)
    expected_row0 = -torch.log_softmax(logits[0, :2], dim=0)[0]
    assert torch.isclose(masked[0], expected_row0)
    assert masked[0] < loss[0] and torch.isclose(masked[1], loss[1])
    # without the correction a popular (high-q) item gets no penalty
    uncorrected = sampled_softmax_loss(users, items, positive, log_q, temperature=0.1, logq_correction=0.0)
    assert not torch.allclose(uncorrected, loss)


def test_training_learns_more_than_popularity(small_dataset, splits, trained):
    """The trained model, loaded as serving loads it, beats popularity clearly on the held-out test split."""
    assert trained.history[0]["train_loss"] > trained.history[-1]["train_loss"]
    test = build_ranking_task(splits, small_dataset.items["item_id"].tolist(), "test")
    encoder = TwoTowerEncoder(trained.model, trained.preprocessing)
    model = ranking_metrics(two_tower_scorer(encoder, small_dataset.users, small_dataset.items, test), test)
    popularity = ranking_metrics(popularity_scorer(splits[splits["split"] == "train"], test), test)
    assert model["recall_at_10"] > 1.5 * popularity["recall_at_10"]
    assert model["coverage_at_10"] > popularity["coverage_at_10"]


def test_training_is_deterministic_for_a_seed(small_dataset, splits):
    config = TrainingConfig(max_epochs=2, seed=3)
    runs = []
    for _ in range(2):
        data = prepare_training_data(small_dataset.users, small_dataset.items, splits, config=config)
        runs.append(train_two_tower(data, config, progress=False))
    first, second = (r.model.state_dict() for r in runs)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert [h["train_loss"] for h in runs[0].history] == [h["train_loss"] for h in runs[1].history]


def test_interrupted_run_resumes_from_checkpoint(small_dataset, splits, tmp_path, monkeypatch):
    config = TrainingConfig(max_epochs=3, patience=10, seed=1)
    data = prepare_training_data(small_dataset.users, small_dataset.items, splits, config=config)
    uninterrupted = train_two_tower(data, config, progress=False)

    import rec_core.training as training

    real = training.validation_recall
    calls = {"n": 0}

    def crash_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "validation_recall", crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train_two_tower(data, config, checkpoint_dir=tmp_path / "ckpt", progress=False)
    monkeypatch.setattr(training, "validation_recall", real)
    resumed = train_two_tower(data, config, checkpoint_dir=tmp_path / "ckpt", progress=False)

    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert [h["train_loss"] for h in resumed.history] == pytest.approx([h["train_loss"] for h in uninterrupted.history])
    a, b = uninterrupted.model.state_dict(), resumed.model.state_dict()
    assert all(torch.allclose(a[k], b[k]) for k in a)


def test_uniform_extra_negatives_train(small_dataset, splits):
    config = TrainingConfig(max_epochs=2, uniform_negatives=256, history_dropout=0.2)
    data = prepare_training_data(small_dataset.users, small_dataset.items, splits, config=config)
    trained = train_two_tower(data, config, progress=False)
    assert all(math.isfinite(h["train_loss"]) for h in trained.history)
    assert trained.history[-1]["validation_recall_at_10"] > 0


def test_text_and_image_inputs_are_optional(small_dataset, splits):
    """Training runs with text and image tables present, and the towers actually read them."""
    rng = np.random.default_rng(0)
    items, users = small_dataset.items, small_dataset.users
    vec = lambda n, d: [row.astype(np.float32) for row in rng.normal(size=(n, d))]  # noqa: E731
    item_text = pd.DataFrame(
        {
            "item_id": items["item_id"],
            "name_embedding": vec(len(items), 384),
            "description_embedding": vec(len(items), 384),
        }
    )
    user_text = pd.DataFrame({"user_id": users["user_id"], "preferences_embedding": vec(len(users), 384)})
    clip = pd.DataFrame({"item_id": items["item_id"], "clip_embedding": vec(len(items), 32)})
    config = TrainingConfig(max_epochs=1)
    data = prepare_training_data(users, items, splits, item_text, user_text, clip, config)
    assert (data.preprocessing.item_text_dim, data.preprocessing.user_text_dim, data.preprocessing.item_image_dim) == (
        768,
        384,
        32,
    )
    trained = train_two_tower(data, config, progress=False)
    encoder = TwoTowerEncoder(trained.model, trained.preprocessing)
    ids, with_images = encoder.encode_items(items.head(20), item_text, clip)
    _, zero_images = encoder.encode_items(items.head(20), item_text, clip.iloc[:0])
    assert with_images.shape == (20, encoder.dim) and not np.allclose(with_images, zero_images)
    empty_clip = prepare_training_data(users, items, splits, item_text, user_text, clip.iloc[:0], config)
    assert empty_clip.preprocessing.item_image_dim == 0


def test_time_split_is_detected_and_emphasises_recent_examples(small_dataset):
    interactions = small_dataset.interactions
    time_split = split_interactions(interactions, method="time")
    random_split = split_interactions(interactions, method="random", seed=0)
    assert is_time_split(time_split) and not is_time_split(random_split)
    data = prepare_training_data(small_dataset.users, small_dataset.items, time_split)
    uniform = prepare_training_data(small_dataset.users, small_dataset.items, random_split)
    assert float(data.example_weights.std()) > 0.5 and torch.allclose(uniform.example_weights, torch.ones(1))
    assert math.isclose(float(data.example_weights.mean()), 1.0, rel_tol=1e-4)


@pytest.mark.cuda
def test_training_runs_on_cuda(small_dataset, splits):
    config = TrainingConfig(max_epochs=1)
    data = prepare_training_data(small_dataset.users, small_dataset.items, splits, config=config)
    trained = train_two_tower(data, config, device="cuda", progress=False)
    encoder = TwoTowerEncoder(trained.model, trained.preprocessing, device="cuda")
    _, vectors = encoder.encode_items(small_dataset.items.head(10))
    assert vectors.shape == (10, encoder.dim) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_tied_timestamps_train_as_a_random_split(small_dataset):
    """Day-granular or single-import data: a random split of tied timestamps is no time split, gets no
    recency weighting, and learns as well as the same data with distinct timestamps."""
    distinct = small_dataset.interactions
    tied = distinct.assign(timestamp=distinct["timestamp"].min())
    random_tied = split_interactions(tied, method="random", seed=0)
    random_distinct = split_interactions(distinct, method="random", seed=0)
    assert (random_tied["split"].to_numpy() == random_distinct["split"].to_numpy()).all()
    assert not is_time_split(random_tied)
    config = TrainingConfig(max_epochs=6, patience=6)
    recalls = {}
    for name, splits in {"tied": random_tied, "distinct": random_distinct}.items():
        data = prepare_training_data(small_dataset.users, small_dataset.items, splits, config=config)
        assert torch.allclose(data.example_weights, torch.ones(1))
        trained = train_two_tower(data, config, progress=False)
        recalls[name] = max(h["validation_recall_at_10"] for h in trained.history)
    assert recalls["tied"] > 0.02
    assert abs(recalls["tied"] - recalls["distinct"]) <= 0.15 * recalls["distinct"]


def test_opt_in_user_ids_and_history_position_weights_train_and_serve(small_dataset, splits, tmp_path):
    """Known users get their own id embedding (new users row 0); the history positions learn weights;
    both survive the artifact round trip."""
    from rec_core.models import TwoTowerConfig
    from rec_core.training import write_artifact

    config = TrainingConfig(max_epochs=2, seed=0, model=TwoTowerConfig(use_user_id=True, history_position_weights=True))
    data = prepare_training_data(small_dataset.users, small_dataset.items, splits, config=config)
    assert int((data.users.id_index > 0).sum()) == data.preprocessing.n_user_ids > 0
    trained = train_two_tower(data, config, progress=False)
    tower = trained.model.user_tower
    assert (
        tower.user_id_embedding is not None
        and tower.user_id_embedding.num_embeddings == data.preprocessing.n_user_ids + 1
    )
    assert tower.history_position_logit.abs().sum() > 0  # learned away from the plain mean
    encoder = TwoTowerEncoder.load(write_artifact(trained, tmp_path / "model"))
    known = small_dataset.users.head(5)
    renamed = known.assign(user_id=[f"new-{u}" for u in known["user_id"]])
    history = splits[splits["split"] == "train"]
    _, known_vectors = encoder.encode_users(known, history)
    _, new_vectors = encoder.encode_users(renamed, history.assign(user_id=history["user_id"].map(lambda u: f"new-{u}")))
    assert not np.allclose(known_vectors, new_vectors, atol=1e-4)  # same history and features, the id differs
    assert np.allclose(np.linalg.norm(new_vectors, axis=1), 1.0, atol=1e-4)
