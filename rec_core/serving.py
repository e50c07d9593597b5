"""`Recommender`: what a backend imports to answer recommendation and search requests.

`Recommender.load(root)` reads the artifacts of a materialization (no Dagster): the item table,
the item index, precomputed user embeddings, the two-tower model (for users with no history),
text embeddings (search) and CLIP embeddings (search by image). Everything a request touches is
turned into arrays at load, so a request is a dictionary lookup, one FAISS search and a few
numpy masks; nothing re-encodes the catalog and no pandas runs per request.

Filters can remove most candidates, so searches over-fetch: `k * overfetch_factor` plus the
items the user already saw, widened by the survival rate seen so far; when that is not enough,
a search restricted to the rows that pass the filters (then, if needed, an exact scan of them).
A list shorter than k comes back only when the catalog itself runs out, with the reason.

`faiss_threads` (default 1) is set process-wide at construction: one request per core is the
fastest way to serve single requests, and the objects here are safe to share between threads.
`recommend_batch` (the offline top-k for every user) instead searches on every core for the
duration of the call, and evaluates filters for a whole block of users with array operations.

`load` and `reload()` read the release named by `<root>/releases/current.json` (`rec_core.release`;
a root without releases is read as it lies). `reload()` swaps in a newly published release while
requests are being served: it is read completely, then one reference is replaced, so every
request runs on exactly one release and none fails; each answer carries its `release_id`.

User features come through a `FeatureSource` (embedding and profile per user id): by default
the in-memory one built from the artifacts; a feature store can supply another.

Bad requests raise `ServingError` subclasses with a message fit for the caller; the
`Recommender` keeps no per-request state, so it keeps serving after an error.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import asdict, dataclass, field
from typing import Iterator, Mapping, Protocol, Sequence

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa

from rec_core.data.schema import split_pipe
from rec_core.embeddings import fixed_size_vectors, preference_sentence
from rec_core.filtering import (
    Available,
    ExcludeInteracted,
    FilterRule,
    ItemAttributes,
    UserProfile,
    as_profile,
    keep_mask,
    parse_filters,
)
from rec_core.index import ItemIndex
from rec_core.release import (
    ITEM_INDEX_DIR,
    MODEL_DIR,
    ReleaseCheckedFeatures,
    artifact_paths,
    current_release,
    model_version,
    published_build_id,
    published_marker,
)
from rec_core.storage import as_path, read_table_file

DISPLAY_FIELDS = ("product_name", "category", "discounted_price", "actual_price", "rating", "rating_count", "img_link")


# ---- errors --------------------------------------------------------------------------------
class ServingError(ValueError):
    """A request that cannot be answered as asked; the message says why (a 4xx for a web backend)."""


class InvalidRequestError(ServingError):
    """Malformed arguments: k out of range, an empty query, an unreadable image, a bad filter."""


class UnknownItemError(ServingError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class UnknownUserError(ServingError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class FeatureUnavailableError(ServingError):
    """A capability whose artifacts are absent (CLIP disabled, no text embeddings, no model)."""


# ---- results -------------------------------------------------------------------------------
@dataclass(slots=True)
class RecommendedItem:
    item_id: str
    score: float
    match: str  # how it was found: "model", "similar", "exact_name", "prefix_name", "semantic", "image"
    product_name: str
    category: str
    discounted_price: float | None
    actual_price: float | None
    rating: float | None
    rating_count: int | None
    img_link: str | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Recommendations(Sequence[RecommendedItem]):
    """A ranked list; `reason`: why it holds fewer than `requested` items; `release_id`: the release answering."""

    items: tuple[RecommendedItem, ...]
    requested: int
    reason: str | None = None
    release_id: str | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]

    def __iter__(self) -> Iterator[RecommendedItem]:
        return iter(self.items)

    @property
    def item_ids(self) -> list[str]:
        return [item.item_id for item in self.items]

    def to_dict(self) -> dict:
        return {"items": [item.to_dict() for item in self.items], "requested": self.requested, "reason": self.reason,
                "release_id": self.release_id}


# ---- feature sources -----------------------------------------------------------------------
class FeatureSource(Protocol):
    """Where per-user serving features come from (in memory by default; a feature store later)."""

    def user_embedding(self, user_id: str) -> np.ndarray | None:
        """The user's precomputed unit vector [dim], or None when the source has none."""

    def user_profile(self, user_id: str) -> UserProfile | None:
        """Demographics, stated preferences and past interactions, or None for an unknown user."""


