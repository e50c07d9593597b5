"""Issue 12 item 4: the cold-items split, the id path off for unseen items, and the cold-item baselines."""

import zlib

import numpy as np
import pandas as pd
import pytest

from rec_core.cold_start import cold_item_metrics, cold_item_task, content_scorer, item_text_vectors, random_scorer
from rec_core.data.schema import positive_interactions
from rec_core.data.splits import cold_item_ids, split_interactions
from rec_core.evaluation import ranking_metrics
from rec_core.inference import TwoTowerEncoder
from rec_core.training import TrainingConfig, prepare_training_data, train_two_tower

HASH_DIM = 256


def hashed_words(texts: pd.Series) -> list[np.ndarray]:
    """Precomputed stand-in text embeddings: unit bag-of-words vectors over hashed lowercase words."""
    vectors = []
    for text in texts:
        vector = np.zeros(HASH_DIM, np.float32)
        for word in str(text).lower().replace(".", " ").replace(",", " ").split():
            vector[zlib.crc32(word.encode()) % HASH_DIM] += 1.0
        vectors.append(vector / max(np.linalg.norm(vector), 1e-9))
    return vectors


@pytest.fixture(scope="module")
def text_table(small_dataset):
    items = small_dataset.items
    return pd.DataFrame(
        {
            "item_id": items["item_id"],
            "name_embedding": hashed_words(items["product_name"]),
            "description_embedding": hashed_words(items["about_product"]),
        }
    )


@pytest.fixture(scope="module")
def cold_splits(small_dataset):
    return split_interactions(small_dataset.interactions, method="cold-items", seed=4)


def test_cold_items_have_every_interaction_in_test_and_only_they_are_chosen(small_dataset, cold_splits):
    interactions = small_dataset.interactions
    cold = set(cold_item_ids(interactions, seed=4))
    n_items = interactions["item_id"].nunique()
    assert len(cold) == round(0.1 * n_items)
    is_cold = cold_splits["item_id"].isin(cold)
    assert (cold_splits.loc[is_cold, "split"] == "test").all()
    assert not cold_splits.loc[cold_splits["split"].isin(["train", "validation"]), "item_id"].isin(cold).any()
    assert len(cold_splits) == len(interactions) and set(cold_splits["interaction_id"]) == set(
        interactions["interaction_id"]
    )
    # the warm interactions are split per user exactly as the random split splits them
    warm = interactions[~interactions["item_id"].isin(cold)]
    expected = split_interactions(warm, method="random", seed=4).set_index("interaction_id")["split"]
    got = cold_splits[~is_cold].set_index("interaction_id")["split"]
    assert got.equals(expected.loc[got.index])
    assert {"train", "validation", "test"} <= set(got)


def test_cold_items_split_is_seeded_and_fraction_is_configurable(small_dataset, cold_splits):
    interactions = small_dataset.interactions
    again = split_interactions(interactions, method="cold-items", seed=4)
    assert again["split"].tolist() == cold_splits["split"].tolist()
    assert cold_item_ids(interactions, seed=5) != cold_item_ids(interactions, seed=4)
    quarter = cold_item_ids(interactions, fraction=0.25, seed=4)
    assert len(quarter) == round(0.25 * interactions["item_id"].nunique())
    with pytest.raises(ValueError, match="cold_item_fraction"):
        split_interactions(interactions, method="cold-items", cold_item_fraction=1.0)


def test_items_without_train_interactions_have_no_id_embedding(small_dataset, cold_splits, text_table):
    data = prepare_training_data(
        small_dataset.users,
        small_dataset.items,
        cold_splits,
        item_text_embeddings=text_table,
        config=TrainingConfig(max_epochs=1),
    )
    id_index = pd.Series(data.items.id_index.numpy(), index=data.items.ids)
    cold = cold_item_ids(small_dataset.interactions, seed=4)
    trained_on = set(positive_interactions(cold_splits[cold_splits["split"] == "train"])["item_id"])
    assert (id_index[cold] == 0).all()
    assert (id_index[sorted(trained_on)] > 0).all()
    assert data.items.text is not None and data.items.text.shape[1] == 2 * HASH_DIM


def test_cold_item_task_ranks_cold_items_for_users_with_history(small_dataset, cold_splits):
    cold = cold_item_ids(small_dataset.interactions, seed=4)
    task = cold_item_task(cold_splits, cold)
    assert task.item_ids == sorted(cold) and len(task.user_ids) > 50
    assert task.seen.nnz == 0  # cold items are never in anyone's history
    users_with_history = set(positive_interactions(cold_splits[cold_splits["split"] != "test"])["user_id"])
    assert set(task.user_ids) <= users_with_history
    held_out = positive_interactions(cold_splits[(cold_splits["split"] == "test") & cold_splits["item_id"].isin(cold)])
    assert set(task.user_ids) == set(held_out["user_id"]) & users_with_history


def test_content_baseline_beats_random_when_text_is_informative(small_dataset, cold_splits, text_table):
    task = cold_item_task(cold_splits, cold_item_ids(small_dataset.interactions, seed=4))
    content = ranking_metrics(content_scorer(text_table, task), task)
    chance = ranking_metrics(random_scorer(task, seed=0), task)
    assert content["recall_at_10"] > 1.5 * chance["recall_at_10"]
    rows = np.arange(5)
    assert np.array_equal(random_scorer(task, seed=0)(rows), random_scorer(task, seed=0)(rows))
    # uninformative text (every item alike) leaves the content baseline no better than ties
    flat = text_table.assign(
        name_embedding=[np.ones(HASH_DIM, np.float32)] * len(text_table),
        description_embedding=[np.ones(HASH_DIM, np.float32)] * len(text_table),
    )
    flat_scores = content_scorer(flat, task)(rows)
    assert np.allclose(flat_scores, flat_scores[:, :1])


def test_item_text_vectors_join_and_normalize(text_table):
    ids = text_table["item_id"].tolist()[:3] + ["not-an-item"]
    vectors = item_text_vectors(text_table, ids)
    assert vectors.shape == (4, 2 * HASH_DIM)
    assert np.allclose(np.linalg.norm(vectors[:3], axis=1), 1.0) and not vectors[3].any()
    first = np.concatenate([text_table["name_embedding"].iloc[0], text_table["description_embedding"].iloc[0]])
    assert np.allclose(vectors[0], first / np.linalg.norm(first))


def test_cold_item_metrics_compares_three_models_on_the_same_users(small_dataset, cold_splits, text_table):
    config = TrainingConfig(max_epochs=2, seed=0)
    data = prepare_training_data(
        small_dataset.users, small_dataset.items, cold_splits, item_text_embeddings=text_table, config=config
    )
    trained = train_two_tower(data, config, progress=False)
    encoder = TwoTowerEncoder(trained.model, trained.preprocessing)
    cold = cold_item_ids(small_dataset.interactions, seed=4)
    results = cold_item_metrics(encoder, small_dataset.users, small_dataset.items, cold_splits, cold, text_table)
    assert set(results) == {"two_tower", "content", "random"}
    n_users = len(cold_item_task(cold_splits, cold).user_ids)
    for metrics in results.values():
        assert metrics["evaluated_users"] == n_users and 0.0 <= metrics["recall_at_10"] <= 1.0
    # coverage is over the cold candidates: ten per user out of about 80 items reaches most of them
    assert results["random"]["coverage_at_10"] > 0.5
