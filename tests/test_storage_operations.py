"""The storage operations that hide whether an artifact lives on local disk or on object storage."""

import fcntl
import re
from pathlib import Path

import pytest

from rec_core import storage
from tests.conftest import REPO
from tests.test_object_storage import bucket  # noqa: F401 - the moto-backed bucket fixture


def test_publish_files_swaps_a_local_directory_whole(tmp_path):
    target = tmp_path / "index"
    storage.publish_files(target, {"a.bin": b"old", "stale.bin": b"x"})
    storage.publish_files(target, {"a.bin": b"new", "report.json": b"{}"})
    assert sorted(p.name for p in target.iterdir()) == ["a.bin", "report.json"]  # the old version is gone whole
    assert (target / "a.bin").read_bytes() == b"new"
    assert not list(tmp_path.glob(".index.*"))  # no staging or old copy left beside it


def test_publish_files_on_object_storage_puts_the_marker_last(bucket, monkeypatch):  # noqa: F811
    written = []
    real_write = storage.write_bytes

    def recording_write(data, path):
        written.append(Path(str(path)).name)
        real_write(data, path)

    monkeypatch.setattr(storage, "write_bytes", recording_write)
    files = {"index.faiss": b"1", "item_ids.json": b"[]", "build_report.json": b"{}"}
    storage.publish_files(f"{bucket}/item_index", files)
    assert written == list(files)  # in the order given, so the completion marker is uploaded last
    assert (storage.as_path(f"{bucket}/item_index") / "build_report.json").read_bytes() == b"{}"


def test_remove_deletes_files_and_trees_locally_and_on_object_storage(tmp_path, bucket):  # noqa: F811
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "f").write_bytes(b"1")
    (tmp_path / "file").write_bytes(b"2")
    storage.remove(tmp_path / "tree")
    storage.remove(tmp_path / "file")
    assert list(tmp_path.iterdir()) == []

    storage.publish_files(f"{bucket}/old/version", {"a": b"1", "b": b"2"})
    storage.remove(storage.as_path(f"{bucket}/old"))
    assert not storage.as_path(f"{bucket}/old/version/a").exists()


def test_exclusive_lock_excludes_other_writers_locally_and_is_a_no_op_on_object_storage(tmp_path, bucket):  # noqa: F811
    with storage.exclusive_lock(tmp_path / "releases"):
        with open(tmp_path / "releases" / ".lock", "a") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(tmp_path / "releases" / ".lock", "a") as other:  # released when the block ends
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)

    with storage.exclusive_lock(f"{bucket}/releases"):
        pass
    assert not storage.as_path(f"{bucket}/releases/.lock").exists()


def test_local_copy_reads_local_folders_in_place_and_downloads_remote_ones(tmp_path, bucket):  # noqa: F811
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights").write_bytes(b"w")
    with storage.local_copy(tmp_path / "model", ["weights"]) as local:
        assert local == tmp_path / "model"

    storage.publish_files(f"{bucket}/model", {"weights": b"w", "config": b"c", "unused": b"u"})
    with storage.local_copy(f"{bucket}/model", ["weights", "config"]) as local:
        assert isinstance(local, Path) and sorted(p.name for p in local.iterdir()) == ["config", "weights"]
        assert (local / "weights").read_bytes() == b"w"
    assert not local.exists()  # the temporary copy is removed with the block


def test_require_local_and_local_work_dir():
    assert storage.require_local("file:///srv/artifacts", "why") == Path("/srv/artifacts")
    with pytest.raises(ValueError, match=r"s3://b/root is object storage: SQLite needs a local disk"):
        storage.require_local("s3://b/root", "SQLite needs a local disk")

    assert storage.local_work_dir("/srv/artifacts", "checkpoints") == Path("/srv/artifacts/checkpoints")
    remote = storage.local_work_dir("s3://b/root", "checkpoints")
    assert remote.name.startswith("rec_checkpoints-") and "://" not in str(remote)
    assert remote == storage.local_work_dir("s3://b/root", "checkpoints")  # a later run finds it again
    assert remote != storage.local_work_dir("s3://b/other", "checkpoints")


def test_only_the_storage_module_tells_local_from_object_storage():
    """Every local-versus-object-storage decision goes through a `rec_core.storage` operation."""
    pattern = re.compile(r"""is_remote|_on_object_storage|["']://["']\s+in\b|startswith\(\s*["'](s3|gs|file)://""")
    sources = [
        path
        for folder in ("rec_core", "rec_assets", "feature_repo")
        for path in sorted((REPO / folder).rglob("*.py"))
        if path != REPO / "rec_core" / "storage.py"
    ]
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in sources
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