class InMemoryFeatureSource:
    """User embeddings and profiles held in memory, from the `user_embeddings`, `users` and `interactions` artifacts."""

    def __init__(self, user_ids: Sequence[str], embeddings: np.ndarray, profiles: Mapping[str, UserProfile]):
        self.user_ids = [str(u) for u in user_ids]
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)  # [n_users, dim]
        self.row_of = {user_id: row for row, user_id in enumerate(self.user_ids)}
        self.profiles = dict(profiles)

    @classmethod
    def from_tables(cls, user_embeddings: pd.DataFrame, users: pd.DataFrame | None,
                    interactions: pd.DataFrame | None) -> "InMemoryFeatureSource":
        from rec_core.embeddings import embedding_matrix

        return cls(user_embeddings["user_id"].astype(str).tolist(), embedding_matrix(user_embeddings, "embedding"),
                   build_profiles(users, interactions))

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


# ---- configuration -------------------------------------------------------------------------
def _default_recommend_filters() -> list[FilterRule]:
    return [Available(), ExcludeInteracted()]


def _default_search_filters() -> list[FilterRule]:
    return [Available()]


@dataclass
class RecommenderConfig:
    max_k: int = 1000  # larger k is refused: a response that long is a bug or an abuse, not a request
    overfetch_factor: int = 4  # first search asks for k * factor (+ items the user already saw)
    search_rounds: int = 3  # over-fetch rounds, sized by the survival rate so far, before a restricted search
    max_fetch: int = 256  # a round needing more candidates than this searches only the allowed rows instead
    faiss_threads: int = 1  # one request per core: intra-query threads only add latency at this size
    name_weight: float = 0.5  # semantic text search: weight of name vs description similarity
    max_query_chars: int = 500  # longer text queries are refused
    recommend_filters: list = field(default_factory=_default_recommend_filters)  # when filters=None
    search_filters: list = field(default_factory=_default_search_filters)  # similar/search when filters=None
    device: str = "cpu"  # torch device of the user tower (cold start) and query encoders
    text_model: str = ""  # sentence-transformers model for queries; empty: the one that built item_text_embeddings
    clip_model: str = ""  # empty: the model named in item_clip_embeddings


# ---- the recommender -----------------------------------------------------------------------
@dataclass(frozen=True)
class _ServingState:
    """Everything a request reads that comes from one published version of the artifacts.

    A request takes this object once and reads only through it, and `Recommender.reload` builds
    a complete new one before replacing the single reference: a request that started on the old
    version finishes on it, the next one sees the new version, and none sees a mix (say, rows of
    the new index looked up in the old item table).
    """

    index: ItemIndex
    feature_source: FeatureSource
    encoder: object  # TwoTowerEncoder for cold starts, or None
    model_dir: str | None
    attributes: ItemAttributes  # item columns in index row order
    display: dict  # field -> list of display values in index row order
    all_rows: np.ndarray  # [n_items] arange, for catalog-wide masks
    text: "_TextSearch"
    image: "_ImageSearch"
    release: dict | None  # the manifest of the release this state was read from

    @classmethod
    def build(cls, items: pd.DataFrame, index: ItemIndex, feature_source: FeatureSource, config: "RecommenderConfig",
              encoder, item_text_embeddings: pd.DataFrame | None, item_clip_embeddings: pd.DataFrame | None,
              model_dir: str | None, release: dict | None = None) -> "_ServingState":
        users = getattr(feature_source, "embeddings", None)  # the in-memory source's [n_users, dim]
        if isinstance(users, np.ndarray) and users.ndim == 2 and len(users) and users.shape[1] != index.dim:
            raise ValueError(f"user embeddings have {users.shape[1]} dimensions but the item index has {index.dim}; "
                             "they come from different models: rematerialize user_embeddings and item_index together")
        items = _aligned_items(items, index.item_ids)
        return cls(index, feature_source, encoder, model_dir, ItemAttributes(items),
                   {name: _display_column(items, name) for name in DISPLAY_FIELDS}, np.arange(len(index)),
                   _TextSearch(items, item_text_embeddings, config.name_weight),
                   _ImageSearch(index.item_ids, item_clip_embeddings), release)

    @classmethod
    def read(cls, root, config: "RecommenderConfig", feature_source: FeatureSource | None, release=None):
        """Reads the current release of an artifact root (`release` None), or the given one; with
        `feature_source` None, the in-memory one is built from `user_embeddings`, `users` and `interactions`.
        A feature source that reports model versions only serves vectors of the release's model."""
        release = release or current_release(root)
        paths = artifact_paths(root, release)
        table = lambda name, required=False: read_table_file(paths[name], name, required) if name in paths else None
        items = table("items", True)
        index = ItemIndex.load(paths[ITEM_INDEX_DIR])
        if feature_source is None:
            feature_source = InMemoryFeatureSource.from_tables(table("user_embeddings", True), table("users"),
                                                               table("interactions"))
        elif release is not None:  # the release's own vectors: the fallback for vectors of another model
            own = InMemoryFeatureSource.from_tables(table("user_embeddings", True), None, None)
            feature_source = ReleaseCheckedFeatures(feature_source, release["model_version"], own)
        encoder, model_dir = None, paths.get(MODEL_DIR)
        if model_dir is not None and model_dir.exists():
            from rec_core.inference import TwoTowerEncoder

            encoder = TwoTowerEncoder.load(model_dir, device=config.device)
        return cls.build(items, index, feature_source, config, encoder, table("item_text_embeddings"),
                         table("item_clip_embeddings"), str(model_dir or as_path(root) / MODEL_DIR), release)


