"""Splitting keyed rows into shards that separate processes encode, and putting the results back together.

Why: encoding is per row and independent, so a table too slow for one machine (item texts, product
images) splits into N shards, each encoded in its own process, pod or GPU, and the shards' tables
concatenated are the table. Which shard a key belongs to depends on the key and N alone (a hash of
its UTF-8 text, not Python's per-process `hash`), never on row order or on which process asks: every
shard worker computes the same split independently, and a re-run or a grown catalog sends every
existing key to the shard it was in before, so each shard's incremental update reuses its own rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd


def shard_numbers(ids: Sequence, n_shards: int) -> np.ndarray:
    """[len(ids)] int: the shard (0 .. n_shards - 1) of each id, from a stable hash of str(id)."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be at least 1, got {n_shards}")
    hashes = np.fromiter(
        (int.from_bytes(hashlib.blake2b(str(key).encode("utf-8"), digest_size=8).digest(), "big") for key in ids),
        dtype=np.uint64,
        count=len(ids),
    )
    return (hashes % np.uint64(n_shards)).astype(np.int64)


def shard_of(ids: Sequence, shard: int, n_shards: int) -> np.ndarray:
    """[len(ids)] bool: which ids belong to shard `shard` of `n_shards` (select the rows a shard worker encodes)."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard must be in 0..{n_shards - 1}, got {shard}")
    return shard_numbers(ids, n_shards) == shard


def merge_shards(tables: Sequence[pd.DataFrame], key_column: str, ids: Sequence) -> pd.DataFrame:
    """The shards' rows as one table in the order of `ids`, after checking they cover `ids` exactly once.

    A key in two shards (shards from runs with different shard counts, a worker run twice on other
    data) or a key missing from all of them (a shard that failed or was left out) is an error naming
    how many keys and a few of them, never a silently short or doubled table.
    """
    wanted = pd.Index([str(key) for key in ids])
    if wanted.has_duplicates:
        raise ValueError(
            f"ids: {int(wanted.duplicated().sum())} duplicate key(s), e.g. {list(wanted[wanted.duplicated()][:3])}"
        )
    for number, table in enumerate(tables):
        if key_column not in table.columns:
            raise ValueError(f"shard {number}: no '{key_column}' column (columns: {list(table.columns)})")
    combined = pd.concat(list(tables), ignore_index=True) if len(tables) else pd.DataFrame({key_column: []})
    keys = pd.Index(combined[key_column].astype(str))
    doubled = keys[keys.duplicated()].unique()
    if len(doubled):
        raise ValueError(f"{len(doubled)} {key_column}(s) appear in more than one shard row, e.g. {list(doubled[:3])}")
    missing, extra = wanted.difference(keys), keys.difference(wanted)
    if len(missing) or len(extra):
        raise ValueError(
            f"the shards do not cover the ids: {len(missing)} {key_column}(s) missing (e.g. {list(missing[:3])}), "
            f"{len(extra)} not asked for (e.g. {list(extra[:3])})"
        )
    return combined.iloc[keys.get_indexer(wanted)].reset_index(drop=True)
