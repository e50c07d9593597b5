"""Issue 8 (storage part): artifacts survive killed writers, concurrent writers and a full disk."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from rec_core import storage
from rec_core.storage import atomic_directory, write_parquet

WRITER = textwrap.dedent("""
    import sys, numpy as np, pandas as pd
    from rec_core.storage import write_parquet
    target, version = sys.argv[1], int(sys.argv[2])
    frame = pd.DataFrame({"version": np.full(400_000, version), "x": np.arange(400_000)})
    print("ready", flush=True)
    while True:
        write_parquet(frame, target)
""")


def _frame(version: int) -> pd.DataFrame:
    return pd.DataFrame({"version": np.full(400_000, version), "x": np.arange(400_000)})


def _assert_complete(path, versions):
    table = pq.read_table(path).to_pandas()
    assert len(table) == 400_000
    assert table["version"].nunique() == 1 and int(table["version"].iloc[0]) in versions


def test_sigkill_during_writes_leaves_a_complete_file(tmp_path):
    target = tmp_path / "table.parquet"
    write_parquet(_frame(0), target)
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), "1"], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.3 + 0.2 * attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _assert_complete(target, {0, 1})


def test_concurrent_writers_leave_one_consistent_version(tmp_path):
    target = tmp_path / "table.parquet"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(v)], stdout=subprocess.PIPE) for v in (1, 2)
    ]
    for w in writers:
        assert w.stdout.readline().strip() == b"ready"
    deadline = time.time() + 3
    reads = 0
    while time.time() < deadline:
        if target.exists():
            _assert_complete(target, {1, 2})  # a reader never sees a partial or mixed file
            reads += 1
    for w in writers:
        w.kill()
        w.wait()
    _assert_complete(target, {1, 2})
    assert reads > 0


def test_stale_temporary_files_are_swept(tmp_path):
    target = tmp_path / "table.parquet"
    leftover = tmp_path / ".table.parquet.tmp-deadbeef"
    leftover.write_bytes(b"partial")
    old = time.time() - 2 * storage.STALE_AFTER_S
    os.utime(leftover, (old, old))
    write_parquet(_frame(3), target)
    assert not leftover.exists()
    _assert_complete(target, {3})


@pytest.fixture()
def tiny_disk(tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_disk_full_keeps_previous_artifacts(tiny_disk):
    target = tiny_disk / "table.parquet"
    small = pd.DataFrame({"version": [1] * 10, "x": range(10)})
    write_parquet(small, target)
    before = target.read_bytes()
    noise = pd.DataFrame({"version": 2, "x": np.random.default_rng(0).random(2_000_000)})  # ~16 MB > 2 MB disk
    with pytest.raises(OSError):
        write_parquet(noise, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["table.parquet"]
    with pytest.raises(OSError):
        with atomic_directory(tiny_disk / "model") as staging:
            (staging / "weights.bin").write_bytes(os.urandom(4_000_000))
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["table.parquet"]


def test_directory_swap_always_leaves_a_complete_version(tmp_path):
    target = tmp_path / "model"
    with atomic_directory(target) as staging:
        (staging / "weights.bin").write_bytes(b"old")
    with atomic_directory(target) as staging:
        (staging / "weights.bin").write_bytes(b"new")
    assert (target / "weights.bin").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # the old version is gone, nothing half-left


@pytest.mark.skipif(sys.platform != "linux", reason="renameat2 exchange is Linux-only")
def test_directory_swap_is_one_exchange_on_linux(tmp_path, monkeypatch):
    """No move-aside step: with os.replace unusable the swap still happens, as one exchange."""
    target = tmp_path / "model"
    with atomic_directory(target) as staging:
        (staging / "weights.bin").write_bytes(b"old")

    def no_replace(*args):
        raise AssertionError("the old version was moved aside instead of exchanged")

    monkeypatch.setattr(storage.os, "replace", no_replace)
    with atomic_directory(target) as staging:
        (staging / "weights.bin").write_bytes(b"new")
    assert (target / "weights.bin").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
