"""Online reads: the feature values a backend serves from, per user and per displayed item."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rec_core.data.schema import INTERACTION_TYPES, split_pipe
from rec_core.feature_store import views
from rec_core.feature_store.outages import database_errors
from rec_core.feature_store.settings import PostgresSettings, load_feature_store

if TYPE_CHECKING:  # pragma: no cover
    from feast import FeatureStore

    from rec_core.filtering import UserProfile


def online_rows(store: FeatureStore, features, key: str, ids: list[str]) -> list[dict]:
    """One dict of feature values per id (None where the store has no value)."""
    with database_errors(store, "reading online features"):
        response = store.get_online_features(features=features, entity_rows=[{key: i} for i in ids]).to_dict()
    names = [n for n in response if n != key]
    return [{n: response[n][row] for n in names} for row in range(len(ids))]


class FeastFeatureSource:
    """User features and embeddings from the Feast online store: a `rec_core.serving.FeatureSource`.

    A backend built with it serves the values the last materialization or push wrote (a user whose
    profile changed after training is filtered and, without an embedding, cold-started on the new
    profile), not the ones frozen in the artifacts. Vector search stays in FAISS; Feast only stores
    vectors for lookup by id.
    """

    def __init__(self, store: FeatureStore):
        self.store = store

    @classmethod
    def from_repo(
        cls,
        repo_path: str | Path | None = None,
        profile: str | None = None,
        data_dir: str | Path | None = None,
        postgres: PostgresSettings | None = None,
    ) -> FeastFeatureSource:
        return cls(load_feature_store(repo_path, profile, data_dir, postgres))

    def _user_row(self, refs, user_id: str) -> dict:
        return online_rows(self.store, refs, views.USER_KEY, [str(user_id)])[0]

    def user_embedding(self, user_id: str) -> np.ndarray | None:
        """The user tower's vector [dim] (float32) as the model produced it, or None when none is online."""
        vector = self._user_row([views.USER_TOWER_EMBEDDINGS.ref("user_embedding")], user_id)["user_embedding"]
        return None if vector is None else np.asarray(vector, dtype=np.float32)

    def user_vector(self, user_id: str) -> tuple[np.ndarray | None, str | None]:
        """(the user tower's vector or None, the model version it came from or None), in one read: a
        Recommender serving a release uses the vector only when the version is the release's model."""
        tower = views.USER_TOWER_EMBEDDINGS
        row = self._user_row([tower.ref("user_embedding"), tower.ref("model_version")], user_id)
        vector = row["user_embedding"]
        return None if vector is None else np.asarray(vector, dtype=np.float32), row["model_version"]

    def user_profile(self, user_id: str) -> UserProfile | None:
        """Demographics, stated preferences and past interactions (a `UserProfile`), or None for an unknown user."""
        from rec_core.filtering import UserProfile

        row = self._user_row([*views.USER_PROFILE_REFS, *views.USER_HISTORY_REFS], user_id)
        if all(v is None for v in row.values()):
            return None
        preferences = tuple(split_pipe(row["preferences"]))
        interacted = {
            kind: frozenset(row[views.history_feature(kind)])
            for kind in INTERACTION_TYPES
            if row[views.history_feature(kind)]
        }
        age = row["age"]
        return UserProfile(str(user_id), None if age is None else int(age), row["gender"], preferences, interacted)

    def user_recommendations(self, user_id: str) -> tuple[list[str], np.ndarray] | None:
        """The precomputed top-k item ids and scores [k] of a user, or None."""
        top_k = views.USER_RECOMMENDATIONS
        row = self._user_row([top_k.ref("top_k_item_ids"), top_k.ref("top_k_scores")], user_id)
        if row["top_k_item_ids"] is None:
            return None
        return list(row["top_k_item_ids"]), np.asarray(row["top_k_scores"], dtype=np.float32)

    def serving_features(self, user_id: str) -> dict:
        """Every feature of the `user_serving` service for one user, in one read (None values when unknown)."""
        return self._user_row(self.store.get_feature_service(views.USER_SERVING_SERVICE, allow_cache=True), user_id)

    def item_display(self, item_ids: list[str]) -> list[dict]:
        """The `item_display` fields of each item, in order (None values for unknown items)."""
        service = self.store.get_feature_service(views.ITEM_DISPLAY_SERVICE, allow_cache=True)
        return online_rows(self.store, service, views.ITEM_KEY, [str(i) for i in item_ids])
