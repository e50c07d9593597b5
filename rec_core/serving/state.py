"""What one published version of the artifacts serves (`ServingState`), how it is read, and the hot reload.

Everything a request touches is turned into arrays once, here, at load: the item columns
filters read, the display fields, the name lookups and embedding indexes of search. So a
request is a dictionary lookup, one FAISS search and a few numpy masks; nothing re-encodes
the catalog and no pandas runs per request.

`ReleaseReader` reads the release named by `<root>/releases/current.json` (`rec_core.release`;
a root without releases is read as it lies). `LiveState.reload` swaps in a newly published
release while requests are being served: it is read completely, then one reference is
replaced, so every request runs on exactly one release and none fails.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rec_core.filtering import ItemAttributes
from rec_core.index import ItemIndex
from rec_core.release import (
    ITEM_INDEX_DIR,
    MODEL_DIR,
    artifact_paths,
    current_release,
    published_marker,
)
from rec_core.serving.config import RecommenderConfig
from rec_core.serving.features import (
    FeatureSource,
    HoldsUserEmbeddings,
    InMemoryFeatureSource,
    ReleaseCheckedFeatures,
)
from rec_core.serving.results import DISPLAY_FIELDS
from rec_core.serving.search import ImageSearch, TextSearch
from rec_core.storage import as_path, read_table_file


@dataclass(frozen=True)
class ReleaseArtifacts:
    """One version of the artifacts as read (tables, index, model), before `ServingState.build` turns it into arrays."""

    items: pd.DataFrame
    index: ItemIndex
    feature_source: FeatureSource
    encoder: object = None  # TwoTowerEncoder for cold starts, or None
    item_text_embeddings: pd.DataFrame | None = None
    item_clip_embeddings: pd.DataFrame | None = None
    model_dir: str | None = None
    release: dict | None = None  # the manifest of the release these come from; None for a root without releases


@dataclass(frozen=True)
class ServingState:
    """Everything a request reads that comes from one published version of the artifacts.

    A request takes this object once and reads only through it, and `LiveState.reload` builds
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
    text: TextSearch
    image: ImageSearch
    release: dict | None  # the manifest of the release this state was read from

    @classmethod
    def build(cls, artifacts: ReleaseArtifacts, config: RecommenderConfig) -> ServingState:
        index, feature_source = artifacts.index, artifacts.feature_source
        if not isinstance(feature_source, FeatureSource):
            raise TypeError(
                f"feature_source: a {type(feature_source).__name__} is not a FeatureSource "
                "(it needs user_embedding(user_id) and user_profile(user_id))"
            )
        users = feature_source.embeddings if isinstance(feature_source, HoldsUserEmbeddings) else None
        if isinstance(users, np.ndarray) and users.ndim == 2 and len(users) and users.shape[1] != index.dim:
            raise ValueError(
                f"user embeddings have {users.shape[1]} dimensions but the item index has {index.dim}; "
                "they come from different models: rematerialize user_embeddings and item_index together"
            )
        items = _aligned_items(artifacts.items, index.item_ids)
        return cls(
            index,
            feature_source,
            artifacts.encoder,
            artifacts.model_dir,
            ItemAttributes(items),
            {name: _display_column(items, name) for name in DISPLAY_FIELDS},
            np.arange(len(index)),
            TextSearch(items, artifacts.item_text_embeddings, config.name_weight),
            ImageSearch(index.item_ids, artifacts.item_clip_embeddings),
            artifacts.release,
        )

    @property
    def served_marker(self) -> str:
        """What `published_marker` names when this state is the published one: the release id, else the index build."""
        return self.release["release_id"] if self.release else self.index.report.build_id


@dataclass(frozen=True)
class ReleaseReader:
    """Reads releases of one artifact root; `feature_source` is the one given to `Recommender.load`
    (None: user features come from each release's own `user_embeddings`, `users` and `interactions`)."""

    root: object  # a local Path or an object-storage UPath
    feature_source: FeatureSource | None = None

    def read(self, config: RecommenderConfig, release: dict | None = None) -> ReleaseArtifacts:
        """The current release (`release` None) or the given one. An external feature source that reports
        model versions only serves vectors of the release's model (`ReleaseCheckedFeatures`)."""
        release = release or current_release(self.root)
        paths = artifact_paths(self.root, release)

        def table(name, required=False):
            return read_table_file(paths[name], name, required) if name in paths else None

        items = table("items", True)
        index = ItemIndex.load(paths[ITEM_INDEX_DIR])
        feature_source = self.feature_source
        if feature_source is None:
            feature_source = InMemoryFeatureSource.from_tables(
                table("user_embeddings", True), table("users"), table("interactions")
            )
        elif release is not None:  # the release's own vectors: the fallback for vectors of another model
            own = InMemoryFeatureSource.from_tables(table("user_embeddings", True), None, None)
            feature_source = ReleaseCheckedFeatures(feature_source, release["model_version"], own)
        encoder, model_dir = None, paths.get(MODEL_DIR)
        if model_dir is not None and model_dir.exists():
            from rec_core.inference import TwoTowerEncoder

            encoder = TwoTowerEncoder.load(model_dir, device=config.device)
        expected_model_dir = str(model_dir or as_path(self.root) / MODEL_DIR)  # named when a cold start needs it
        return ReleaseArtifacts(
            items,
            index,
            feature_source,
            encoder,
            table("item_text_embeddings"),
            table("item_clip_embeddings"),
            expected_model_dir,
            release,
        )


class LiveState:
    """The one reference to the `ServingState` requests read, and the reload that replaces it."""

    def __init__(self, state: ServingState, config: RecommenderConfig, reader: ReleaseReader | None = None):
        self.state = state
        self.reader = reader  # None: not loaded from an artifact root, so nothing to reload
        self._config = config
        self._lock = threading.Lock()

    def reload(self, force: bool = False) -> bool:
        """Reads and swaps in the version published since the last read; True if it did (see `Recommender.reload`)."""
        if self.reader is None:
            raise ValueError(
                "this Recommender was not loaded from an artifact root, so there is nothing to reload; "
                "use Recommender.load(root)"
            )
        with self._lock:
            if not force and published_marker(self.reader.root) == self.state.served_marker:
                return False
            self.state = ServingState.build(self.reader.read(self._config), self._config)
            return True


def _aligned_items(items: pd.DataFrame, item_ids: list[str]) -> pd.DataFrame:
    """The item rows in index order; every indexed item must be in the item table."""
    by_id = items.drop_duplicates("item_id", keep="last")
    by_id = by_id.set_index(by_id["item_id"].astype(str).rename("item_key"))
    missing = [i for i in item_ids if i not in by_id.index]
    if missing:
        raise ValueError(
            f"item index: {len(missing)} indexed item(s) are not in the items table "
            f"(e.g. '{missing[0]}'); rebuild item_index from the current items"
        )
    return by_id.loc[item_ids].reset_index(drop=True)


def _display_column(items: pd.DataFrame, name: str) -> list:
    """A display field as a Python list (None for nulls), so building a result is plain indexing."""
    if name not in items:
        return [None] * len(items)
    values = items[name].astype(object).where(items[name].notna(), None).tolist()
    return [v.item() if isinstance(v, np.generic) else v for v in values]
