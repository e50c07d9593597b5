"""Where per-user serving features come from: the `FeatureSource` protocol and its in-memory implementation.

A source answers two questions per user id: the precomputed embedding, and the profile that
filters and cold starts read. By default it is `InMemoryFeatureSource`, built from the
`user_embeddings`, `users` and `interactions` artifacts (`vector_table` writes the first); a
feature store can be another (`rec_core.feature_store.FeastFeatureSource`).

Two optional capabilities are declared as protocols, checked with `isinstance`, so a source
says what it can do by what it defines: `HoldsUserEmbeddings` (the whole matrix in memory,
whose width is checked against the item index at load) and `VersionedFeatureSource` (each
vector comes with the model version that produced it, so a release only scores its own
model's vectors: `ReleaseCheckedFeatures`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
import pyarrow as pa

from rec_core.data.schema import split_pipe
from rec_core.embeddings import embedding_matrix, fixed_size_vectors
from rec_core.filtering import UserProfile

log = logging.getLogger(__name__)


@runtime_checkable
class FeatureSource(Protocol):
    """Where per-user serving features come from (in memory by default; a feature store later)."""

    def user_embedding(self, user_id: str) -> np.ndarray | None:
        """The user's precomputed unit vector [dim], or None when the source has none."""

    def user_profile(self, user_id: str) -> UserProfile | None:
        """Demographics, stated preferences and past interactions, or None for an unknown user."""


@runtime_checkable
class HoldsUserEmbeddings(Protocol):
    """A source holding every user's vector as one matrix, which loading checks against the item index."""

    embeddings: np.ndarray  # [n_users, dim]


@runtime_checkable
class VersionedFeatureSource(Protocol):
    """A source that reports which model produced each user vector (a feature store written by several runs)."""

    def user_vector(self, user_id: str) -> tuple[np.ndarray | None, str | None]:
        """(the user's vector or None, the model version it came from or None), in one read."""


class InMemoryFeatureSource:
    """User embeddings and profiles held in memory, from the `user_embeddings`, `users` and `interactions` artifacts."""

    def __init__(self, user_ids: Sequence[str], embeddings: np.ndarray, profiles: Mapping[str, UserProfile]):
        self.user_ids = [str(u) for u in user_ids]
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)  # [n_users, dim]
        self.row_of = {user_id: row for row, user_id in enumerate(self.user_ids)}
        self.profiles = dict(profiles)

    @classmethod
    def from_tables(
        cls, user_embeddings: pd.DataFrame, users: pd.DataFrame | None, interactions: pd.DataFrame | None
    ) -> InMemoryFeatureSource:
        return cls(
            user_embeddings["user_id"].astype(str).tolist(),
            embedding_matrix(user_embeddings, "embedding"),
            build_profiles(users, interactions),
        )

    def user_embedding(self, user_id: str) -> np.ndarray | None:
        row = self.row_of.get(user_id)
        return None if row is None else self.embeddings[row]

    def user_profile(self, user_id: str) -> UserProfile | None:
        return self.profiles.get(user_id)


def build_profiles(users: pd.DataFrame | None, interactions: pd.DataFrame | None) -> dict[str, UserProfile]:
    """One `UserProfile` per user: demographics, stated preferences, item ids per interaction type."""
    interacted: dict[str, dict[str, frozenset[str]]] = {}
    if interactions is not None and len(interactions):
        grouped = interactions.groupby(["user_id", "interaction_type"], sort=False)["item_id"].agg(frozenset)
        for (user_id, kind), item_ids in grouped.items():
            interacted.setdefault(str(user_id), {})[str(kind)] = item_ids
    profiles: dict[str, UserProfile] = {}
    if users is not None:
        for row in users[["user_id", "age", "gender", "preferences"]].itertuples(index=False):
            user_id = str(row.user_id)
            age = None if row.age is None or pd.isna(row.age) else int(row.age)
            gender = None if row.gender is None or pd.isna(row.gender) else str(row.gender)
            preferences = tuple(split_pipe(row.preferences))
            profiles[user_id] = UserProfile(user_id, age, gender, preferences, interacted.get(user_id, {}))
    for user_id, seen in interacted.items():
        profiles.setdefault(user_id, UserProfile(user_id, interacted=seen))
    return profiles


class ReleaseCheckedFeatures:
    """A feature source whose user vectors are checked against the model of the release being served.

    A store such as Feast may hold vectors of another model than the released index (pushed by a
    run whose model the gate rejected, or not yet pushed for a rollback). A vector is used only when
    the source says it comes from the released model; otherwise the release's own vector for that
    user, else none (the Recommender then cold-starts the user from the profile). Each fallback is
    logged. Sources that do not report versions (not a `VersionedFeatureSource`) are passed through.
    """

    def __init__(self, source: FeatureSource, model_version: str, release_vectors: InMemoryFeatureSource):
        self.source = source
        self.model_version = model_version
        self.release_vectors = release_vectors  # the release's own user_embeddings

    def user_embedding(self, user_id: str) -> np.ndarray | None:
        if not isinstance(self.source, VersionedFeatureSource):
            return self.source.user_embedding(user_id)
        vector, version = self.source.user_vector(user_id)
        if vector is not None and version == self.model_version:
            return vector
        fallback = self.release_vectors.user_embedding(user_id)
        if vector is not None:
            log.warning(
                "user %s: the feature store's vector comes from model %s, the release serves model %s; using %s",
                user_id,
                version or "unknown",
                self.model_version,
                "the release's vector" if fallback is not None else "a cold start",
            )
        return fallback

    def user_profile(self, user_id: str) -> UserProfile | None:
        return self.source.user_profile(user_id)


def vector_table(key: str, ids: Sequence[str], vectors: np.ndarray, model_version: str | None = None) -> pa.Table:
    """An `item_embeddings` / `user_embeddings` table: `key`, `embedding` (fixed-size float32 lists) and,
    when given, `model_version` (the model the vectors come from, checked when they are released).

    An Arrow table rather than a DataFrame: pandas cannot keep the fixed-size list type through parquet.
    """
    columns = {key: pa.array([str(i) for i in ids], pa.string()), "embedding": fixed_size_vectors(vectors)}
    if model_version is not None:
        columns["model_version"] = pa.array([model_version] * len(columns[key]), pa.string())
    return pa.table(columns)
