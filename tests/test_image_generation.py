"""Product image generation, the library side: placeholder cards and a tiny diffusers pipeline (on CPU,
and in fp16 on CUDA where a GPU is present). No Dagster here: the media assets are in test_media_assets."""

import numpy as np
import pytest
from PIL import Image

from rec_core import storage
from rec_core.data.paths import image_filename, image_link
from rec_core.generation.generate_images import (
    ImageGenerationConfig,
    ImageGenerationError,
    build_prompt,
    generate_images,
    image_backend,
    image_inventory,
    main,
)
from tests.tiny_models import save_tiny_stable_diffusion


@pytest.fixture(scope="module")
def tiny_pipeline_dir(tmp_path_factory):
    return save_tiny_stable_diffusion(tmp_path_factory.mktemp("sd"))


def _tiny_diffusers(model_dir, **overrides) -> ImageGenerationConfig:
    return ImageGenerationConfig(
        backend="diffusers", model=str(model_dir), device="cpu", image_size=32, steps=2, batch_size=2, **overrides
    )


def test_placeholders_are_deterministic_hashed_and_drawn_only_once(tmp_path, tiny_dataset):
    items = tiny_dataset.items.copy()
    items.loc[0, "product_name"] = "../../etc/passwd <script>"  # names never reach the file system
    first = generate_images(items, tmp_path / "a")
    assert sorted(first.generated) == sorted(items["item_id"]) and first.existing == 0
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(items["item_id"].map(image_filename))
    generate_images(items, tmp_path / "b")
    for item_id in items["item_id"][:5]:
        assert (tmp_path / "a" / image_filename(item_id)).read_bytes() == (
            tmp_path / "b" / image_filename(item_id)
        ).read_bytes()
    again = generate_images(items, tmp_path / "a")
    assert again.generated == [] and again.existing == len(items)
    (tmp_path / "a" / image_filename(items["item_id"][3])).unlink()
    assert generate_images(items, tmp_path / "a").generated == [items["item_id"][3]]
    card = Image.open(tmp_path / "a" / image_filename(items["item_id"][0]))
    assert card.size == (256, 256) and card.info["rec_backend"] == "placeholder"
    assert items["img_link"].tolist() == items["item_id"].map(image_link).tolist()


def test_placeholder_cards_differ_by_item(tmp_path, tiny_dataset):
    items = tiny_dataset.items.head(2)
    generate_images(items, tmp_path)
    a, b = (np.asarray(Image.open(tmp_path / image_filename(i))) for i in items["item_id"])
    assert (a != b).any()


def test_prompt_uses_name_and_description():
    prompt = build_prompt("Sonaro Wireless Headphones", "Great   bass. " + "word " * 100)
    assert "Sonaro Wireless Headphones" in prompt and "Great bass." in prompt
    assert len(prompt.split()) < 60


def test_tiny_diffusers_pipeline_draws_seeded_images(tmp_path, tiny_dataset, tiny_pipeline_dir):
    items = tiny_dataset.items.head(3)
    report = generate_images(items, tmp_path / "a", _tiny_diffusers(tiny_pipeline_dir))
    assert len(report.generated) == 3
    first = [(tmp_path / "a" / image_filename(i)) for i in items["item_id"]]
    assert all(image_backend(p) == "diffusers" and Image.open(p).size == (32, 32) for p in first)
    generate_images(items.iloc[[2, 0]], tmp_path / "b", _tiny_diffusers(tiny_pipeline_dir))  # other batches
    for item_id in items["item_id"].iloc[[0, 2]]:
        # Same seed per item whatever the batch; float sums in another batch shape may round one level off.
        np.testing.assert_allclose(
            np.asarray(Image.open(tmp_path / "a" / image_filename(item_id))).astype(int),
            np.asarray(Image.open(tmp_path / "b" / image_filename(item_id))).astype(int),
            atol=2,
        )


def test_diffusers_replaces_placeholders_only_when_asked(tmp_path, tiny_dataset, tiny_pipeline_dir):
    items = tiny_dataset.items.head(2)
    generate_images(items, tmp_path)
    assert generate_images(items, tmp_path, _tiny_diffusers(tiny_pipeline_dir)).generated == []
    replaced = generate_images(items, tmp_path, _tiny_diffusers(tiny_pipeline_dir, replace_placeholders=True))
    assert len(replaced.generated) == 2
    inventory = image_inventory(items["item_id"], tmp_path)
    assert inventory["backend"].tolist() == ["diffusers", "diffusers"] and not inventory["is_placeholder"].any()


def test_missing_diffusion_weights_give_a_clear_error(tmp_path, tiny_dataset):
    with pytest.raises(ImageGenerationError, match="cannot be loaded.*--backend placeholder"):
        generate_images(tiny_dataset.items.head(1), tmp_path, _tiny_diffusers(tmp_path / "no-model"))


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown image backend 'dalle'"):
        ImageGenerationConfig(backend="dalle")


def test_command_line_generates_missing_images(tmp_path, tiny_dataset, capsys):
    items_path = tmp_path / "items.parquet"
    storage.write_parquet(tiny_dataset.items.head(5), items_path)
    assert main(["--items", str(items_path), "--output", str(tmp_path / "out")]) == 0
    assert "5 generated" in capsys.readouterr().out
    assert main(["--items", str(items_path), "--output", str(tmp_path / "out")]) == 0
    second_run = capsys.readouterr().out
    assert "0 generated" in second_run and "5 already present" in second_run
    assert len(list((tmp_path / "out").iterdir())) == 5


@pytest.mark.cuda
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_tiny_diffusers_runs_in_fp16_on_cuda(tmp_path, tiny_dataset, tiny_pipeline_dir):
    config = ImageGenerationConfig(
        backend="diffusers", model=str(tiny_pipeline_dir), device="cuda", image_size=32, steps=2, batch_size=2
    )
    report = generate_images(tiny_dataset.items.head(4), tmp_path, config)
    assert len(report.generated) == 4
    assert all(Image.open(tmp_path / image_filename(i)).size == (32, 32) for i in report.generated)
