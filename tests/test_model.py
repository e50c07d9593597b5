"""Towers, preprocessing and the serving artifact: shapes, vocabularies, JSON state, no pickles."""

import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from rec_core.data.frames import ID_DTYPE
from rec_core.data.schema import split_pipe
from rec_core.data.splits import split_interactions
from rec_core.inference import TwoTowerEncoder, encode_item_features
from rec_core.models import EntityTower
from rec_core.preprocessing import FittedPreprocessing, data_preproccess, data_preprocess
from rec_core.training import TrainingConfig, prepare_training_data, train_two_tower, write_artifact


def test_entity_tower_keeps_the_seed_interface_and_returns_unit_vectors():
    torch.manual_seed(0)
    tower = EntityTower(
        num_numerical=3, num_of_categories=[4, 7], d_model=16, text_embed_dim=8, image_embed_dim=5, dim_ratio=2
    )
    numerical, categorical = torch.randn(6, 3), torch.tensor([[0, 0], [1, 6], [3, 2], [2, 2], [0, 5], [1, 1]])
    text, image = torch.randn(6, 8), torch.randn(6, 5)
    out = tower(numerical, categorical, text, image)
    assert out.shape == (6, 16)
    assert torch.allclose(out.norm(dim=1), torch.ones(6), atol=1e-5)
    tower.eval()
    other_image = tower(numerical, categorical, text, torch.randn(6, 5))
    assert not torch.allclose(tower(numerical, categorical, text, image), other_image)  # images are used
    single = EntityTower(2, 10, 8)  # the seed's single vocabulary size still works
    assert single(torch.randn(3, 2), torch.tensor([[0], [4], [9]])).shape == (3, 8)


@pytest.fixture(scope="module")
def train_split(small_dataset):
    splits = split_interactions(small_dataset.interactions, method="time")
    return splits[splits["split"] == "train"]


def test_preprocessing_state_roundtrips_through_json(small_dataset, train_split):
    assert data_preproccess is data_preprocess
    fitted, user_features, item_features = data_preprocess(small_dataset.users, small_dataset.items, train_split)
    again, _, _ = data_preprocess(small_dataset.users, small_dataset.items, train_split)
    assert fitted.to_json() == again.to_json()  # deterministic: sorted vocabularies, fixed column order
    restored = FittedPreprocessing.from_json(fitted.to_json())
    served = restored.transform_items(small_dataset.items)
    for name in ("id_index", "numerical", "categorical", "category_tokens"):
        assert torch.equal(getattr(served, name), getattr(item_features, name))
    assert torch.equal(restored.transform_users(small_dataset.users).numerical, user_features.numerical)
    # standardized on the fitted data: mean 0, unit variance per column (up to the missing indicators)
    assert item_features.numerical.mean(0).abs().max() < 1e-4
    positives = train_split[train_split["interaction_type"] != "negative_view"]
    assert fitted.item_ids == sorted(positives["item_id"].unique())  # ids only for items the model saw liked


def test_unseen_values_fall_into_the_out_of_vocabulary_bucket(small_dataset, train_split):
    fitted, _, _ = data_preprocess(small_dataset.users, small_dataset.items, train_split)
    item = small_dataset.items.head(1).assign(item_id="NEW", category="Nowhere|Unknown|Thing", rating=np.nan)
    features = fitted.transform_items(item)
    assert features.id_index.tolist() == [0]
    assert features.categorical.tolist() == [[0] * len(fitted.category_vocabularies)]
    assert features.category_tokens.sum() == 0
    user = small_dataset.users.head(1).assign(user_id="NEW", gender="unknown-value", age=None, preferences="NoSuchNode")
    users = fitted.transform_users(user)
    assert users.categorical.tolist() == [[0, 0]] and users.preference_tokens.sum() == 0


