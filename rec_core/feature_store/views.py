"""The registry of the recommender's Feast views: every view's name, entity and where its rows come from.

`feature_repo/features.py` declares the Feast objects under these names, and the loading and
reading modules of this package fill and read them, so each view is listed here and nowhere else.
There are two kinds:

- batch views, which Feast materializes itself from a data asset's parquet file. Their fields are
  declared in `features.py`, beside that file's source, because only Feast reads those columns;
- pushed views, whose rows this package builds from an upstream table (columns renamed, plus an
  event timestamp) and pushes. Their fields are declared here, where those rows are built, and
  `features.py` turns them into the Feast schema.

Feature types are named by kind (`FEATURE_KINDS`): `features.py` maps a kind to a Feast type and
the loader maps it to an Arrow type, so this module needs no Feast import and `import rec_core`
stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rec_core.data.paths import FEATURE_STORE_DIR, table_file
from rec_core.data.schema import INTERACTION_TYPES

USER_KEY = "user_id"  # join key of the `user` entity: requests name a user
ITEM_KEY = "item_id"  # join key of the `item` entity: retrieval returns items
EVENT_TIMESTAMP = "event_timestamp"  # the column that orders the rows of a pushed view

FEATURE_KINDS = ("float_vector", "string", "string_list")
"""How a pushed feature's values are stored: a float32 vector, a text, or a list of ids."""


@dataclass(frozen=True)
class Feature:
    """One field of a pushed view."""

    name: str  # the Feast feature name
    kind: str  # one of FEATURE_KINDS
    column: str = ""  # the upstream column copied into it; empty: the same name (unused for computed views)
    optional: bool = False  # an older upstream table may lack the column: its rows are pushed with nulls
    description: str = ""

    def __post_init__(self):
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"feature {self.name}: unknown kind '{self.kind}' (use one of {', '.join(FEATURE_KINDS)})")


@dataclass(frozen=True)
class View:
    """A feature view: its name, its entity's join key, and the data asset whose table fills it."""

    name: str
    key: str  # USER_KEY or ITEM_KEY
    upstream: str  # the data asset (a table under the artifact root) its rows come from
    features: tuple[Feature, ...] = ()  # a pushed view's fields; empty for a batch view (declared in features.py)

    @property
    def push_source(self) -> str:
        """The name of the push source that takes fresh rows of a pushed view."""
        return f"{self.name}_push"

    @property
    def columns(self) -> dict[str, str]:
        """{upstream column: feature name} of a view copied from its upstream table."""
        return {feature.column or feature.name: feature.name for feature in self.features}

    def ref(self, feature: str) -> str:
        """The Feast reference `<view>:<feature>`; a pushed view checks that it has the feature."""
        if self.features and feature not in {f.name for f in self.features}:
            raise KeyError(f"Feast view {self.name} has no feature '{feature}'")
        return f"{self.name}:{feature}"


def history_feature(interaction_type: str) -> str:
    """The `user_history` feature holding a user's item ids of one interaction type."""
    return f"{interaction_type}_item_ids"


# Batch views, materialized by Feast from the data assets' own parquet files.
USER_FEATURES = View("user_features", USER_KEY, upstream="users")
ITEM_FEATURES = View("item_features", ITEM_KEY, upstream="items")

# Pushed views copied column by column from one upstream table each.
ITEM_TEXT_EMBEDDINGS = View(
    "item_text_embeddings",
    ITEM_KEY,
    upstream="item_text_embeddings",
    features=(
        Feature("name_embedding", "float_vector"),
        Feature("description_embedding", "float_vector"),
    ),
)
ITEM_CLIP_EMBEDDINGS = View(
    "item_clip_embeddings",
    ITEM_KEY,
    upstream="item_clip_embeddings",
    features=(Feature("clip_embedding", "float_vector"),),
)
ITEM_TOWER_EMBEDDINGS = View(
    "item_tower_embeddings",
    ITEM_KEY,
    upstream="item_embeddings",
    features=(Feature("item_embedding", "float_vector", column="embedding"),),
)
USER_TEXT_EMBEDDINGS = View(
    "user_text_embeddings",
    USER_KEY,
    upstream="user_text_embeddings",
    features=(Feature("preferences_embedding", "float_vector"),),
)
USER_TOWER_EMBEDDINGS = View(
    "user_tower_embeddings",
    USER_KEY,
    upstream="user_embeddings",
    features=(
        Feature("user_embedding", "float_vector", column="embedding"),
        # vectors written before they named their model lack the column
        Feature(
            "model_version", "string", optional=True, description="Digest of the two-tower weights that produced it"
        ),
    ),
)
USER_RECOMMENDATIONS = View(
    "user_recommendations",
    USER_KEY,
    upstream="user_recommendations",
    features=(
        Feature("top_k_item_ids", "string_list"),
        Feature("top_k_scores", "float_vector"),
    ),
)

# A pushed view computed from its upstream table: each user's item ids per interaction type.
USER_HISTORY = View(
    "user_history",
    USER_KEY,
    upstream="interactions",
    features=tuple(Feature(history_feature(kind), "string_list") for kind in INTERACTION_TYPES),
)

BATCH_VIEWS = (USER_FEATURES.name, ITEM_FEATURES.name)
PUSHED_VIEWS = {
    view.name: view
    for view in (
        ITEM_TEXT_EMBEDDINGS,
        ITEM_CLIP_EMBEDDINGS,
        ITEM_TOWER_EMBEDDINGS,
        USER_TEXT_EMBEDDINGS,
        USER_TOWER_EMBEDDINGS,
        USER_RECOMMENDATIONS,
    )
}
"""The copied views by name, in the order their Feast-ready copies are written (`USER_HISTORY` goes last)."""
ALL_PUSHED = (*PUSHED_VIEWS.values(), USER_HISTORY)
ALL_VIEWS = (USER_FEATURES, ITEM_FEATURES, *ALL_PUSHED)

# Feast-ready parquet copies of the pushed views (their offline sources), one per view.
PUSHED_VIEW_FILES = {view.name: table_file(view.name) for view in ALL_PUSHED}

# The feature services a backend reads: per request for one user, and per displayed item.
USER_SERVING_SERVICE = "user_serving"
ITEM_DISPLAY_SERVICE = "item_display"
USER_PROFILE_REFS = tuple(USER_FEATURES.ref(name) for name in ("preferences", "age", "gender"))
USER_HISTORY_REFS = tuple(USER_HISTORY.ref(history_feature(kind)) for kind in INTERACTION_TYPES)


def source_dir(artifact_root: str | Path) -> Path:
    """Where the Feast-ready parquet copies of the pushed views live."""
    return Path(artifact_root) / FEATURE_STORE_DIR / "sources"