class Recommender:
    """Recommendations, similar items and search over one materialized catalog.

    Safe to share between threads: requests read one immutable `_ServingState`, and the only
    things created lazily (the query encoders) are created under a lock.
    """

    def __init__(self, items: pd.DataFrame, index: ItemIndex, feature_source: FeatureSource,
                 config: RecommenderConfig | None = None, encoder=None,
                 item_text_embeddings: pd.DataFrame | None = None,
                 item_clip_embeddings: pd.DataFrame | None = None, model_dir: str | None = None):
        config = config or RecommenderConfig()
        self._start(config, _ServingState.build(items, index, feature_source, config, encoder, item_text_embeddings,
                                                item_clip_embeddings, model_dir))

    def _start(self, config: RecommenderConfig, state: _ServingState, root=None, own_feature_source: bool = False):
        self.config = config
        faiss.omp_set_num_threads(config.faiss_threads)
        self._state = state  # the one reference `reload` replaces
        self.root = root  # the artifact root `load` read, which `reload` reads again
        self._own_feature_source = own_feature_source  # True: user features come from the root, reloaded with it
        self._reload_lock = threading.Lock()
        self._encoder_lock = threading.Lock()
        self._text_encoder = None  # (model name, TextEncoder) for queries, created on first use
        self._clip_encoder = None  # (model name, ClipEncoder)

    @classmethod
    def load(cls, path: str | os.PathLike, feature_source: FeatureSource | None = None,
             config: RecommenderConfig | None = None, release: dict | None = None) -> "Recommender":
        """Loads the current release of an artifact root (`release`: another manifest of it instead)."""
        root = as_path(path)
        config = config or RecommenderConfig()
        recommender = cls.__new__(cls)
        recommender._start(config, _ServingState.read(root, config, feature_source, release), root,
                           feature_source is None)
        return recommender

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
        if self.root is None:
            raise ValueError("this Recommender was not loaded from an artifact root, so there is nothing to reload; "
                             "use Recommender.load(root)")
        with self._reload_lock:
            served = self._state.release["release_id"] if self._state.release else self.build_id
            if not force and published_marker(self.root) == served:
                return False
            features = None if self._own_feature_source else self._state.feature_source
            self._state = _ServingState.read(self.root, self.config, features)
            return True

    def published_build_id(self) -> str | None:
        """The build id of the item index now published under the artifact root (of its current release);
        None when there is no root, or no report at this instant (a swap, which `ItemIndex.load` waits out)."""
        return None if self.root is None else published_build_id(self.root)

    @property
    def release(self) -> dict | None:
        """The manifest of the release being served (`release_id`, `model_version`, `created_at`, ...);
        None when serving a root without releases."""
        return None if self._state.release is None else dict(self._state.release)

    @property
    def build_id(self) -> str:
        """The build id of the item index being served."""
        return self._state.index.report.build_id

    @property
    def index(self) -> ItemIndex:
        return self._state.index

    @property
    def feature_source(self) -> FeatureSource:
        return self._state.feature_source

    @property
    def encoder(self):
        return self._state.encoder

    @property
    def model_dir(self) -> str | None:
        return self._state.model_dir

    @property
    def attributes(self) -> ItemAttributes:
        return self._state.attributes

    # ---- recommendations -------------------------------------------------------------------
    def recommend(self, user_id: str, k: int = 10, filters: Sequence | None = None) -> Recommendations:
        """Top-k items for a known user.

        The embedding comes from the feature source; a user the source has a profile for but no
        embedding (signed up after the last materialization) is encoded on the fly from the
        profile, as a cold start. A user the source does not know at all is an `UnknownUserError`:
        silently answering with cold-start results would hide a wrong id.
        """
        state = self._state
        k = self._checked_k(k)
        user_id = str(user_id)
        embedding = state.feature_source.user_embedding(user_id)
        profile = state.feature_source.user_profile(user_id)
        if embedding is None:
            if profile is None:
                raise UnknownUserError(f"unknown user '{user_id}'; use recommend_for_features for a new user")
            embedding = self._encode_cold_user(state, profile)
        return self._ranked(state, embedding, k, profile, self._rules(filters, self.config.recommend_filters), "model")

    def recommend_for_features(self, features: Mapping | UserProfile, k: int = 10,
                               filters: Sequence | None = None) -> Recommendations:
        """Top-k for a user with no history: `features` holds `age`, `gender` and `preferences`
        (category names, a list or a pipe-separated string); any may be missing."""
        state = self._state
        k = self._checked_k(k)
        try:
            profile = as_profile(features)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from None
        if profile is None:
            raise InvalidRequestError("features are required (age, gender, preferences; each may be empty)")
        embedding = self._encode_cold_user(state, profile)
        return self._ranked(state, embedding, k, profile, self._rules(filters, self.config.recommend_filters), "model")

    def similar_items(self, item_id: str, k: int = 10, filters: Sequence | None = None) -> Recommendations:
        """The k items whose vectors are closest to `item_id`'s (itself excluded)."""
        state = self._state
        k = self._checked_k(k)
        row = state.index.position_of.get(str(item_id))
        if row is None:
            raise UnknownItemError(f"unknown item '{item_id}'")
        return self._ranked(state, state.index.vectors[row], k, None, self._rules(filters, self.config.search_filters),
                            "similar", excluded=np.array([row]))

    def search_by_text(self, query: str, k: int = 10, filters: Sequence | None = None) -> Recommendations:
        """Exact product-name matches, then prefix matches, then semantic matches on name and description."""
        state = self._state
        k = self._checked_k(k)
        if not isinstance(query, str) or not query.strip():
            raise InvalidRequestError("the search query is empty")
        if len(query) > self.config.max_query_chars:
            raise InvalidRequestError(f"the search query has {len(query)} characters; the limit is {self.config.max_query_chars}")
        rules = self._rules(filters, self.config.search_filters)
        text = state.text
        lexical = [(rows, match) for rows, match in text.lexical(query) if len(rows)]
        picked: list[tuple[int, float, str]] = []
        taken: set[int] = set()
        query_vector = text.query_vector(self._text_encoder_for_search(state), query) if text.has_semantic else None
        for rows, match in lexical:
            rows = rows[keep_mask(state.attributes, rows, None, rules)]
            scores = text.semantic_scores(query_vector, rows) if query_vector is not None else np.ones(len(rows))
            for row, score in sorted(zip(rows.tolist(), scores.tolist()), key=lambda p: -p[1])[: k - len(picked)]:
                picked.append((row, score, match))
                taken.add(row)
        if len(picked) < k and query_vector is not None:
            result = text.semantic_top(query_vector, k - len(picked), lambda rows: keep_mask(
                state.attributes, rows, None, rules) & ~np.isin(rows, list(taken)))
            picked += [(row, score, "semantic") for row, score in result]
        reason = None
        if len(picked) < k:
            reason = ("no text embeddings were materialized, so only name matches are searched"
                      if query_vector is None else "fewer items pass the filters than requested")
        return self._results(state, picked, k, reason)

    def search_by_image(self, image, k: int = 10, filters: Sequence | None = None) -> Recommendations:
        """Items whose CLIP image embedding is closest to `image` (bytes, a file path or a PIL image)."""
        state = self._state
        k = self._checked_k(k)
        if not state.image.enabled:
            from rec_core.encoders.clip import HOW_TO_ENABLE

            raise FeatureUnavailableError(
                "search by image is unavailable: CLIP is disabled (item_clip_embeddings is empty or missing). "
                + HOW_TO_ENABLE.format(model=self.config.clip_model or state.image.model_id or "openai/clip-vit-base-patch32"))
        picture = _read_image(image)
        vector = self._clip_encoder_for_search(state).encode_image([picture])[0]
        rules = self._rules(filters, self.config.search_filters)
        result = state.image.top(vector, k, lambda rows: keep_mask(state.attributes, rows, None, rules))
        reason = None if len(result) >= k else "fewer items with images pass the filters than requested"
        return self._results(state, [(row, score, "image") for row, score in result], k, reason)

    # ---- batch (offline) -----------------------------------------------------------------------
    def recommend_batch(self, user_ids: Sequence[str], embeddings: np.ndarray, k: int = 10,
                        filters: Sequence | None = None, batch_size: int = 65_536,
                        threads: int | None = None) -> pd.DataFrame:
        """Top-k for many users at once: `user_id`, `top_k_item_ids`, `top_k_scores`; same answers as `recommend`.

        Each block of `batch_size` users is one multithreaded index search
        (`ItemIndex.search_batch`, all cores unless `threads` says otherwise) that applies the
        filters while it scans: catalog-level rules (availability, category, price, rating) as
        one mask over the catalog, per-user exclusions (`ExcludeInteracted`) as the (user, item)
        pairs to skip. So it asks for exactly k, never over-fetches, and only users whose probed
        cells hold fewer than k allowed items get the restricted search `recommend` falls back
        to. A custom per-user rule that cannot list its exclusions is served one user at a time.
        """
        state = self._state
        index = state.index
        k = self._checked_k(k)
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)  # [U, dim]
        if embeddings.shape != (len(user_ids), index.dim):
            raise InvalidRequestError(f"embeddings: expected shape [{len(user_ids)}, {index.dim}] (one row per "
                                      f"user id), got {list(embeddings.shape)}")
        user_ids = [str(u) for u in user_ids]
        rules = self._rules(filters, self.config.recommend_filters)
        user_rules = [r for r in rules if r.per_user]
        catalog_keep = keep_mask(state.attributes, state.all_rows, None, [r for r in rules if not r.per_user])  # [n_items]
        top_rows = np.full((len(user_ids), k), -1, np.int64)  # [U, k], -1 past a short list's end
        top_scores = np.zeros((len(user_ids), k), np.float32)
        for start in range(0, len(user_ids), batch_size):
            block = slice(start, start + batch_size)
            profiles = [state.feature_source.user_profile(u) for u in user_ids[block]] if user_rules else []
            if all(hasattr(rule, "excluded_rows") for rule in user_rules):

                def excluded(profiles=profiles):  # the (user, row) pairs the rules drop, built while FAISS assigns cells
                    pairs = [rule.excluded_rows(state.attributes, profiles) for rule in user_rules]
                    return tuple(np.concatenate([p[i] for p in pairs]) for i in (0, 1)) if pairs else None

                scores, rows = index.search_batch(embeddings[block], k, threads, catalog_keep, excluded)  # [B, k] each
                top_rows[block], top_scores[block] = rows, np.where(rows >= 0, scores, 0)
                short = np.flatnonzero(rows[:, -1] < 0)  # the probed cells ran out of allowed items
            else:
                short = np.arange(len(profiles))  # a per-user rule without excluded_rows: every user alone
            for b in short.tolist():
                allowed = self._allowed_rows(state, profiles[b] if profiles else None, rules, catalog_keep)
                found = index.search_allowed(embeddings[start + b], allowed, k)
                top_rows[start + b] = -1
                top_rows[start + b, :len(found)] = [row for row, _ in found]
                top_scores[start + b, :len(found)] = [score for _, score in found]
        listed_ids = state.attributes.item_ids[np.maximum(top_rows, 0)].tolist()  # ids in index row order
        listed_scores = top_scores.tolist()
        for u in np.flatnonzero(top_rows[:, -1] < 0).tolist():  # short lists: cut at the first -1
            length = int((top_rows[u] >= 0).sum())
            listed_ids[u], listed_scores[u] = listed_ids[u][:length], listed_scores[u][:length]
        return pd.DataFrame({"user_id": user_ids, "top_k_item_ids": listed_ids, "top_k_scores": listed_scores})

    # ---- internals -------------------------------------------------------------------------
    def _checked_k(self, k) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise InvalidRequestError(f"k must be an integer, got {k!r}")
        if k <= 0:
            raise InvalidRequestError(f"k must be at least 1, got {k}")
        if k > self.config.max_k:
            raise InvalidRequestError(f"k={k} is above the limit of {self.config.max_k} (RecommenderConfig.max_k)")
        return int(k)

    def _rules(self, filters, default) -> list[FilterRule]:
        try:
            return parse_filters(default if filters is None else filters)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from None

    def _ranked(self, state: _ServingState, query: np.ndarray, k: int, profile: UserProfile | None,
                rules: list[FilterRule], match: str, excluded: np.ndarray | None = None) -> Recommendations:
        """Top-k rows passing `rules`: over-fetching index searches, then an exact scan if still short."""
        index = state.index
        n = len(index)
        excluded = np.empty(0, np.int64) if excluded is None else excluded
        seen = len(profile.items_with(None)) if profile is not None else 0
        fetch = min(n, k * self.config.overfetch_factor + seen + len(excluded))
        query = np.asarray(query, dtype=np.float32).reshape(1, -1)
        for _ in range(self.config.search_rounds):
            scores, rows = index.search(query, fetch)
            valid = rows[0] >= 0
            scores, rows = scores[0][valid], rows[0][valid]
            keep = keep_mask(state.attributes, rows, profile, rules)
            if len(excluded):
                keep &= ~np.isin(rows, excluded)
            survivors = int(keep.sum())
            if survivors >= k or (fetch >= n and index.is_exact):
                picked = [(int(r), float(s), match) for r, s in zip(rows[keep][:k], scores[keep][:k])]
                return self._results(state, picked, k, self._shortfall(state, len(picked), k, rules))
            # candidates needed at this survival rate; past max_fetch a search restricted to allowed rows is cheaper
            needed = n if survivors == 0 else int(1.5 * fetch * k / survivors)
            if needed > self.config.max_fetch or fetch >= n:
                break
            fetch = min(n, max(needed, 2 * fetch))
        allowed = self._allowed_rows(state, profile, rules)
        allowed[excluded] = False
        picked = [(row, score, match) for row, score in index.search_allowed(query[0], allowed, k)]
        return self._results(state, picked, k, self._shortfall(state, len(picked), k, rules))

    def _allowed_rows(self, state: _ServingState, profile: UserProfile | None, rules: list[FilterRule],
                      catalog_keep: np.ndarray | None = None) -> np.ndarray:
        """[n_items] bool: every catalog row passing `rules` (catalog-level part precomputed when given)."""
        if catalog_keep is None:
            return keep_mask(state.attributes, state.all_rows, profile, rules)
        user_rules = [r for r in rules if r.per_user]
        return catalog_keep & keep_mask(state.attributes, state.all_rows, profile, user_rules)

    def _shortfall(self, state: _ServingState, found: int, k: int, rules: list[FilterRule]) -> str | None:
        if found >= k:
            return None
        names = ", ".join(rule.name for rule in rules) or "none"
        return f"only {found} of {len(state.index)} catalog items pass the filters ({names})"

    def _results(self, state: _ServingState, picked: list[tuple[int, float, str]], k: int,
                 reason: str | None) -> Recommendations:
        d, item_ids = state.display, state.index.item_ids
        items = tuple(
            RecommendedItem(item_ids[row], score, match, d["product_name"][row], d["category"][row],
                            d["discounted_price"][row], d["actual_price"][row], d["rating"][row],
                            d["rating_count"][row], d["img_link"][row])
            for row, score, match in picked
        )
        return Recommendations(items, k, reason, state.release["release_id"] if state.release else None)

    def _encode_cold_user(self, state: _ServingState, profile: UserProfile) -> np.ndarray:
        """The user tower on demographics and stated preferences only (no history)."""
        encoder = state.encoder
        if encoder is None:
            raise FeatureUnavailableError(
                f"cold-start recommendations need the two-tower model, which is not in {state.model_dir}; "
                "materialize two_tower_model")
        age = profile.age
        if age is not None and (not isinstance(age, (int, float, np.integer)) or not 0 <= age <= 130 or
                                (isinstance(age, float) and math.isnan(age))):
            raise InvalidRequestError(f"age must be a number within 0..130, got {age!r}")
        preferences = "|".join(profile.preferences)
        users = pd.DataFrame({
            "user_id": ["__request__"],
            "signup_date": [pd.Timestamp.now(tz="UTC")],
            "preferences": [preferences],
            "age": pd.array([age], dtype="Int32"),
            "gender": [profile.gender],
        })
        user_text = None
        if getattr(encoder.preprocessing, "user_text_dim", 0):
            vector = np.zeros((1, encoder.preprocessing.user_text_dim), np.float32)
            if preferences:
                vector = self._text_encoder_for_search(state).encode([preference_sentence("|".join(profile.preferences))])
            user_text = pd.DataFrame({"user_id": ["__request__"], "preferences_embedding": list(vector)})
        _, vectors = encoder.encode_users(users, None, user_text)
        return vectors[0]

    def _text_encoder_for_search(self, state: _ServingState):
        """The query text encoder, created once per model name (a reload may bring another model)."""
        model = self.config.text_model or state.text.model_name
        with self._encoder_lock:
            if self._text_encoder is None or self._text_encoder[0] != model:
                from rec_core.encoders.text import TextEncoder, TextEncoderConfig

                self._text_encoder = (model, TextEncoder(TextEncoderConfig(model=model, device=self.config.device)))
            return self._text_encoder[1]

    def _clip_encoder_for_search(self, state: _ServingState):
        model = self.config.clip_model or state.image.model_id
        with self._encoder_lock:
            if self._clip_encoder is None or self._clip_encoder[0] != model:
                from rec_core.encoders.clip import ClipEncoder, ClipUnavailableError

                try:
                    self._clip_encoder = (model, ClipEncoder(model, device=self.config.device))
                except ClipUnavailableError as exc:
                    raise FeatureUnavailableError(f"search by image is unavailable: {exc}. {exc.how_to_enable}") from None
            return self._clip_encoder[1]