def test_history_keeps_the_most_recent_positive_items_newest_last(small_dataset, train_split):
    fitted, _, _ = data_preprocess(small_dataset.users, small_dataset.items, train_split)
    fitted.config.max_history = 2
    a, b, c = fitted.item_ids[:3]
    history = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u1", "u2"],
            "item_id": [a, b, c, a, "not-in-vocabulary"],
            "timestamp": pd.to_datetime([4, 1, 3, 2, 1], unit="s", utc=True),
            "interaction_type": ["purchase", "cart", "negative_view", "rate", "purchase"],
        }
    )
    matrix = fitted.history_matrix(["u1", "u2", "u3"], history)
    index = dict(zip(fitted.item_ids, range(1, len(fitted.item_ids) + 1)))
    assert matrix.tolist() == [[index[a], index[a]], [0, 0], [0, 0]]  # b (oldest) dropped, c is a negative view
    assert fitted.history_matrix(["u1"], None).tolist() == [[0, 0]]


def test_bulk_codes_match_value_by_value_lookups(small_dataset, train_split):
    fitted, _, items = data_preprocess(small_dataset.users, small_dataset.items, train_split)
    code = {node: position + 1 for position, node in enumerate(fitted.category_nodes)}
    for row, category in enumerate(small_dataset.items["category"].head(200)):
        known = [code[n] for n in split_pipe(category) if n in code]
        assert items.category_tokens[row].tolist() == known + [0] * (items.category_tokens.shape[1] - len(known))
    genders = pd.Series(["nope", None, np.nan, *fitted.gender_vocabulary])
    users = fitted.transform_users(small_dataset.users.head(len(genders)).assign(gender=genders.to_numpy()))
    assert users.categorical[:, 0].tolist() == [0, 0, 0, *range(1, len(fitted.gender_vocabulary) + 1)]
    ids = [fitted.item_ids[5], "unknown", fitted.item_ids[0]]
    assert fitted.item_id_index(ids).tolist() == [6, 0, 1]
    assert fitted.item_id_index(pd.Series(ids, dtype=ID_DTYPE)).tolist() == [6, 0, 1]  # Arrow-backed ids, as loaded
    # a user listed twice: the history goes to the last of the two rows, as a dictionary lookup did
    history = pd.DataFrame(
        {
            "user_id": ["u1"],
            "item_id": [fitted.item_ids[0]],
            "interaction_type": ["purchase"],
            "timestamp": pd.to_datetime([1], unit="s", utc=True),
        }
    )
    assert fitted.history_matrix(["u1", "u2", "u1"], history)[:, -1].tolist() == [0, 0, 1]


@pytest.fixture(scope="module")
def artifact(small_dataset, tmp_path_factory):
    splits = split_interactions(small_dataset.interactions, method="time")
    config = TrainingConfig(max_epochs=2)
    data = prepare_training_data(small_dataset.users, small_dataset.items, splits, config=config)
    trained = train_two_tower(data, config, progress=False)
    directory = write_artifact(
        trained, tmp_path_factory.mktemp("model") / "two_tower", {"validation_recall_at_10": 0.1}
    )
    return trained, data, directory, splits


def test_artifact_loads_without_unpickling_and_reproduces_the_model(artifact, small_dataset, monkeypatch):
    trained, data, directory, _ = artifact

    def forbidden(*args, **kwargs):
        raise AssertionError("loading a model artifact must not unpickle")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    encoder = TwoTowerEncoder.load(directory)
    ids, vectors = encoder.encode_items(small_dataset.items)
    expected = encode_item_features(trained.model, data.items, "cpu").numpy()
    assert ids == small_dataset.items["item_id"].tolist()
    assert vectors.dtype == np.float32 and vectors.shape == (len(ids), encoder.dim)
    assert np.allclose(vectors, expected, atol=1e-5)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_encode_users_with_history_and_cold_start(artifact, small_dataset):
    _, _, directory, splits = artifact
    encoder = TwoTowerEncoder.load(directory)
    users = small_dataset.users.head(30)
    ids, warm = encoder.encode_users(users, splits[splits["split"] == "train"])
    cold_ids, cold = encoder.encode_users(users, None)
    assert ids == cold_ids == users["user_id"].tolist()
    assert warm.shape == cold.shape == (30, encoder.dim) and warm.dtype == np.float32
    assert np.allclose(np.linalg.norm(cold, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(warm, cold)  # the history summary changes the representation
    _, cold_again = encoder.encode_users(users, splits.iloc[:0])
    assert np.allclose(cold, cold_again, atol=1e-6)


def test_loading_rejects_an_incomplete_artifact(tmp_path):
    (tmp_path / "model_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        TwoTowerEncoder.load(tmp_path)
