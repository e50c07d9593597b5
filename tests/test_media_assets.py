"""Product image generation (placeholder and a tiny diffusers pipeline) and the media/embedding assets."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from rec_assets.assets.embeddings import (
    item_clip_embeddings,
    item_text_embeddings,
    item_text_embeddings_cover_items,
    user_text_embeddings,
)
from rec_assets.assets.media import product_images
from rec_assets.resources import ArtifactStore, ClipEncoderResource, DeviceResource, TableIOManager, TextEncoderResource
from rec_core import storage
from rec_core.data.paths import image_filename, image_link
from rec_core.embeddings import embedding_matrix, embedding_table, preference_sentence, text_hash
from rec_core.generation.generate_images import (
    ImageGenerationConfig,
    ImageGenerationError,
    build_prompt,
    generate_images,
    image_backend,
    image_inventory,
    main,
)
from rec_core.generation.synthetic import GeneratorConfig, generate_dataset
from tests.tiny_models import save_tiny_clip, save_tiny_stable_diffusion


@pytest.fixture(scope="module")
def dataset():
    return generate_dataset(GeneratorConfig(n_users=12, n_items=24, n_interactions=60, seed=3))


@pytest.fixture(scope="module")
def tiny_pipeline_dir(tmp_path_factory):
    return save_tiny_stable_diffusion(tmp_path_factory.mktemp("sd"))


def _tiny_diffusers(model_dir, **overrides) -> ImageGenerationConfig:
    return ImageGenerationConfig(backend="diffusers", model=str(model_dir), device="cpu", image_size=32, steps=2,
                                 batch_size=2, **overrides)


def test_placeholders_are_deterministic_hashed_and_drawn_only_once(tmp_path, dataset):
    items = dataset.items.copy()
    items.loc[0, "product_name"] = "../../etc/passwd <script>"  # names never reach the file system
    first = generate_images(items, tmp_path / "a")
    assert sorted(first.generated) == sorted(items["item_id"]) and first.existing == 0
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(items["item_id"].map(image_filename))
    generate_images(items, tmp_path / "b")
    for item_id in items["item_id"][:5]:
        assert (tmp_path / "a" / image_filename(item_id)).read_bytes() == (tmp_path / "b" / image_filename(item_id)).read_bytes()
    again = generate_images(items, tmp_path / "a")
    assert again.generated == [] and again.existing == len(items)
    (tmp_path / "a" / image_filename(items["item_id"][3])).unlink()
    assert generate_images(items, tmp_path / "a").generated == [items["item_id"][3]]
    card = Image.open(tmp_path / "a" / image_filename(items["item_id"][0]))
    assert card.size == (256, 256) and card.info["rec_backend"] == "placeholder"
    assert items["img_link"].tolist() == items["item_id"].map(image_link).tolist()


def test_placeholder_cards_differ_by_item(tmp_path, dataset):
    items = dataset.items.head(2)
    generate_images(items, tmp_path)
    a, b = (np.asarray(Image.open(tmp_path / image_filename(i))) for i in items["item_id"])
    assert (a != b).any()


def test_prompt_uses_name_and_description():
    prompt = build_prompt("Sonaro Wireless Headphones", "Great   bass. " + "word " * 100)
    assert "Sonaro Wireless Headphones" in prompt and "Great bass." in prompt
    assert len(prompt.split()) < 60


def test_tiny_diffusers_pipeline_draws_seeded_images(tmp_path, dataset, tiny_pipeline_dir):
    items = dataset.items.head(3)
    report = generate_images(items, tmp_path / "a", _tiny_diffusers(tiny_pipeline_dir))
    assert len(report.generated) == 3
    first = [(tmp_path / "a" / image_filename(i)) for i in items["item_id"]]
    assert all(image_backend(p) == "diffusers" and Image.open(p).size == (32, 32) for p in first)
    generate_images(items.iloc[[2, 0]], tmp_path / "b", _tiny_diffusers(tiny_pipeline_dir))  # other batches
    for item_id in items["item_id"].iloc[[0, 2]]:
        # Same seed per item whatever the batch; float sums in another batch shape may round one level off.
        np.testing.assert_allclose(np.asarray(Image.open(tmp_path / "a" / image_filename(item_id))).astype(int),
                                   np.asarray(Image.open(tmp_path / "b" / image_filename(item_id))).astype(int), atol=2)


def test_diffusers_replaces_placeholders_only_when_asked(tmp_path, dataset, tiny_pipeline_dir):
    items = dataset.items.head(2)
    generate_images(items, tmp_path)
    assert generate_images(items, tmp_path, _tiny_diffusers(tiny_pipeline_dir)).generated == []
    replaced = generate_images(items, tmp_path, _tiny_diffusers(tiny_pipeline_dir, replace_placeholders=True))
    assert len(replaced.generated) == 2
    inventory = image_inventory(items["item_id"], tmp_path)
    assert inventory["backend"].tolist() == ["diffusers", "diffusers"] and not inventory["is_placeholder"].any()


def test_missing_diffusion_weights_give_a_clear_error(tmp_path, dataset):
    with pytest.raises(ImageGenerationError, match="cannot be loaded.*--backend placeholder"):
        generate_images(dataset.items.head(1), tmp_path, _tiny_diffusers(tmp_path / "no-model"))


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown image backend 'dalle'"):
        ImageGenerationConfig(backend="dalle")


def test_command_line_generates_missing_images(tmp_path, dataset, capsys):
    items_path = tmp_path / "items.parquet"
    storage.write_parquet(dataset.items.head(5), items_path)
    assert main(["--items", str(items_path), "--output", str(tmp_path / "out")]) == 0
    assert "5 generated" in capsys.readouterr().out
    assert main(["--items", str(items_path), "--output", str(tmp_path / "out")]) == 0
    second_run = capsys.readouterr().out
    assert "0 generated" in second_run and "5 already present" in second_run
    assert len(list((tmp_path / "out").iterdir())) == 5


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
        [items_stub, users_stub, product_images, item_text_embeddings, user_text_embeddings, item_clip_embeddings,
         item_text_embeddings_cover_items],
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


def test_assets_materialize_incrementally_with_clip_disabled_then_enabled(tmp_path, dataset, monkeypatch):
    monkeypatch.setenv("REC_CLIP_MODEL", str(tmp_path / "no-clip-here"))
    items, users = dataset.items.copy(), dataset.users.copy()
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
    assert np.allclose(np.linalg.norm(embedding_matrix(prefs, "preferences_embedding"), axis=1)[users["preferences"] != ""], 1)

    clip = _metadata(first, "item_clip_embeddings")
    assert clip["status"] == "disabled" and "does not exist" in clip["reason"] and "REC_CLIP_MODEL" in clip["how_to_enable"]
    disabled = storage.read_parquet(tmp_path / "root" / "item_clip_embeddings.parquet")
    assert disabled.num_rows == 0 and {"item_id", "clip_embedding"} <= set(disabled.column_names)

    items.loc[4, "about_product"] = "Now with a longer warranty."
    # A killed run's checkpoint part (rows 0-4, row 4 already re-encoded) is reused like the previous table.
    killed = text.to_pandas().head(5)
    killed.loc[4, "input_hash"] = f"{text_hash(items.loc[4, 'product_name'])}-{text_hash(items.loc[4, 'about_product'])}"
    killed.at[4, "description_embedding"] = np.full(384, 1 / np.sqrt(384), dtype=np.float32)
    checkpoint = tmp_path / "root" / "checkpoints" / "item_text_embeddings"
    storage.write_parquet(embedding_table(killed, ["name_embedding", "description_embedding"], 384),
                          checkpoint / "part-killed-00000.parquet")
    monkeypatch.setenv("REC_CLIP_MODEL", str(save_tiny_clip(tmp_path / "clip")))
    second = _materialize(tmp_path / "root", items, users)
    assert second.success
    assert _metadata(second, "product_images")["generated"] == 0
    assert (_metadata(second, "item_text_embeddings")["encoded"], _metadata(second, "item_text_embeddings")["reused"]) == (0, len(items))
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


@pytest.mark.cuda
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_tiny_diffusers_runs_in_fp16_on_cuda(tmp_path, dataset, tiny_pipeline_dir):
    config = ImageGenerationConfig(backend="diffusers", model=str(tiny_pipeline_dir), device="cuda", image_size=32,
                                   steps=2, batch_size=2)
    report = generate_images(dataset.items.head(4), tmp_path, config)
    assert len(report.generated) == 4
    assert all(Image.open(tmp_path / image_filename(i)).size == (32, 32) for i in report.generated)
