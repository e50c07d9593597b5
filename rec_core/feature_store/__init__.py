"""Feast around the recommender: build the store, apply definitions, load and read online features.

One module per job, every name importable from here:

- `views`: the registry of Feast views (names, entities, pushed fields), shared with `feature_repo/`;
- `settings`: the repository, the profile (embedded SQLite or PostgreSQL) and the store's `RepoConfig`;
- `outages`: a lost or refused database connection turned into `FeatureStoreUnavailableError`;
- `registry`: the definitions of `feature_repo/features.py`, applied with a report of what changed;
- `loading`: Feast-ready copies of the upstream tables, materialization and pushes;
- `online`: online reads, and `FeastFeatureSource` for a backend.

Feast is imported inside the functions: `import rec_core` stays fast.
"""

from rec_core.feature_store import views
from rec_core.feature_store.loading import (
    UPSTREAM_TABLES,
    OnlineLoad,
    _arrow_table,
    feast_source_frame,
    load_online,
    materialize_batch_views,
    push_latest,
    read_upstream_tables,
    user_history_frame,
    write_feast_sources,
)
from rec_core.feature_store.online import FeastFeatureSource, online_rows
from rec_core.feature_store.outages import FeatureStoreUnavailableError, database_errors
from rec_core.feature_store.registry import (
    ApplyReport,
    ObjectChange,
    _features_module,
    apply_definitions,
    definitions_version,
    load_definitions,
)
from rec_core.feature_store.settings import (
    PROFILE_FILES,
    PROFILES,
    PostgresSettings,
    default_artifact_root,
    default_data_dir,
    default_profile,
    default_repo_path,
    feature_store_config,
    load_feature_store,
    project_root,
)
from rec_core.feature_store.views import (
    BATCH_VIEWS,
    ITEM_DISPLAY_SERVICE,
    PUSHED_VIEWS,
    USER_HISTORY_REFS,
    USER_PROFILE_REFS,
    USER_SERVING_SERVICE,
)

__all__ = [
    "BATCH_VIEWS",
    "ITEM_DISPLAY_SERVICE",
    "PROFILES",
    "PROFILE_FILES",
    "PUSHED_VIEWS",
    "UPSTREAM_TABLES",
    "USER_HISTORY_REFS",
    "USER_PROFILE_REFS",
    "USER_SERVING_SERVICE",
    "ApplyReport",
    "FeastFeatureSource",
    "FeatureStoreUnavailableError",
    "ObjectChange",
    "OnlineLoad",
    "PostgresSettings",
    "apply_definitions",
    "database_errors",
    "default_artifact_root",
    "default_data_dir",
    "default_profile",
    "default_repo_path",
    "definitions_version",
    "feast_source_frame",
    "feature_store_config",
    "load_definitions",
    "load_feature_store",
    "load_online",
    "materialize_batch_views",
    "online_rows",
    "project_root",
    "push_latest",
    "read_upstream_tables",
    "user_history_frame",
    "views",
    "write_feast_sources",
    "_arrow_table",
    "_features_module",  # not API: the tests write parquet and find the repo's copies with them
]