# ---- serving artifacts ---------------------------------------------------------------------
def vector_table(key: str, ids: Sequence[str], vectors: np.ndarray, model_version: str | None = None) -> pa.Table:
    """An `item_embeddings` / `user_embeddings` table: `key`, `embedding` (fixed-size float32 lists) and,
    when given, `model_version` (the model the vectors come from, checked when they are released).

    An Arrow table rather than a DataFrame: pandas cannot keep the fixed-size list type through parquet.
    """
    columns = {key: pa.array([str(i) for i in ids], pa.string()), "embedding": fixed_size_vectors(vectors)}
    if model_version is not None:
        columns["model_version"] = pa.array([model_version] * len(columns[key]), pa.string())
    return pa.table(columns)


# ---- search helpers ------------------------------------------------------------------------
class _TextSearch:
    """Name lookups (exact, prefix) over lower-cased names, and semantic search on text embeddings."""

    def __init__(self, items: pd.DataFrame, embeddings: pd.DataFrame | None, name_weight: float):
        names = items["product_name"].fillna("").astype(str).str.strip().str.lower().to_numpy(dtype=object)
        self._order = np.argsort(names, kind="stable")  # rows sorted by name
        self._sorted_names = names[self._order]
        self.model_name = ""
        self._semantic = None
        if embeddings is not None and len(embeddings):
            from rec_core.embeddings import embedding_matrix

            aligned = embeddings.drop_duplicates("item_id", keep="last")
            aligned = aligned.set_index(aligned["item_id"].astype(str)).reindex(items["item_id"].astype(str).to_numpy())
            present = aligned["name_embedding"].notna().to_numpy()
            dim = len(embeddings["name_embedding"].iloc[0])
            combined = np.zeros((len(items), dim), np.float32)  # [n_items, text_dim]
            if present.any():
                found = aligned[present]
                combined[present] = (name_weight * embedding_matrix(found, "name_embedding")
                                     + (1 - name_weight) * embedding_matrix(found, "description_embedding"))
            self._semantic, self._combined = _flat_index(combined)
            if "model_id" in embeddings:
                self.model_name = str(embeddings["model_id"].iloc[0]).split("@")[0]

    @property
    def has_semantic(self) -> bool:
        return self._semantic is not None

    def lexical(self, query: str) -> list[tuple[np.ndarray, str]]:
        """[(rows whose name equals the query, "exact_name"), (rows whose name starts with it, "prefix_name")]."""
        key = query.strip().lower()
        lo = np.searchsorted(self._sorted_names, key, side="left")
        hi_exact = np.searchsorted(self._sorted_names, key, side="right")
        hi_prefix = np.searchsorted(self._sorted_names, key + "\U0010ffff", side="left")
        return [(self._order[lo:hi_exact], "exact_name"), (self._order[hi_exact:hi_prefix], "prefix_name")]

    def query_vector(self, encoder, query: str) -> np.ndarray:
        return encoder.encode([query.strip()])[0]

    def semantic_scores(self, query_vector: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return self._combined[rows] @ query_vector

    def semantic_top(self, query_vector: np.ndarray, k: int, keep) -> list[tuple[int, float]]:
        return _filtered_top(self._semantic, query_vector, k, keep)


class _ImageSearch:
    """Item CLIP image embeddings; empty when CLIP was disabled at materialization."""

    def __init__(self, item_ids: list[str], embeddings: pd.DataFrame | None):
        self.model_id = ""
        self.enabled = embeddings is not None and len(embeddings) > 0 and "clip_embedding" in embeddings
        if not self.enabled:
            return
        from rec_core.embeddings import embedding_matrix

        embeddings = embeddings.drop_duplicates("item_id", keep="last")
        position = {item_id: row for row, item_id in enumerate(item_ids)}
        rows = embeddings["item_id"].astype(str).map(position)
        embeddings = embeddings[rows.notna().to_numpy()]
        self.rows = rows.dropna().to_numpy(np.int64)  # catalog row of each embedding
        self.index, _ = _flat_index(embedding_matrix(embeddings, "clip_embedding"))  # [n_with_image, clip_dim]
        if "model_id" in embeddings:
            self.model_id = str(embeddings["model_id"].iloc[0])

    def top(self, query_vector: np.ndarray, k: int, keep) -> list[tuple[int, float]]:
        found = _filtered_top(self.index, query_vector, k, lambda local: keep(self.rows[local]))
        return [(int(self.rows[local]), score) for local, score in found]


def _flat_index(vectors: np.ndarray) -> tuple[faiss.IndexFlatIP, np.ndarray]:
    """An exact inner-product index over `vectors` [n, dim], and a read view of the copy FAISS holds
    (so large text-embedding matrices are kept once, not twice)."""
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    view = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)
    return index, view


