"""Issue 8 (media part): an image-generation or embedding run killed midway keeps what it finished.

Each test SIGKILLs a subprocess once it has durable work on disk, reruns in-process, and checks
that the finished work is reused and the end result equals an uninterrupted run's.
"""

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from rec_core import storage
from rec_core.data.paths import image_filename
from rec_core.embeddings import Checkpoint, embedding_matrix, embedding_table, read_checkpoint, text_embeddings
from rec_core.generation.generate_images import generate_images

N_ITEMS = 320
ROOT = Path(__file__).resolve().parents[1]


class HashEncoder:
    """Deterministic across processes (vectors seeded by sha256 of the text); counts what it encodes."""

    model_id, dimension = "hash-encoder-v1", 8

    def __init__(self, seconds_per_call: float = 0.0):
        self.seconds_per_call, self.encoded_texts = seconds_per_call, 0

    def encode(self, texts):
        time.sleep(self.seconds_per_call)
        self.encoded_texts += len(texts)
        seeds = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little") for t in texts]
        vectors = np.stack([np.random.default_rng(s).normal(size=self.dimension) for s in seeds]).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)  # [len(texts), dimension]


def _items(n: int = N_ITEMS) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [f"I{i:06d}" for i in range(n)],
            "product_name": [f"Sonaro Wireless Headphones model {i}" for i in range(n)],
            "category": ["Electronics|Audio|Headphones" if i % 2 else "Home|Kitchen|Kettles" for i in range(n)],
            "discounted_price": [10.0 + i for i in range(n)],
            "about_product": [
                f"Closed-back over-ear headphones, variant {i}, with a long battery life." for i in range(n)
            ],
        }
    )


def _texts(items: pd.DataFrame) -> dict[str, list[str]]:
    return {"name_embedding": items["product_name"].tolist(), "description_embedding": items["about_product"].tolist()}


