"""Incremental embedding tables: encode only the rows whose input or model changed.

An embedding table has a key column, one or more vector columns, `model_id` (what produced
the vectors) and `input_hash` (per vector column, a hash of its input, joined by '-'). Updating
it against the previous version reuses every vector whose key, model id and input hash all
match and encodes the rest, so re-materializing after a small catalog change costs a small fraction
of a full run. Vectors are stored in parquet as `fixed_size_list<float32>[dimension]`.

A long update can checkpoint: every so often it writes the rows encoded so far as a part file
in a checkpoint folder, and the next update reuses those rows under the same rule as the previous
table's, so a run killed midway loses at most the last interval of encoding. Given a `Progress`,
an update encodes in chunks and reports the rows done, their rate and an ETA after each.

Identical inputs are encoded once: at 200,000 users the preference sentences take about 1,500
distinct values, so the encoder sees each distinct text once and its vector is copied to every
row (and vector column) that holds it.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

from rec_core import storage
from rec_core.data.paths import ENCODING_CHECKPOINTS_DIR
from rec_core.data.schema import split_pipe
from rec_core.progress import Progress

MODEL_ID = "model_id"
INPUT_HASH = "input_hash"


def text_hash(text: str) -> str:
    """A stable 16-hex hash of one input text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def bytes_hash(data: bytes) -> str:
    """A stable 16-hex hash of one input file's bytes."""
    return hashlib.sha256(data).hexdigest()[:16]


def embedding_matrix(frame: pd.DataFrame, column: str) -> np.ndarray:
    """The vectors of `column` (one array or list per row) as a float32 matrix [len(frame), dimension]."""
    if frame.empty:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([np.asarray(v, dtype=np.float32) for v in frame[column].to_numpy()])


