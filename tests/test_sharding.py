"""Sharded encoding: items encoded in 3 shards and merged are the unsharded table, row for row."""

import numpy as np
import pandas as pd
import pytest

from rec_core.embeddings import INPUT_HASH, MODEL_ID, embedding_matrix, text_embeddings
from rec_core.encoders import TextEncoder, TextEncoderConfig
from rec_core.sharding import merge_shards, shard_numbers, shard_of
from tests.tiny_models import save_tiny_text_model

VECTORS = ["name_embedding", "description_embedding"]


@pytest.fixture(scope="module")
def tiny_text_model(tmp_path_factory):
    return save_tiny_text_model(tmp_path_factory.mktemp("tiny-text"))


def _encode(items: pd.DataFrame, model_dir, batch_size: int):
    encoder = TextEncoder(TextEncoderConfig(model=str(model_dir), device="cpu", batch_size=batch_size))
    texts = {"name_embedding": items["product_name"], "description_embedding": items["about_product"]}
    return text_embeddings("item_id", items["item_id"], texts, encoder).table


def test_shards_are_stable_disjoint_and_cover_every_id():
    ids = [f"item-{i}" for i in range(1000)]
    numbers = shard_numbers(ids, 3)
    assert set(numbers) == {0, 1, 2} and min(np.bincount(numbers)) > 250  # a hash spreads keys evenly
    assert np.array_equal(shard_numbers(ids[::-1], 3), numbers[::-1])  # the key alone decides, not its position
    masks = [shard_of(ids, shard, 3) for shard in range(3)]
    assert np.array_equal(np.sum(masks, axis=0), np.ones(len(ids)))
    assert np.array_equal(shard_numbers(ids, 1), np.zeros(len(ids)))
    with pytest.raises(ValueError, match="shard must be in 0..2"):
        shard_of(ids, 3, 3)


@pytest.mark.parametrize("batch_size, n_items", [(1, 60), (32, 300)])  # one text per forward pass is slow: fewer
def test_sharded_encoding_merges_to_the_unsharded_table(small_dataset, tiny_text_model, batch_size, n_items):
    items = small_dataset.items.iloc[:n_items].sample(frac=1.0, random_state=0)  # an order the hash does not follow
    whole = _encode(items, tiny_text_model, batch_size)
    shards = [_encode(items[shard_of(items["item_id"], shard, 3)], tiny_text_model, batch_size) for shard in range(3)]
    assert all(0 < len(shard) < len(items) for shard in shards)

    merged = merge_shards(shards, "item_id", items["item_id"])
    assert merged["item_id"].tolist() == whole["item_id"].tolist() == items["item_id"].tolist()
    assert merged[INPUT_HASH].tolist() == whole[INPUT_HASH].tolist()
    assert merged[MODEL_ID].tolist() == whole[MODEL_ID].tolist()
    for column in VECTORS:
        sharded, unsharded = embedding_matrix(merged, column), embedding_matrix(whole, column)
        if batch_size == 1:  # each text alone in its forward pass: the same arithmetic, bit for bit
            np.testing.assert_array_equal(sharded, unsharded)
        else:  # a text's batch, so its padded length, depends on which texts share the call: the matrix products
            # change shape and their float sums their order. Measured on 800 items: at most 6e-8 (an ulp or two
            # of a unit vector's entries) in name vectors, 0 in descriptions (all cut to the same token cap)
            np.testing.assert_allclose(sharded, unsharded, rtol=0, atol=1e-6)


def test_merge_refuses_shards_that_double_or_miss_keys():
    table = pd.DataFrame({"item_id": ["a", "b", "c"], "vector": [np.zeros(2)] * 3})
    ids = ["c", "a", "b"]
    assert merge_shards([table.iloc[:1], table.iloc[1:]], "item_id", ids)["item_id"].tolist() == ids
    with pytest.raises(ValueError, match="1 item_id.*more than one shard"):
        merge_shards([table, table.iloc[:1]], "item_id", ids)
    with pytest.raises(ValueError, match="1 item_id.*missing.*'c'"):
        merge_shards([table.iloc[:2]], "item_id", ids)
    with pytest.raises(ValueError, match="1 not asked for"):
        merge_shards([table], "item_id", ["a", "b"])
    with pytest.raises(ValueError, match="shard 1: no 'item_id' column"):
        merge_shards([table, table.rename(columns={"item_id": "id"})], "item_id", ids)