def _kill_when(proc: subprocess.Popen, condition, timeout_s: float = 60.0) -> None:
    """SIGKILLs `proc` as soon as `condition()` holds; fails if the run ended (or hung) first."""
    deadline = time.time() + timeout_s
    while not condition():
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()}"
        assert time.time() < deadline, "the run made no durable progress in time"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _subprocess(script: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


SLOW_IMAGES = """
    import sys, time
    import pandas as pd
    from rec_core.generation import generate_images as gi
    draw = gi.PlaceholderRenderer.render
    def slow_render(self, batch):  # a slow backend: the kill lands with batches still to draw
        time.sleep(0.3)
        return draw(self, batch)
    gi.PlaceholderRenderer.render = slow_render
    gi.generate_images(pd.read_parquet(sys.argv[1]), sys.argv[2])
"""


def _final_images(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.glob("*.png")}


def test_killed_image_run_keeps_finished_images_and_the_rerun_draws_only_the_rest(tmp_path):
    items = _items()
    storage.write_parquet(items, tmp_path / "items.parquet")
    killed_dir = tmp_path / "killed"
    proc = _subprocess(SLOW_IMAGES, str(tmp_path / "items.parquet"), str(killed_dir))
    _kill_when(proc, lambda: killed_dir.exists() and any(killed_dir.glob("*.png")))

    names = {image_filename(i): i for i in items["item_id"]}
    kept = _final_images(killed_dir)
    assert 0 < len(kept) < len(items)
    assert set(kept) <= set(names)  # only final names, each a complete image (temporary files are hidden)
    for name in kept:
        with Image.open(killed_dir / name) as image:
            image.load()
            assert image.size == (256, 256)
    kept_mtimes = {name: (killed_dir / name).stat().st_mtime_ns for name in kept}

    rerun = generate_images(items, killed_dir)
    assert rerun.existing == len(kept)
    assert sorted(rerun.generated) == sorted(i for n, i in names.items() if n not in kept)
    assert {name: (killed_dir / name).stat().st_mtime_ns for name in kept} == kept_mtimes  # not redrawn

    uninterrupted = tmp_path / "uninterrupted"
    generate_images(items, uninterrupted)
    assert _final_images(killed_dir) == _final_images(uninterrupted)


SLOW_ENCODING = """
    import sys
    import pandas as pd
    sys.path.insert(0, sys.argv[3])
    from test_faults_media import HashEncoder, _texts
    from rec_core.embeddings import Checkpoint, text_embeddings
    items = pd.read_parquet(sys.argv[1])
    checkpoint = Checkpoint(sys.argv[2], every_s=0.0, chunk_rows=16)  # a part after every 16 rows
    text_embeddings("item_id", items["item_id"], _texts(items), HashEncoder(seconds_per_call=0.05),
                    checkpoint=checkpoint)
    raise SystemExit("finished before the kill")
"""


def test_killed_embedding_run_keeps_checkpointed_rows_for_the_next_run(tmp_path):
    items = _items()
    storage.write_parquet(items, tmp_path / "items.parquet")
    checkpoint_dir = tmp_path / "checkpoints" / "item_text_embeddings"
    proc = _subprocess(SLOW_ENCODING, str(tmp_path / "items.parquet"), str(checkpoint_dir), str(Path(__file__).parent))
    _kill_when(proc, lambda: checkpoint_dir.exists() and len(list(checkpoint_dir.glob("part-*.parquet"))) >= 2)

    saved = read_checkpoint(checkpoint_dir)
    assert 0 < len(saved) < len(items)
    encoder = HashEncoder()
    resumed = text_embeddings(
        "item_id", items["item_id"], _texts(items), encoder, checkpoint=Checkpoint(checkpoint_dir)
    )
    assert resumed.reused >= len(saved) and resumed.encoded == len(items) - resumed.reused > 0
    assert encoder.encoded_texts == 2 * resumed.encoded  # name and description of the unsaved rows only
    assert not checkpoint_dir.exists()  # removed once the table is complete

    uninterrupted = text_embeddings("item_id", items["item_id"], _texts(items), HashEncoder())
    pd.testing.assert_frame_equal(
        resumed.table[["item_id", "model_id", "input_hash"]], uninterrupted.table[["item_id", "model_id", "input_hash"]]
    )
    for column in ("name_embedding", "description_embedding"):
        np.testing.assert_array_equal(
            embedding_matrix(resumed.table, column), embedding_matrix(uninterrupted.table, column)
        )


def test_checkpoint_rows_of_another_model_or_input_are_not_reused(tmp_path):
    items = _items(40)
    checkpoint_dir = tmp_path / "checkpoints"
    first = text_embeddings("item_id", items["item_id"], _texts(items), HashEncoder())
    storage.write_parquet(
        embedding_table(first.table.head(30), ["name_embedding", "description_embedding"], 8),
        checkpoint_dir / "part-old-00000.parquet",
    )  # as a killed run leaves it
    items.loc[3, "about_product"] = "a changed description"

    class OtherModel(HashEncoder):
        model_id = "hash-encoder-v2"

    other = OtherModel()
    assert (
        text_embeddings(
            "item_id", items["item_id"], _texts(items), other, checkpoint=Checkpoint(checkpoint_dir)
        ).encoded
        == 40
    )
    storage.write_parquet(
        embedding_table(first.table.head(30), ["name_embedding", "description_embedding"], 8),
        checkpoint_dir / "part-old-00000.parquet",
    )
    same = HashEncoder()
    update = text_embeddings("item_id", items["item_id"], _texts(items), same, checkpoint=Checkpoint(checkpoint_dir))
    assert (update.encoded, update.reused, update.encoded_vectors) == (11, 29, 21)  # row 3: its description only


@pytest.mark.parametrize("every_s, expected_parts", [(0.0, 3), (3600.0, 0)])
def test_parts_are_written_per_interval_and_never_after_the_last_chunk(tmp_path, every_s, expected_parts, monkeypatch):
    written = []
    monkeypatch.setattr(storage, "write_parquet", lambda table, path: written.append((len(table), Path(path).name)))
    items = _items(40)
    update = text_embeddings(
        "item_id",
        items["item_id"],
        _texts(items),
        HashEncoder(),
        checkpoint=Checkpoint(tmp_path / "parts", every_s=every_s, chunk_rows=10),
    )
    assert update.encoded == 40
    assert [rows for rows, _ in written] == [10] * expected_parts
    assert len({name for _, name in written}) == expected_parts