def fixed_size_vectors(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """A float32 matrix [n, dimension] as an Arrow column of fixed-size lists, the vector type parquet keeps."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), pa.float32()), matrix.shape[1])


def embedding_table(frame: pd.DataFrame, vector_columns: Sequence[str], dimension: int) -> pa.Table:
    """`frame` as an Arrow table whose vector columns are `fixed_size_list<float32>[dimension]`.

    Pandas cannot round-trip a fixed-size list dtype through parquet metadata, so the asset hands
    this Arrow table to the IO manager; reading it back gives one float32 array per row.
    """
    columns = {}
    for name in frame.columns:
        if name in vector_columns:
            columns[name] = fixed_size_vectors(embedding_matrix(frame, name).reshape(len(frame), dimension))
        else:
            columns[name] = pa.array(frame[name].to_numpy(), pa.string())
    return pa.table(columns)


def read_previous(path) -> pd.DataFrame | None:
    """The previous version of an embedding table, or None when absent or unreadable (then all rows re-encode)."""
    location = storage.as_path(path)
    try:
        if not location.exists():
            return None
        return storage.read_parquet(location).to_pandas()
    except (OSError, pa.ArrowInvalid):
        return None


@dataclass
class EmbeddingUpdate:
    table: pd.DataFrame  # key, vector columns, model_id, input_hash
    dimension: int  # length of every vector
    encoded: int  # rows with at least one vector encoded in this update
    reused: int  # rows whose vectors were all copied from the previous table
    encoded_vectors: int  # vectors encoded (a row whose description alone changed counts one)
    encode_seconds: float  # time spent in the encoder
    distinct_inputs: int = 0  # inputs the encoder saw: the encoded vectors' inputs, each distinct one once

    @property
    def rows_per_s(self) -> float:
        return self.encoded / self.encode_seconds if self.encode_seconds > 0 else 0.0


class Encoder(Protocol):
    """What an incremental update needs from an encoder; `dimension` may load the model."""

    @property
    def model_id(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    def encode(self, batch: list) -> np.ndarray: ...


@dataclass
class Checkpoint:
    """Where and how often an update saves what it has encoded, so a killed run keeps its work.

    Each save is a new part file (atomic, never rewritten), so saving costs the new rows only.
    """

    directory: (
        str | os.PathLike
    )  # folder of part files, e.g. `<root>/checkpoints/<table>`; removed when the update completes
    every_s: float = 30.0  # encoding seconds between parts: a kill loses at most about this much work
    chunk_rows: int = 1024  # rows per encoder call while checkpointing; a part may follow each call
    clear_when_done: bool = True  # False: the caller clears it after persisting the table (e.g. an IO manager)


def read_checkpoint(directory) -> pd.DataFrame | None:
    """The rows saved in a checkpoint folder (all parts), or None when there are none."""
    location = storage.as_path(directory)
    frames = []
    try:
        parts = sorted(location.glob("part-*.parquet")) if location.exists() else []
    except OSError:
        return None
    for part in parts:
        frame = read_previous(part)  # an unreadable part is skipped: its rows are encoded again
        if frame is not None:
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else None


def checkpoint_directory(root, table_name: str):
    """Where an embedding table named `table_name` under an artifact root keeps its checkpoint."""
    return storage.as_path(root) / ENCODING_CHECKPOINTS_DIR / table_name


def clear_checkpoint(directory) -> None:
    """Removes a checkpoint folder once its rows are part of a complete table."""
    location = storage.as_path(directory)
    if not location.exists():
        return
    for leftover in location.iterdir():
        leftover.unlink(missing_ok=True)  # a concurrent update may have cleared it first
    try:
        location.rmdir()
    except OSError:
        pass  # object storage has no folders to remove, or another writer put a part there


def update_embeddings(
    key_column: str,
    keys: Sequence[str],
    inputs: Mapping[str, Sequence],
    hashes: Mapping[str, Sequence[str]],
    encoder: Encoder,
    previous: pd.DataFrame | None = None,
    checkpoint: Checkpoint | None = None,
    progress: Progress | None = None,
) -> EmbeddingUpdate:
    """Builds the table for `keys`, reusing each vector of `previous` whose key, model id and input hash match.

    `inputs` maps each vector column to its per-row inputs (texts, image paths...) and `hashes` to
    their hashes; the stored `input_hash` joins a row's per-column hashes with '-', so a changed
    description re-encodes the description alone. Each distinct input is encoded once, whichever
    rows and columns hold it. Without a checkpoint everything to encode goes through `encoder.encode`
    in one call ([distinct inputs, dimension] float32); with one, rows saved there by a killed run are
    reused like rows of `previous`, encoding goes in chunks with a part saved every
    `checkpoint.every_s` seconds, and the folder is removed at the end. With a `progress`, encoding
    goes in chunks too (`checkpoint.chunk_rows`, else `Checkpoint.chunk_rows`), each reported there
    in rows. The encoder is untouched when all is reused.
    """
    keys = [str(k) for k in keys]
    columns = list(inputs)
    n = len(keys)
    saved = read_checkpoint(checkpoint.directory) if checkpoint else None
    candidates = _candidate_rows([previous, saved], key_column, columns, encoder.model_id)
    reuse_from = _reusable_rows(candidates, key_column, keys, hashes)  # column -> [n], -1: encode
    todo = {column: np.flatnonzero(reuse_from[column] < 0) for column in columns}
    n_todo = sum(len(rows) for rows in todo.values())
    dimension = encoder.dimension if n_todo or candidates.empty else embedding_matrix(candidates, columns[0]).shape[1]
    vectors = np.zeros((len(columns), n, dimension), dtype=np.float32)  # one block, so a slot is one flat index
    matrices = {column: vectors[position] for position, column in enumerate(columns)}  # views: [n, dimension]
    for column in columns:
        kept = reuse_from[column] >= 0
        if kept.any():
            matrices[column][kept] = embedding_matrix(candidates, column)[reuse_from[column][kept]]
    input_hash = ["-".join(parts) for parts in zip(*(hashes[c] for c in columns))] if columns else [""] * n
    plan = _DistinctInputs(inputs, todo, n)
    chunked = checkpoint is not None or progress is not None
    seconds = _encode_in_chunks(
        encoder,
        plan,
        vectors.reshape(-1, dimension),
        checkpoint,
        progress or Progress(key_column),
        chunked,
        lambda rows: _table_rows(key_column, keys, matrices, encoder.model_id, input_hash, rows, dimension),
    )
    table = _table_rows(key_column, keys, matrices, encoder.model_id, input_hash, np.arange(n), dimension=None)
    rows_encoded = len(plan.rows)
    if checkpoint is not None and checkpoint.clear_when_done:
        clear_checkpoint(checkpoint.directory)
    return EmbeddingUpdate(
        table=table,
        dimension=dimension,
        encoded=rows_encoded,
        reused=n - rows_encoded,
        encoded_vectors=n_todo,
        encode_seconds=seconds,
        distinct_inputs=len(plan.values),
    )


class _DistinctInputs:
    """The vector slots to encode, ordered by row, and the distinct inputs among them in order of first use.

    A slot is one (vector column, row) and `slots` its flat index into the [columns * n, dimension]
    block of vectors. Because distinct inputs are numbered in order of first use, the inputs first
    needed by any run of consecutive rows are a contiguous range of `values`, so a chunk of rows
    encodes one slice and copies the rest from slots already filled: linear in the slots.
    """

    def __init__(self, inputs: Mapping[str, Sequence], todo: dict[str, np.ndarray], n: int):
        columns = list(todo)
        rows = np.concatenate([np.zeros(0, np.int64), *(todo[c] for c in columns)])
        positions = np.concatenate([np.zeros(0, np.int64), *(np.full(len(todo[c]), p) for p, c in enumerate(columns))])
        order = np.argsort(rows, kind="stable")
        self.slot_rows, slot_columns = rows[order], positions[order]  # [slots], rows ascending
        self.slots = slot_columns * n + self.slot_rows  # [slots]
        values = np.empty(len(order), dtype=object)  # object: inputs may be paths, kept as given
        values[:] = [inputs[columns[c]][int(r)] for c, r in zip(slot_columns, self.slot_rows, strict=True)]
        self.codes, self.values = pd.factorize(values, use_na_sentinel=False)  # codes [slots]: index into values
        self.first_use = np.unique(self.codes, return_index=True)[1]  # [values]: ascending slot of first use
        self.rows = np.unique(self.slot_rows)  # rows with anything to encode


def _encode_in_chunks(
    encoder: Encoder,
    plan: _DistinctInputs,
    flat_vectors: np.ndarray,
    checkpoint: Checkpoint | None,
    progress: Progress,
    chunked: bool,
    rows_table,
) -> float:
    """Encodes `plan` into `flat_vectors` ([columns * n, dimension]), each distinct input once; returns the
    seconds spent in the encoder. Unless `chunked`, in one encoder call; else in chunks of rows, each
    reported to `progress`, and with a checkpoint the finished rows are saved as a part every
    `checkpoint.every_s`.

    A part holds complete rows (every vector column), so the next run can reuse them as they are.
    Part names carry a per-run token: parts of an earlier killed run are kept until a run completes.
    """
    rows = plan.rows
    chunk_rows = (
        max(1, checkpoint.chunk_rows if checkpoint else Checkpoint.chunk_rows) if chunked else max(1, len(rows))
    )
    run_token = uuid.uuid4().hex[:8]
    seconds, unsaved_from, parts, last_save = 0.0, 0, 0, time.perf_counter()
    slot_from, value_from = 0, 0
    progress.start(len(rows))
    for begin in range(0, len(rows), chunk_rows):
        chunk = rows[begin : begin + chunk_rows]
        slot_to = int(np.searchsorted(plan.slot_rows, chunk[-1], side="right"))
        value_to = int(np.searchsorted(plan.first_use, slot_to))  # inputs first used in this chunk's slots
        if value_to > value_from:  # a chunk of repeats alone has nothing new to encode
            start = time.perf_counter()
            encoded = np.asarray(encoder.encode(list(plan.values[value_from:value_to])), dtype=np.float32)
            seconds += time.perf_counter() - start
            flat_vectors[plan.slots[plan.first_use[value_from:value_to]]] = encoded
        chunk_slots = plan.slots[slot_from:slot_to]
        flat_vectors[chunk_slots] = flat_vectors[plan.slots[plan.first_use[plan.codes[slot_from:slot_to]]]]
        slot_from, value_from = slot_to, value_to
        finished = begin + len(chunk)
        progress.advance(len(chunk), note=f"{value_to:,} distinct inputs encoded")
        if checkpoint and finished < len(rows) and time.perf_counter() - last_save >= checkpoint.every_s:
            storage.write_parquet(
                rows_table(rows[unsaved_from:finished]),
                storage.as_path(checkpoint.directory) / f"part-{run_token}-{parts:05d}.parquet",
            )
            unsaved_from, parts, last_save = finished, parts + 1, time.perf_counter()
    progress.finish(note=f"{value_from:,} distinct inputs encoded")
    return seconds


def _table_rows(
    key_column: str,
    keys: list[str],
    matrices: dict[str, np.ndarray],
    model_id: str,
    input_hash: list[str],
    rows: np.ndarray,
    dimension: int | None,
):
    """The embedding table restricted to `rows`: a DataFrame, or with a `dimension` the Arrow table to store."""
    table = pd.DataFrame({key_column: [keys[i] for i in rows]})
    for column, matrix in matrices.items():
        table[column] = list(matrix[rows])  # one float32 [dimension] array per row
    table[MODEL_ID] = model_id
    table[INPUT_HASH] = [input_hash[i] for i in rows]
    return table if dimension is None else embedding_table(table, list(matrices), dimension)


def _candidate_rows(
    frames: list[pd.DataFrame | None], key_column: str, columns: list[str], model_id: str
) -> pd.DataFrame:
    """The rows of earlier tables and checkpoints that `model_id` made for the same vector columns."""
    usable = []
    for frame in frames:
        if frame is None or frame.empty or not {key_column, MODEL_ID, INPUT_HASH, *columns} <= set(frame.columns):
            continue
        frame = frame[frame[MODEL_ID] == model_id]
        hash_parts = frame[INPUT_HASH].astype(str).str.count("-") + 1
        usable.append(frame[hash_parts == max(len(columns), 1)][[key_column, *columns, MODEL_ID, INPUT_HASH]])
    if not usable:
        return pd.DataFrame(columns=[key_column, *columns, MODEL_ID, INPUT_HASH])
    return pd.concat(usable, ignore_index=True)


def _reusable_rows(
    candidates: pd.DataFrame, key_column: str, keys: list[str], hashes: Mapping[str, Sequence[str]]
) -> dict[str, np.ndarray]:
    """Per vector column, for each key a row of `candidates` with the same key and input hash, or -1."""
    columns = list(hashes)
    if candidates.empty:
        return {column: np.full(len(keys), -1, dtype=np.int64) for column in columns}
    parts = candidates[INPUT_HASH].astype(str).str.split("-", expand=True)  # [rows, columns]
    wanted = pd.DataFrame({key_column: keys})
    reusable = {}
    for position, column in enumerate(columns):
        old = pd.DataFrame(
            {
                key_column: candidates[key_column].astype(str).to_numpy(),
                "hash": parts[position].to_numpy(),
                "row": np.arange(len(candidates)),
            }
        ).drop_duplicates([key_column, "hash"], keep="last")
        wanted["hash"] = np.asarray(hashes[column], dtype=object)
        aligned = wanted.merge(old, on=[key_column, "hash"], how="left")  # keeps the order of `keys`
        reusable[column] = aligned["row"].fillna(-1).to_numpy(dtype=np.int64)
    return reusable


class _EmptyTextsAsZero:
    """Wraps a text encoder so that empty texts get the zero vector instead of a forward pass."""

    def __init__(self, encoder: Encoder):
        self.inner = encoder
        self.model_id = encoder.model_id

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def encode(self, batch: list[str]) -> np.ndarray:
        filled = [i for i, text in enumerate(batch) if str(text).strip()]
        vectors = np.zeros((len(batch), self.dimension), dtype=np.float32)
        if filled:
            vectors[filled] = self.inner.encode([str(batch[i]) for i in filled])
        return vectors


def preference_sentence(preferences: str) -> str:
    """The text embedded for a user: 'Audio|Kitchen' -> 'Interested in Audio, Kitchen'; none -> '' (zero vector)."""
    nodes = split_pipe(preferences)
    return f"Interested in {', '.join(nodes)}" if nodes else ""


def text_embeddings(
    key_column: str,
    keys: Sequence[str],
    texts: dict[str, Sequence[str]],
    encoder: Encoder,
    previous: pd.DataFrame | None = None,
    checkpoint: Checkpoint | None = None,
    progress: Progress | None = None,
) -> EmbeddingUpdate:
    """`update_embeddings` for text columns, each text hashed on its own.

    An empty text gets the zero vector: it states nothing, so it should add nothing to a dot product
    (a user with no stated preferences) rather than contribute the embedding of an empty string.
    """
    texts = {column: [str(t) for t in values] for column, values in texts.items()}
    hashes = {column: [text_hash(t) for t in values] for column, values in texts.items()}
    return update_embeddings(
        key_column, keys, texts, hashes, _EmptyTextsAsZero(encoder), previous, checkpoint, progress
    )


class _ImageFileEncoder:
    """Reads image files through the input-hygiene loader and encodes them with CLIP."""

    def __init__(self, clip_encoder):
        self.inner = clip_encoder
        self.model_id = clip_encoder.model_id
        self.dimension = clip_encoder.dimension

    def encode(self, paths: list, chunk: int = 64) -> np.ndarray:
        from rec_core.images import load_image

        parts = [np.zeros((0, self.dimension), dtype=np.float32)]
        for start in range(0, len(paths), chunk):  # bounded memory: only `chunk` decoded images at a time
            images = [load_image(storage.as_path(p).read_bytes(), name=str(p)) for p in paths[start : start + chunk]]
            parts.append(self.inner.encode_image(images))
        return np.concatenate(parts)


def image_embeddings(
    key_column: str,
    keys: Sequence[str],
    paths: Sequence,
    clip_encoder,
    column: str,
    previous: pd.DataFrame | None = None,
    checkpoint: Checkpoint | None = None,
    progress: Progress | None = None,
) -> EmbeddingUpdate:
    """`update_embeddings` for image files; the input hash is the hash of each file's bytes."""
    hashes = {column: [bytes_hash(storage.as_path(p).read_bytes()) for p in paths]}
    return update_embeddings(
        key_column, keys, {column: list(paths)}, hashes, _ImageFileEncoder(clip_encoder), previous, checkpoint, progress
    )
