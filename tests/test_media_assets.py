"""The media and embedding assets: product images, text and CLIP embeddings, incremental re-runs, GPU tags."""

import json

import dagster as dg
import numpy as np
import pyarrow as pa

from rec_assets.assets.embeddings import (
    item_clip_embeddings,
    item_text_embeddings,
    item_text_embeddings_cover_items,
    user_text_embeddings,
)
from rec_assets.assets.media import product_images
from rec_assets.resources import ArtifactStore, ClipEncoderResource, DeviceResource, TableIOManager, TextEncoderResource
from rec_core import storage
from rec_core.data.paths import image_link
from rec_core.embeddings import embedding_matrix, embedding_table, preference_sentence, text_hash
from tests.tiny_models import save_tiny_clip


def test_preference_sentence():
    assert preference_sentence("Audio|Kitchen") == "Interested in Audio, Kitchen"
    assert preference_sentence("") == ""


def _materialize(tmp_path, items, users, run_config=None):
    @dg.asset(name="items")
    def items_stub():
        return items

    @dg.asset(name="users")
    def users_stub():
        return users

    return dg.materialize(
        [
            items_stub,
            users_stub,
            product_images,
            item_text_embeddings,
            user_text_embeddings,
            item_clip_embeddings,
            item_text_embeddings_cover_items,
        ],
        resources={
            "artifacts": ArtifactStore(root=str(tmp_path)),
            "io_manager": TableIOManager(root=str(tmp_path)),
            "device": DeviceResource(device="cpu"),
            "text_encoder": TextEncoderResource(),
            "clip_encoder": ClipEncoderResource(),
        },
        run_config=run_config,
    )


def _metadata(result, asset):
    [event] = result.asset_materializations_for_node(asset)
    return {key: getattr(value, "value", value) for key, value in event.metadata.items()}


def test_assets_materialize_incrementally_with_clip_disabled_then_enabled(tmp_path, tiny_dataset, monkeypatch):
    monkeypatch.setenv("REC_CLIP_MODEL", str(tmp_path / "no-clip-here"))
    items, users = tiny_dataset.items.copy(), tiny_dataset.users.copy()
    first = _materialize(tmp_path / "root", items, users)
    assert first.success

    media = _metadata(first, "product_images")
    assert media["generated"] == len(items) and media["reused"] == 0
    assert media["gallery"].count("data:image/png;base64,") == 8
    images = storage.read_parquet(tmp_path / "root" / "product_images.parquet").to_pandas()
    assert list(images.columns) == ["item_id", "image_path", "backend", "is_placeholder"]
    assert images["image_path"].tolist() == items["item_id"].map(image_link).tolist()

    text = storage.read_parquet(tmp_path / "root" / "item_text_embeddings.parquet")
    assert text.schema.field("name_embedding").type == pa.list_(pa.float32(), 384)
    assert text.column_names == ["item_id", "name_embedding", "description_embedding", "model_id", "input_hash"]
    assert _metadata(first, "item_text_embeddings")["encoded"] == len(items)
    [check] = first.get_asset_check_evaluations()
    assert check.passed and check.metadata["items_without_vectors"].value == 0
    prefs = storage.read_parquet(tmp_path / "root" / "user_text_embeddings.parquet").to_pandas()
    assert prefs.columns.tolist() == ["user_id", "preferences_embedding", "model_id", "input_hash"]
    assert np.allclose(
        np.linalg.norm(embedding_matrix(prefs, "preferences_embedding"), axis=1)[users["preferences"] != ""], 1
    )

    clip = _metadata(first, "item_clip_embeddings")
    assert (
        clip["status"] == "disabled"
        and "does not exist" in clip["reason"]
        and "REC_CLIP_MODEL" in clip["how_to_enable"]
    )
    disabled = storage.read_parquet(tmp_path / "root" / "item_clip_embeddings.parquet")
    assert disabled.num_rows == 0 and {"item_id", "clip_embedding"} <= set(disabled.column_names)

    items.loc[4, "about_product"] = "Now with a longer warranty."
    # A killed run's checkpoint part (rows 0-4, row 4 already re-encoded) is reused like the previous table.
    killed = text.to_pandas().head(5)
    killed.loc[4, "input_hash"] = (
        f"{text_hash(items.loc[4, 'product_name'])}-{text_hash(items.loc[4, 'about_product'])}"
    )
    killed.at[4, "description_embedding"] = np.full(384, 1 / np.sqrt(384), dtype=np.float32)
    checkpoint = tmp_path / "root" / "checkpoints" / "item_text_embeddings"
    storage.write_parquet(
        embedding_table(killed, ["name_embedding", "description_embedding"], 384),
        checkpoint / "part-killed-00000.parquet",
    )
    monkeypatch.setenv("REC_CLIP_MODEL", str(save_tiny_clip(tmp_path / "clip")))
    second = _materialize(tmp_path / "root", items, users)
    assert second.success
    assert _metadata(second, "product_images")["generated"] == 0
    assert (
        _metadata(second, "item_text_embeddings")["encoded"],
        _metadata(second, "item_text_embeddings")["reused"],
    ) == (0, len(items))
    resumed = storage.read_parquet(tmp_path / "root" / "item_text_embeddings.parquet").to_pandas()
    np.testing.assert_array_equal(resumed["description_embedding"][4], killed.at[4, "description_embedding"])
    assert not checkpoint.exists()
    assert _metadata(second, "user_text_embeddings")["encoded"] == 0
    enabled = _metadata(second, "item_clip_embeddings")
    assert enabled["status"] == "enabled" and enabled["encoded"] == len(items)
    vectors = storage.read_parquet(tmp_path / "root" / "item_clip_embeddings.parquet")
    assert vectors.schema.field("clip_embedding").type == pa.list_(pa.float32(), 16) and vectors.num_rows == len(items)

    third = _materialize(tmp_path / "root", items, users)
    assert _metadata(third, "item_clip_embeddings")["encoded"] == 0


def test_gpu_assets_carry_pool_and_kubernetes_gpu_request():
    for asset in (product_images, item_clip_embeddings):
        spec = asset.specs_by_key[asset.key]
        assert asset.op.pool == "gpu"
        k8s = asset.op.tags["dagster-k8s/config"]
        limits = (json.loads(k8s) if isinstance(k8s, str) else k8s)["container_config"]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1"
        assert "gpu" in spec.kinds
