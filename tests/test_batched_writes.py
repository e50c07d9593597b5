"""Batched atomic writes (`storage.write_files`): one durability barrier per batch of images, never a
partial file under a final name, on local disk and on object storage."""

import os
import sys

import pytest
from PIL import Image

from rec_core import storage
from rec_core.data.paths import image_filename
from rec_core.generation.generate_images import PLACEHOLDER_BATCH, generate_images, image_inventory
from tests.test_faults_media import _items
from tests.test_object_storage import bucket  # noqa: F401  (fixture)


def test_a_batch_is_published_whole_and_leaves_no_temporaries(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"old")
    storage.write_files({tmp_path / "a.bin": b"new a", tmp_path / "sub" / "b.bin": b"new b"})
    assert (tmp_path / "a.bin").read_bytes() == b"new a" and (tmp_path / "sub" / "b.bin").read_bytes() == b"new b"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.bin", "b.bin"]


def test_a_failed_barrier_publishes_nothing_and_cleans_up(tmp_path, monkeypatch):
    (tmp_path / "a.bin").write_bytes(b"old")

    def failing_flush(paths):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(storage, "_flush_file_data", failing_flush)
    with pytest.raises(OSError, match="Input/output error"):
        storage.write_files({tmp_path / "a.bin": b"new a", tmp_path / "b.bin": b"new b"})
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"] and (tmp_path / "a.bin").read_bytes() == b"old"


def test_images_get_one_barrier_per_batch_not_one_per_file(tmp_path, monkeypatch):
    barriers: list[int] = []
    flush = storage._flush_file_data

    def counting_flush(paths):
        barriers.append(len(paths))
        flush(paths)

    monkeypatch.setattr(storage, "_flush_file_data", counting_flush)
    fsyncs: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1])
    items = _items(2 * PLACEHOLDER_BATCH + 3)
    report = generate_images(items, tmp_path)
    assert len(report.generated) == len(items)
    assert barriers == [PLACEHOLDER_BATCH, PLACEHOLDER_BATCH, 3]
    # Linux: syncfs is the barrier and only the directory is fsynced, once per batch (elsewhere a fsync per file)
    assert len(fsyncs) == (len(barriers) if sys.platform == "linux" else len(items) + len(barriers))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(items["item_id"].map(image_filename))


def test_a_killed_batch_leaves_hidden_temporaries_that_the_next_run_removes(tmp_path, monkeypatch):
    items = _items(3)
    stale = tmp_path / f".{image_filename(items['item_id'][0])}.tmp-deadbeef"
    stale.write_bytes(b"half an image")
    os.utime(stale, (0, 0))  # older than storage.STALE_AFTER_S
    generate_images(items, tmp_path)
    assert not stale.exists()
    inventory = image_inventory(items["item_id"], tmp_path)
    assert inventory["item_id"].tolist() == items["item_id"].tolist() and inventory["is_placeholder"].all()


def test_images_on_object_storage_are_one_put_each(bucket):  # noqa: F811
    items = _items(5)
    output = f"{bucket}/product_images"
    assert len(generate_images(items, output).generated) == 5
    assert generate_images(items, output).existing == 5
    inventory = image_inventory(items["item_id"], output)
    assert inventory["backend"].tolist() == ["placeholder"] * 5
    with storage.as_path(f"{output}/{image_filename(items['item_id'][0])}").open("rb") as fh:
        assert Image.open(fh).size == (256, 256)
