"""Incremental embedding tables: encode only the rows whose input or model changed.

An embedding table has a key column, one or more vector columns, `model_id` (what produced
the vectors) and `input_hash` (per vector column, a hash of its input, joined by '-'). Updating
it against the previous version reuses every vector whose key, model id and input hash all
match and encodes the rest, so re-materializing after a small catalog change costs a small fraction
of a full run. Vectors are stored in parquet as `fixed_size_list<float32>[dimension]`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from rec_core import storage

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


def embedding_table(frame: pd.DataFrame, vector_columns: Sequence[str], dimension: int) -> pa.Table:
    """`frame` as an Arrow table whose vector columns are `fixed_size_list<float32>[dimension]`.

    Pandas cannot round-trip a fixed-size list dtype through parquet metadata, so the asset hands
    this Arrow table to the IO manager; reading it back gives one float32 array per row.
    """
    columns = {}
    for name in frame.columns:
        if name in vector_columns:
            matrix = embedding_matrix(frame, name).reshape(len(frame), dimension)  # [n, dimension]
            columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), pa.float32()), dimension)
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


def update_embeddings(
    key_column: str,
    keys: Sequence[str],
    inputs: Mapping[str, Sequence],
    hashes: Mapping[str, Sequence[str]],
    encoder: Encoder,
    previous: pd.DataFrame | None = None,
) -> EmbeddingUpdate:
    """Builds the table for `keys`, reusing each vector of `previous` whose key, model id and input hash match.

    `inputs` maps each vector column to its per-row inputs (texts, image paths...) and `hashes` to
    their hashes; the stored `input_hash` joins a row's per-column hashes with '-', so a changed
    description re-encodes the description alone. Everything to encode goes through
    `encoder.encode` in one call ([n, dimension] float32); the encoder is untouched when all is reused.
    """
    keys = [str(k) for k in keys]
    columns = list(inputs)
    n = len(keys)
    reuse_from = _reusable_rows(previous, key_column, keys, hashes, encoder.model_id)  # column -> [n], -1: encode
    todo = {column: np.flatnonzero(reuse_from[column] < 0) for column in columns}
    n_todo = sum(len(rows) for rows in todo.values())
    if n_todo or previous is None or previous.empty:
        dimension = encoder.dimension
    else:
        dimension = embedding_matrix(previous, columns[0]).shape[1]
    matrices = {}
    for column in columns:
        matrices[column] = np.zeros((n, dimension), dtype=np.float32)  # [n, dimension]
        kept = reuse_from[column] >= 0
        if kept.any():
            matrices[column][kept] = embedding_matrix(previous, column)[reuse_from[column][kept]]
    start = time.perf_counter()
    if n_todo:
        encoded = np.asarray(encoder.encode([inputs[c][int(i)] for c in columns for i in todo[c]]), dtype=np.float32)
        offset = 0
        for column in columns:
            matrices[column][todo[column]] = encoded[offset : offset + len(todo[column])]
            offset += len(todo[column])
    seconds = time.perf_counter() - start
    table = pd.DataFrame({key_column: keys})
    for column, matrix in matrices.items():
        table[column] = list(matrix)  # one float32 [dimension] array per row
    table[MODEL_ID] = encoder.model_id
    table[INPUT_HASH] = ["-".join(parts) for parts in zip(*(hashes[c] for c in columns))] if columns else ""
    rows_encoded = len(np.unique(np.concatenate([np.zeros(0, np.int64), *todo.values()])))
    return EmbeddingUpdate(table=table, dimension=dimension, encoded=rows_encoded, reused=n - rows_encoded,
                           encoded_vectors=n_todo, encode_seconds=seconds)


def _reusable_rows(
    previous: pd.DataFrame | None, key_column: str, keys: list[str], hashes: Mapping[str, Sequence[str]], model_id: str
) -> dict[str, np.ndarray]:
    """Per vector column, for each key the row of `previous` whose vector still holds, or -1."""
    columns = list(hashes)
    nothing = {column: np.full(len(keys), -1, dtype=np.int64) for column in columns}
    if previous is None or previous.empty or not {key_column, MODEL_ID, INPUT_HASH, *columns} <= set(previous.columns):
        return nothing
    previous = previous.reset_index(drop=True)  # "row" below is a position in `previous`
    old = pd.DataFrame({key_column: previous[key_column].astype(str), "row": np.arange(len(previous))})
    old = old[(previous[MODEL_ID] == model_id).to_numpy()]
    parts = previous[INPUT_HASH].astype(str).str.split("-", expand=True).loc[old.index]
    if parts.shape[1] != len(columns):  # stored with other vector columns: nothing carries over
        return nothing
    for position, column in enumerate(columns):
        old[f"hash:{column}"] = parts[position].to_numpy()
    aligned = pd.DataFrame({key_column: keys}).merge(old.drop_duplicates(key_column, keep="last"), on=key_column,
                                                     how="left")
    rows = aligned["row"].fillna(-1).to_numpy(dtype=np.int64)
    return {column: np.where(aligned[f"hash:{column}"].to_numpy() == np.asarray(hashes[column], dtype=object), rows, -1)
            for column in columns}


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
    nodes = [node.strip() for node in str(preferences or "").split("|") if node.strip()]
    return f"Interested in {', '.join(nodes)}" if nodes else ""


def text_embeddings(
    key_column: str, keys: Sequence[str], texts: dict[str, Sequence[str]], encoder: Encoder,
    previous: pd.DataFrame | None = None,
) -> EmbeddingUpdate:
    """`update_embeddings` for text columns, each text hashed on its own.

    An empty text gets the zero vector: it states nothing, so it should add nothing to a dot product
    (a user with no stated preferences) rather than contribute the embedding of an empty string.
    """
    texts = {column: [str(t) for t in values] for column, values in texts.items()}
    hashes = {column: [text_hash(t) for t in values] for column, values in texts.items()}
    return update_embeddings(key_column, keys, texts, hashes, _EmptyTextsAsZero(encoder), previous)


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
    key_column: str, keys: Sequence[str], paths: Sequence, clip_encoder, column: str, previous: pd.DataFrame | None = None
) -> EmbeddingUpdate:
    """`update_embeddings` for image files; the input hash is the hash of each file's bytes."""
    hashes = {column: [bytes_hash(storage.as_path(p).read_bytes()) for p in paths]}
    return update_embeddings(key_column, keys, {column: list(paths)}, hashes, _ImageFileEncoder(clip_encoder), previous)
