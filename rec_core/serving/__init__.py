"""`Recommender`: what a backend imports to answer recommendation and search requests.

`Recommender.load(root)` reads the artifacts of a materialization (no Dagster): the item table,
the item index, precomputed user embeddings, the two-tower model (for users with no history),
text embeddings (search) and CLIP embeddings (search by image). `reload()` swaps in a newly
published release while requests are being served; each answer carries its `release_id`.

`Recommender` is a facade: each method checks its arguments, takes the current `ServingState`
once and hands it to the part that answers. The parts, one job each:

- `results`: what comes back, `Recommendations`, and the `ServingError`s;
- `features`: `FeatureSource` (embedding and profile per user id), its optional capabilities
  as protocols, the in-memory source built from the artifacts, and `vector_table`;
- `config`: `RecommenderConfig` and the request checks against it;
- `state`: what one release serves, its reader and the hot reload;
- `users`: recommendations for a known user, or a cold start from features;
- `search`: search by text and by image; `query_encoders`: the encoders they load on first use;
- `topk`: the filtered top-k of one query, and of many users at once (`recommend_batch`).

`faiss_threads` (default 1) is set process-wide at construction: one request per core is the
fastest way to serve single requests, and the objects here are safe to share between threads.
`recommend_batch` (the offline top-k for every user) instead searches on every core for the
duration of the call.

Bad requests raise `ServingError` subclasses with a message fit for the caller; the
`Recommender` keeps no per-request state, so it keeps serving after an error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import faiss
import numpy as np
import pandas as pd

from rec_core.filtering import ItemAttributes, UserProfile
from rec_core.index import ItemIndex
from rec_core.release import (
    ITEM_INDEX_DIR,
    MODEL_DIR,
    model_version,
    published_build_id,
)
from rec_core.serving.config import RecommenderConfig, checked_k, request_rules
from rec_core.serving.features import (
    FeatureSource,
    HoldsUserEmbeddings,
    InMemoryFeatureSource,
    ReleaseCheckedFeatures,
    VersionedFeatureSource,
    build_profiles,
    vector_table,
)
from rec_core.serving.query_encoders import QueryEncoders
from rec_core.serving.results import (
    FeatureUnavailableError,
    InvalidRequestError,
    Recommendations,
    RecommendedItem,
    ServingError,
    UnknownItemError,
    UnknownUserError,
)
from rec_core.serving.search import image_search, text_search
from rec_core.serving.state import (
    LiveState,
    ReleaseArtifacts,
    ReleaseReader,
    ServingState,
)
from rec_core.serving.topk import batch_top_k, ranked
from rec_core.serving.users import recommend_features, recommend_user
from rec_core.storage import as_path


class Recommender:
    """Recommendations, similar items and search over one materialized catalog.

    Safe to share between threads: requests read one immutable `ServingState`, and the only
    things created lazily (the query encoders) are created under a lock.
    """

    def __init__(
        self,
        items: pd.DataFrame,
        index: ItemIndex,
        feature_source: FeatureSource,
        config: RecommenderConfig | None = None,
        encoder=None,
        item_text_embeddings: pd.DataFrame | None = None,
        item_clip_embeddings: pd.DataFrame | None = None,
        model_dir: str | None = None,
        *,
        release: dict | None = None,
        reader: ReleaseReader | None = None,
    ):
        """Serves the given tables; `release` (its manifest) and `reader` (which `reload` reads again) are
        what `load` passes when they come from an artifact root."""
        self.config = config or RecommenderConfig()
        faiss.omp_set_num_threads(self.config.faiss_threads)
        artifacts = ReleaseArtifacts(
            items, index, feature_source, encoder, item_text_embeddings, item_clip_embeddings, model_dir, release
        )
        self._live = LiveState(ServingState.build(artifacts, self.config), self.config, reader)
        self._encoders = QueryEncoders(self.config)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        feature_source: FeatureSource | None = None,
        config: RecommenderConfig | None = None,
        release: dict | None = None,
    ) -> Recommender:
        """Loads the current release of an artifact root (`release`: another manifest of it instead)."""
        config = config or RecommenderConfig()
        reader = ReleaseReader(as_path(path), feature_source)
        a = reader.read(config, release)
        return cls(
            a.items,
            a.index,
            a.feature_source,
            config,
            a.encoder,
            a.item_text_embeddings,
            a.item_clip_embeddings,
            a.model_dir,
            release=a.release,
            reader=reader,
        )

    def reload(self, force: bool = False) -> bool:
        """Swaps in the release (or, without releases, the index) published since the last load; True if it did.

        The new version (index, item table, text and image embeddings, the two-tower model and,
        unless a feature source was passed to `load`, the user embeddings and profiles) is read
        and checked completely before one reference is replaced, so requests keep being answered
        throughout: those already running finish on the old version, later ones use the new one.
        If the new version cannot be read, this raises and the old version keeps serving.
        Without `force`, nothing is read when the published release (index build) is the one served.
        Concurrent calls run one at a time.
        """
        return self._live.reload(force)

    @property
    def root(self):
        """The artifact root `load` read, which `reload` reads again; None when built from tables."""
        return None if self._live.reader is None else self._live.reader.root

    def published_build_id(self) -> str | None:
        """The build id of the item index now published under the artifact root (of its current release);
        None when there is no root, or no report at this instant (a swap, which `ItemIndex.load` waits out)."""
        return None if self.root is None else published_build_id(self.root)

    @property
    def release(self) -> dict | None:
        """The manifest of the release being served (`release_id`, `model_version`, `created_at`, ...);
        None when serving a root without releases."""
        release = self._live.state.release
        return None if release is None else dict(release)

    @property
    def build_id(self) -> str:
        """The build id of the item index being served."""
        return self._live.state.index.report.build_id

    @property
    def index(self) -> ItemIndex:
        return self._live.state.index

    @property
    def feature_source(self) -> FeatureSource:
        return self._live.state.feature_source

    @property
    def encoder(self):
        return self._live.state.encoder

    @property
    def model_dir(self) -> str | None:
        return self._live.state.model_dir

    @property
    def attributes(self) -> ItemAttributes:
        return self._live.state.attributes

    # ---- requests --------------------------------------------------------------------------
    def recommend(self, user_id: str, k: int = 10, filters: Sequence | None = None) -> Recommendations:
        """Top-k items for a known user.

        The embedding comes from the feature source; a user the source has a profile for but no
        embedding (signed up after the last materialization) is encoded on the fly from the
        profile, as a cold start. A user the source does not know at all is an `UnknownUserError`:
        silently answering with cold-start results would hide a wrong id.
        """
        state = self._live.state
        return recommend_user(state, self.config, self._encoders, user_id, checked_k(self.config, k), filters)

    def recommend_for_features(
        self, features: Mapping | UserProfile, k: int = 10, filters: Sequence | None = None
    ) -> Recommendations:
        """Top-k for a user with no history: `features` holds `age`, `gender` and `preferences`
        (category names, a list or a pipe-separated string); any may be missing."""
        state = self._live.state
        return recommend_features(state, self.config, self._encoders, features, checked_k(self.config, k), filters)

    def similar_items(self, item_id: str, k: int = 10, filters: Sequence | None = None) -> Recommendations:
        """The k items whose vectors are closest to `item_id`'s (itself excluded)."""
        state = self._live.state
        k = checked_k(self.config, k)
        row = state.index.position_of.get(str(item_id))
        if row is None:
            raise UnknownItemError(f"unknown item '{item_id}'")
        return ranked(
            state,
            self.config,
            state.index.vectors[row],
            k,
            None,
            request_rules(filters, self.config.search_filters),
            "similar",
            excluded=np.array([row]),
        )

    def search_by_text(self, query: str, k: int = 10, filters: Sequence | None = None) -> Recommendations:
        """Exact product-name matches, then prefix matches, then semantic matches on name and description."""
        state = self._live.state
        return text_search(state, self.config, self._encoders, query, checked_k(self.config, k), filters)

    def search_by_image(self, image, k: int = 10, filters: Sequence | None = None) -> Recommendations:
        """Items whose CLIP image embedding is closest to `image` (bytes, a file path or a PIL image)."""
        state = self._live.state
        return image_search(state, self.config, self._encoders, image, checked_k(self.config, k), filters)

    def recommend_batch(
        self,
        user_ids: Sequence[str],
        embeddings: np.ndarray,
        k: int = 10,
        filters: Sequence | None = None,
        batch_size: int = 65_536,
        threads: int | None = None,
    ) -> pd.DataFrame:
        """Top-k for many users at once: `user_id`, `top_k_item_ids`, `top_k_scores`; same answers as `recommend`.

        Each block of `batch_size` users is one multithreaded index search
        (`ItemIndex.search_batch`, all cores unless `threads` says otherwise) that applies the
        filters while it scans: catalog-level rules (availability, category, price, rating) as
        one mask over the catalog, per-user exclusions (`ExcludeInteracted`) as the (user, item)
        pairs to skip. So it asks for exactly k, never over-fetches, and only users whose probed
        cells hold fewer than k allowed items get the restricted search `recommend` falls back
        to. A custom per-user rule that cannot list its exclusions is served one user at a time.
        """
        state = self._live.state
        k = checked_k(self.config, k)
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)  # [U, dim]
        if embeddings.shape != (len(user_ids), state.index.dim):
            raise InvalidRequestError(
                f"embeddings: expected shape [{len(user_ids)}, {state.index.dim}] (one row per "
                f"user id), got {list(embeddings.shape)}"
            )
        rules = request_rules(filters, self.config.recommend_filters)
        return batch_top_k(state, [str(u) for u in user_ids], embeddings, k, rules, batch_size, threads)


__all__ = [
    "ITEM_INDEX_DIR",
    "MODEL_DIR",
    "FeatureSource",
    "FeatureUnavailableError",
    "HoldsUserEmbeddings",
    "InMemoryFeatureSource",
    "InvalidRequestError",
    "Recommendations",
    "RecommendedItem",
    "Recommender",
    "RecommenderConfig",
    "ReleaseCheckedFeatures",
    "ServingError",
    "UnknownItemError",
    "UnknownUserError",
    "VersionedFeatureSource",
    "build_profiles",
    "model_version",
    "vector_table",
]