def _filtered_top(index: faiss.Index, query: np.ndarray, k: int, keep) -> list[tuple[int, float]]:
    """Top-k rows of an exact index that pass `keep(rows) -> bool mask`: over-fetch, then a full scan."""
    n = index.ntotal
    fetch = min(n, 4 * k)
    query = np.asarray(query, np.float32).reshape(1, -1)
    while True:
        scores, rows = index.search(query, fetch)
        valid = rows[0] >= 0
        rows, scores = rows[0][valid], scores[0][valid]
        mask = keep(rows)
        if mask.sum() >= k or fetch >= n:
            return [(int(r), float(s)) for r, s in zip(rows[mask][:k], scores[mask][:k])]
        fetch = min(n, fetch * 8)


# ---- loading helpers -----------------------------------------------------------------------
def _aligned_items(items: pd.DataFrame, item_ids: list[str]) -> pd.DataFrame:
    """The item rows in index order; every indexed item must be in the item table."""
    by_id = items.drop_duplicates("item_id", keep="last")
    by_id = by_id.set_index(by_id["item_id"].astype(str).rename("item_key"))
    missing = [i for i in item_ids if i not in by_id.index]
    if missing:
        raise ValueError(f"item index: {len(missing)} indexed item(s) are not in the items table "
                         f"(e.g. '{missing[0]}'); rebuild item_index from the current items")
    return by_id.loc[item_ids].reset_index(drop=True)


def _display_column(items: pd.DataFrame, name: str) -> list:
    """A display field as a Python list (None for nulls), so building a result is plain indexing."""
    if name not in items:
        return [None] * len(items)
    values = items[name].astype(object).where(items[name].notna(), None).tolist()
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def _read_image(image):
    from PIL import Image

    from rec_core.images import ImageInputError, load_image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if not isinstance(image, (bytes, bytearray, str, os.PathLike)):
        raise InvalidRequestError(f"image must be bytes, a file path or a PIL image, got {type(image).__name__}")
    try:
        return load_image(bytes(image) if isinstance(image, bytearray) else image, name="the uploaded image")
    except (ImageInputError, FileNotFoundError) as exc:
        raise InvalidRequestError(f"unreadable image: {exc}") from None


__all__ = [
    "FeatureSource", "FeatureUnavailableError", "InMemoryFeatureSource", "InvalidRequestError", "RecommendedItem",
    "Recommendations", "Recommender", "RecommenderConfig", "ServingError", "UnknownItemError", "UnknownUserError",
    "build_profiles", "vector_table", "model_version",
]
