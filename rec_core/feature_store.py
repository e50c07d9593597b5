"""Feast around the recommender: build the store, apply definitions, load and read online features.

The definitions live in the Feast repository `feature_repo/` (`features.build_definitions`);
`feature_store.yaml` there is the embedded profile (SQLite online store and registry, parquet
offline store) and `feature_store.postgres.yaml` the production one (PostgreSQL online store and
registry). This module reads those files, so the command line (`cd feature_repo && feast apply`)
and the library use one configuration, and moves the embedded databases under a `data_dir` so
tests and assets can keep them beside their artifacts.

Feast is imported inside the functions: `import rec_core` stays fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping
from urllib.parse import quote

import numpy as np
import pandas as pd
import yaml

from rec_core.data.schema import INTERACTION_TYPES, split_pipe
from rec_core.storage import is_remote, write_parquet

if TYPE_CHECKING:  # pragma: no cover
    from feast import FeatureStore

PROFILES = ("sqlite", "postgres")
PROFILE_FILES = {"sqlite": "feature_store.yaml", "postgres": "feature_store.postgres.yaml"}

# The online views the batch job materializes from the data assets' parquet files.
BATCH_VIEWS = ("user_features", "item_features")

# Pushed views copied from one upstream table each: view -> (upstream asset, entity key,
# {upstream column: Feast feature name}). `user_history` is pushed too, aggregated from `interactions`.
PUSHED_VIEWS: dict[str, tuple[str, str, dict[str, str]]] = {
    "item_text_embeddings": (
        "item_text_embeddings", "item_id",
        {"name_embedding": "name_embedding", "description_embedding": "description_embedding"},
    ),
    "item_clip_embeddings": ("item_clip_embeddings", "item_id", {"clip_embedding": "clip_embedding"}),
    "item_tower_embeddings": ("item_embeddings", "item_id", {"embedding": "item_embedding"}),
    "user_text_embeddings": ("user_text_embeddings", "user_id", {"preferences_embedding": "preferences_embedding"}),
    "user_tower_embeddings": (
        "user_embeddings", "user_id", {"embedding": "user_embedding", "model_version": "model_version"},
    ),
    "user_recommendations": (
        "user_recommendations", "user_id", {"top_k_item_ids": "top_k_item_ids", "top_k_scores": "top_k_scores"},
    ),
}
# Columns an older table may lack (vectors written before they named their model): pushed as nulls.
_OPTIONAL_COLUMNS = {"model_version"}
_FLOAT_VECTOR_FEATURES = {"name_embedding", "description_embedding", "clip_embedding", "item_embedding",
                          "preferences_embedding", "user_embedding", "top_k_scores"}

# The features a backend reads per request (the `user_serving` service) and per displayed item.
USER_SERVING_SERVICE = "user_serving"
ITEM_DISPLAY_SERVICE = "item_display"
USER_PROFILE_REFS = ("user_features:preferences", "user_features:age", "user_features:gender")
USER_HISTORY_REFS = tuple(f"user_history:{kind}_item_ids" for kind in INTERACTION_TYPES)


def project_root() -> Path:
    """The checkout that holds `rec_core/` and `feature_repo/`."""
    return Path(__file__).resolve().parent.parent


def default_repo_path() -> Path:
    """The Feast repository: `$REC_FEATURE_REPO`, else `<project>/feature_repo`."""
    return Path(os.environ.get("REC_FEATURE_REPO", project_root() / "feature_repo"))


def default_artifact_root() -> str:
    """The artifact root the Dagster assets use: `$REC_ARTIFACT_ROOT`, else `./data/artifacts`."""
    return os.environ.get("REC_ARTIFACT_ROOT", str(Path.cwd() / "data" / "artifacts"))


def default_data_dir(artifact_root: str | None = None) -> Path:
    """Where the embedded online store and registry live: `$REC_FEAST_DATA_DIR`, else `<artifact root>/feature_store`."""
    if os.environ.get("REC_FEAST_DATA_DIR"):
        return Path(os.environ["REC_FEAST_DATA_DIR"])
    root = artifact_root or default_artifact_root()
    if is_remote(root):
        raise ValueError(
            f"the artifact root {root} is object storage; the sqlite profile needs a local REC_FEAST_DATA_DIR "
            "(or use REC_FEAST_PROFILE=postgres)"
        )
    return Path(root) / "feature_store"


def default_profile() -> str:
    """`$REC_FEAST_PROFILE`: `sqlite` (embedded, the default) or `postgres`."""
    return os.environ.get("REC_FEAST_PROFILE", "sqlite")


@dataclass(frozen=True)
class PostgresSettings:
    """Where the PostgreSQL online store and registry live; `from_env` reads `FEAST_POSTGRES_*`."""

    host: str = "127.0.0.1"
    port: int = 5432
    database: str = "feast"
    user: str = "postgres"
    password: str = ""  # empty: trust or peer authentication
    db_schema: str = "public"
    sslmode: str = "disable"  # a local server has no TLS; use `require` across a network

    @classmethod
    def from_env(cls, **overrides) -> "PostgresSettings":
        env = os.environ
        values = dict(
            host=env.get("FEAST_POSTGRES_HOST", cls.host),
            port=int(env.get("FEAST_POSTGRES_PORT", cls.port)),
            database=env.get("FEAST_POSTGRES_DB", cls.database),
            user=env.get("FEAST_POSTGRES_USER", cls.user),
            password=env.get("FEAST_POSTGRES_PASSWORD", cls.password),
            db_schema=env.get("FEAST_POSTGRES_SCHEMA", cls.db_schema),
            sslmode=env.get("FEAST_POSTGRES_SSLMODE", cls.sslmode),
        )
        values.update(overrides)
        return cls(**values)

    def yaml_variables(self) -> dict[str, str]:
        """The `${FEAST_POSTGRES_*}` values substituted into `feature_store.postgres.yaml`."""
        return {
            "FEAST_POSTGRES_HOST": self.host, "FEAST_POSTGRES_PORT": str(self.port),
            "FEAST_POSTGRES_DB": self.database, "FEAST_POSTGRES_USER": self.user,
            "FEAST_POSTGRES_PASSWORD": self.password, "FEAST_POSTGRES_SCHEMA": self.db_schema,
            "FEAST_POSTGRES_SSLMODE": self.sslmode,
        }


_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def _expand(text: str, variables: Mapping[str, str]) -> str:
    """`os.path.expandvars` (as the Feast CLI does), with `variables` taking precedence over the environment."""

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, os.environ.get(name, match.group(0)))

    return _VARIABLE.sub(value, text)


def feature_store_config(
    repo_path: str | Path | None = None,
    profile: str | None = None,
    data_dir: str | Path | None = None,
    postgres: PostgresSettings | None = None,
):
    """The Feast `RepoConfig` of a profile, read from the repository's YAML file.

    `sqlite`: the online store and registry databases go under `data_dir` (default
    `default_data_dir()`). `postgres`: the connection comes from `postgres` (default
    `PostgresSettings.from_env()`).
    """
    from feast.repo_config import RepoConfig

    repo = Path(repo_path or default_repo_path()).resolve()
    profile = profile or default_profile()
    if profile not in PROFILES:
        raise ValueError(f"unknown Feast profile '{profile}': use one of {', '.join(PROFILES)}")
    yaml_path = repo / PROFILE_FILES[profile]
    variables = (postgres or PostgresSettings.from_env()).yaml_variables() if profile == "postgres" else {}
    raw = yaml.safe_load(_expand(yaml_path.read_text(), variables))
    if profile == "sqlite":
        directory = Path(data_dir or default_data_dir()).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        raw["online_store"]["path"] = str(directory / "online_store.db")
        raw["registry"]["path"] = f"sqlite:///{directory / 'registry.db'}"
    else:  # the same server as the online store, with the credentials URL-quoted
        online = raw["online_store"]
        raw["registry"]["path"] = (f"postgresql+psycopg://{quote(str(online['user']), safe='')}:"
                                   f"{quote(str(online['password']), safe='')}@{online['host']}:{online['port']}/"
                                   f"{quote(str(online['database']), safe='')}"
                                   + (f"?sslmode={online['sslmode']}" if online.get("sslmode") else ""))
    config = RepoConfig(**raw)
    config.repo_path = repo
    return config


def load_feature_store(
    repo_path: str | Path | None = None,
    profile: str | None = None,
    data_dir: str | Path | None = None,
    postgres: PostgresSettings | None = None,
) -> "FeatureStore":
    """A Feast `FeatureStore` for a repository and profile (see `feature_store_config`)."""
    from feast import FeatureStore

    return FeatureStore(config=feature_store_config(repo_path, profile, data_dir, postgres))


# --- Outages of the store's database ---------------------------------------------------------------------


class FeatureStoreUnavailableError(ConnectionError):
    """The PostgreSQL server behind the online store or registry cannot be reached.

    Raised in place of the driver's error (psycopg or SQLAlchemy, deep in Feast) so that a caller
    can tell an outage, worth retrying, from bad data, which is not: the Dagster assets retry it,
    a backend can fall back. The message names the server and what was being done.
    """


def _unreachable_server_error(exc: BaseException) -> BaseException | None:
    """The psycopg error behind `exc` (SQLAlchemy keeps it as `.orig`) when the server is unreachable or gone."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - installed with feast[postgres]
        return None
    cause = getattr(exc, "orig", None) or exc
    return cause if isinstance(cause, (psycopg.OperationalError, psycopg.InterfaceError)) else None


def _describe_server(store: "FeatureStore") -> str:
    online = store.config.online_store
    if online.type == "postgres":
        return f"PostgreSQL feature store at {online.host}:{online.port}/{online.database}"
    return f"{online.type} feature store"


def _drop_lost_connection(store: "FeatureStore") -> None:
    """Forgets the online store's cached PostgreSQL connection once the server has closed it.

    Feast keeps one connection per store and never reopens it, so after a server restart every
    read of a long-lived store (a backend's) would fail with "the connection is lost"; dropping
    the dead one makes the next call connect afresh.
    """
    online = store._get_provider().online_store
    connection = getattr(online, "_conn", None)
    if connection is not None and (getattr(connection, "closed", False) or getattr(connection, "broken", False)):
        online._conn = None


@contextlib.contextmanager
def database_errors(store: "FeatureStore", action: str) -> Iterator[None]:
    """Turns a lost or refused database connection during `action` into `FeatureStoreUnavailableError`."""
    _drop_lost_connection(store)
    try:
        yield
    except Exception as exc:
        cause = _unreachable_server_error(exc)
        if cause is None:
            raise
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise FeatureStoreUnavailableError(
            f"{_describe_server(store)} is unreachable while {action}: {reason}") from exc


# --- Definitions and the registry ------------------------------------------------------------------------


_definition_modules: dict[Path, ModuleType] = {}


def _features_module(repo_path: str | Path | None) -> ModuleType:
    """The repository's `features.py`, loaded once per path (it has no import-time side effects)."""
    path = (Path(repo_path or default_repo_path()) / "features.py").resolve()
    if path not in _definition_modules:
        spec = importlib.util.spec_from_file_location(f"rec_feature_repo_{abs(hash(path))}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _definition_modules[path] = module
    return _definition_modules[path]


def load_definitions(repo_path: str | Path | None = None, artifact_root: str | None = None) -> list:
    """Every Feast object of the repository, with offline sources under `artifact_root`."""
    return _features_module(repo_path).build_definitions(artifact_root or default_artifact_root())


def definitions_version(repo_path: str | Path | None = None) -> str:
    """A digest of the definitions and store configurations: changes whenever `feast apply` could."""
    repo = Path(repo_path or default_repo_path())
    digest = hashlib.sha256()
    for name in ("features.py", *PROFILE_FILES.values()):
        digest.update(name.encode() + b"\0" + (repo / name).read_bytes())
    return digest.hexdigest()[:12]


def _repo_contents(objects: Iterable):
    """Feast's `RepoContents` for a list of objects, collected as `feast apply` collects a repository."""
    from feast import Entity, FeatureService, FeatureView, Project
    from feast.data_source import DataSource
    from feast.feature_view import DUMMY_ENTITY
    from feast.repo_contents import RepoContents

    contents = RepoContents(
        projects=[], data_sources=[], entities=[], feature_views=[], feature_services=[],
        on_demand_feature_views=[], stream_feature_views=[], label_views=[], permissions=[],
    )

    def add_source(source) -> None:
        if source is not None and not any(source is known for known in contents.data_sources):
            contents.data_sources.append(source)

    for obj in objects:
        if isinstance(obj, Project):
            contents.projects.append(obj)
        elif isinstance(obj, Entity):
            contents.entities.append(obj)
        elif isinstance(obj, FeatureView):
            contents.feature_views.append(obj)
            add_source(obj.batch_source)
            add_source(obj.stream_source)
        elif isinstance(obj, FeatureService):
            contents.feature_services.append(obj)
        elif isinstance(obj, DataSource):
            add_source(obj)
            add_source(getattr(obj, "batch_source", None))
        else:
            raise TypeError(f"unsupported Feast object {obj!r}")
    contents.entities.append(DUMMY_ENTITY)  # as `feast apply` does, so both paths see the same registry
    return contents


@dataclass(frozen=True)
class ObjectChange:
    """One registry object that `apply_definitions` added, changed or removed."""

    kind: str  # Feast object type, e.g. "feature view"
    name: str
    change: str  # "added", "changed" or "removed"
    details: tuple[str, ...] = ()  # for "changed": what differs, e.g. "fields renamed: age -> age_years"


@dataclass
class ApplyReport:
    """What applying the definitions changed in the registry."""

    changes: list[ObjectChange] = field(default_factory=list)
    unchanged: int = 0

    def count(self, change: str) -> int:
        return sum(1 for c in self.changes if c.change == change)

    @property
    def changed_anything(self) -> bool:
        return bool(self.changes)

    def to_markdown(self) -> str:
        if not self.changes:
            return f"No changes ({self.unchanged} objects unchanged)."
        rows = ["| object | name | change | details |", "|---|---|---|---|"]
        for c in self.changes:
            rows.append(f"| {c.kind} | `{c.name}` | {c.change} | {'<br>'.join(c.details)} |")
        return "\n".join(rows)


def _fields(obj) -> list | None:
    """The feature fields of a feature view (None for objects without fields)."""
    features = getattr(obj, "features", None)
    if features is None or not all(hasattr(f, "name") and hasattr(f, "dtype") for f in features):
        return None
    return list(features)


def _field_changes(old: list, new: list) -> list[str]:
    """Renamed, removed and added fields; a field replaced in place by one of the same type is a rename."""
    old_names, new_names = [f.name for f in old], [f.name for f in new]
    removed = [f for f in old if f.name not in new_names]
    added = [f for f in new if f.name not in old_names]
    renamed = []
    for gone in list(removed):
        position = old_names.index(gone.name)
        twin = new[position] if position < len(new) else None
        if twin is not None and twin in added and twin.dtype == gone.dtype:
            renamed.append(f"{gone.name} -> {twin.name}")
            removed.remove(gone)
            added.remove(twin)
    details = []
    for label, names in (("renamed", renamed), ("removed", [f.name for f in removed]), ("added", [f.name for f in added])):
        if names:
            details.append(f"fields {label}: {', '.join(names)}")
    return details


def _describe_update(diff) -> tuple[str, ...]:
    """Readable details of an updated object: renamed/removed/added fields, then other changed properties."""
    details = []
    old_fields, new_fields = _fields(diff.current_feast_object), _fields(diff.new_feast_object)
    if old_fields is not None and new_fields is not None:
        details = _field_changes(old_fields, new_fields)
    for prop in diff.feast_object_property_diffs:
        if _is_real_change(prop) and (prop.property_name != "features" or not details):
            details.append(f"{prop.property_name} changed")
    return tuple(details)


def _is_real_change(prop) -> bool:
    """False for a property that differs only in an embedded data source's bookkeeping timestamps.

    Feast marks a materialized feature view as updated (its materialization intervals differ
    from the declared view's) and then reports its batch source, whose `meta` timestamps are
    re-stamped at every definition load; such a view's definition did not change.
    """
    from feast.protos.feast.core.DataSource_pb2 import DataSource as DataSourceProto

    old, new = prop.val_existing, prop.val_declared
    if isinstance(old, DataSourceProto) and isinstance(new, DataSourceProto):
        old, new = DataSourceProto.FromString(old.SerializeToString()), DataSourceProto.FromString(new.SerializeToString())
        old.ClearField("meta")
        new.ClearField("meta")
        return old != new
    return True


def apply_definitions(store: "FeatureStore", objects: list) -> ApplyReport:
    """Registers `objects` and creates their online tables, reporting what changed.

    Computes Feast's plan first; when nothing differs from the registry, nothing is written.
    Objects in the registry but not in `objects` are removed, as `feast apply` does.
    """
    from feast.diff.property_diff import TransitionType
    from feast.feature_view import DUMMY_ENTITY_NAME
    from feast.infra.registry.registry import FeastObjectType

    contents = _repo_contents(objects)
    with database_errors(store, "comparing the definitions with the registry"):
        registry_diff, _, _ = store.plan(contents)
    report = ApplyReport()
    to_apply, to_delete = [], []
    labels = {TransitionType.CREATE: "added", TransitionType.UPDATE: "changed", TransitionType.DELETE: "removed"}
    for diff in registry_diff.feast_object_diffs:
        if diff.name == DUMMY_ENTITY_NAME:
            continue
        if diff.transition_type == TransitionType.UNCHANGED or (
            diff.transition_type == TransitionType.UPDATE
            and not any(_is_real_change(p) for p in diff.feast_object_property_diffs)
        ):
            report.unchanged += 1
            continue
        kind = diff.feast_object_type.value if isinstance(diff.feast_object_type, FeastObjectType) else str(
            diff.feast_object_type)
        details = _describe_update(diff) if diff.transition_type == TransitionType.UPDATE else ()
        report.changes.append(ObjectChange(kind, diff.name, labels[diff.transition_type], details))
        if diff.transition_type == TransitionType.DELETE:
            to_delete.append(diff.current_feast_object)
        else:
            to_apply.append(diff.new_feast_object)
    if to_apply or to_delete:
        with database_errors(store, "applying the feature definitions"):
            store.apply(to_apply, objects_to_delete=to_delete, partial=False)
    return report


# --- Loading: Feast-ready copies, materialization and pushes -------------------------------------------


def _event_time(snapshot_time: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(snapshot_time)
    return stamp.tz_convert("UTC") if stamp.tzinfo else stamp.tz_localize("UTC")


def feast_source_frame(view: str, frame: pd.DataFrame, snapshot_time: datetime) -> pd.DataFrame:
    """The rows of an upstream table as pushed view `view` stores them: renamed columns plus `event_timestamp`."""
    asset, key, columns = PUSHED_VIEWS[view]
    missing = [c for c in (key, *columns) if c not in frame.columns and c not in _OPTIONAL_COLUMNS]
    if missing:
        from rec_core.data.validation import DataValidationError

        raise DataValidationError(asset, missing[0], len(frame),
                                  f"missing column(s) {', '.join(missing)} needed by Feast view {view}")
    out = frame.reindex(columns=[key, *columns]).rename(columns=columns).reset_index(drop=True)
    out["event_timestamp"] = _event_time(snapshot_time)
    return out


def user_history_frame(interactions: pd.DataFrame, snapshot_time: datetime) -> pd.DataFrame:
    """One row per user: the item ids of each interaction type (empty lists for types the user never did)."""
    ids = pd.DataFrame({"user_id": interactions["user_id"].astype(str), "item_id": interactions["item_id"].astype(str),
                        "interaction_type": interactions["interaction_type"]})
    per_type = ids.groupby(["user_id", "interaction_type"])["item_id"].agg(lambda s: sorted(set(s))).to_dict()
    users = sorted(ids["user_id"].unique())
    out = pd.DataFrame({"user_id": pd.Series(users, dtype=object)})
    for kind in INTERACTION_TYPES:
        out[f"{kind}_item_ids"] = pd.Series([per_type.get((user, kind), []) for user in users], dtype=object)
    out["event_timestamp"] = _event_time(snapshot_time)
    return out


UPSTREAM_TABLES = ("interactions", *dict.fromkeys(asset for asset, _, _ in PUSHED_VIEWS.values()))


def read_upstream_tables(artifact_root: str) -> dict[str, pd.DataFrame]:
    """The upstream asset tables the pushed views copy, from `<artifact root>/<asset>.parquet`."""
    from rec_core.storage import read_asset_table

    return {asset: read_asset_table(artifact_root, asset) for asset in UPSTREAM_TABLES}


def write_feast_sources(
    artifact_root: str, tables: Mapping[str, pd.DataFrame], snapshot_time: datetime,
    repo_path: str | Path | None = None,
) -> dict[str, pd.DataFrame]:
    """Writes the Feast-ready copy of each pushed view atomically and returns view name -> frame written.

    `tables` maps upstream asset name (`item_embeddings`, `interactions`, ...) to its DataFrame;
    the frames returned are what `push_latest` sends online.
    """
    features = _features_module(repo_path)
    frames = {view: feast_source_frame(view, tables[asset], snapshot_time)
              for view, (asset, _, _) in PUSHED_VIEWS.items()}
    frames["user_history"] = user_history_frame(tables["interactions"], snapshot_time)
    for view, frame in frames.items():
        write_parquet(_arrow_table(frame), features.source_dir(artifact_root) / features.PUSHED_VIEW_FILES[view])
    return frames


def _arrow_table(frame: pd.DataFrame):
    """An Arrow table with float vectors as list<float32> and id lists as list<string>, whatever pandas holds."""
    import pyarrow as pa

    arrays = []
    for column in frame.columns:
        values = frame[column]
        if column in _FLOAT_VECTOR_FEATURES:
            arrays.append(pa.array([np.asarray(v, dtype=np.float32) for v in values], type=pa.list_(pa.float32())))
        elif column in _OPTIONAL_COLUMNS:
            arrays.append(pa.array([v if isinstance(v, str) else None for v in values], type=pa.string()))
        elif column.endswith("_item_ids"):
            arrays.append(pa.array([[str(i) for i in v] for v in values], type=pa.list_(pa.string())))
        else:
            arrays.append(pa.array(values))
    return pa.Table.from_arrays(arrays, names=list(frame.columns))


def materialize_batch_views(store: "FeatureStore", end_time: datetime | None = None,
                            views: Iterable[str] = BATCH_VIEWS) -> dict[str, int]:
    """Loads the latest row of each entity of the batch views into the online store; returns rows per view.

    Materializes the whole history (the source tables hold one snapshot per entity), so an entity
    whose features changed since an earlier run is overwritten with its current values.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    start = datetime(1970, 1, 2, tzinfo=timezone.utc)
    end = (end_time or datetime.now(timezone.utc)) + timedelta(seconds=1)
    views = list(views)
    store.materialize(start_date=start, end_date=end, feature_views=views)
    counts = {}
    for view in views:  # rows in the window: an item arriving after `end` is not online yet
        source = store.get_feature_view(view).batch_source
        stamps = pq.read_table(source.path, columns=[source.timestamp_field]).column(0)
        counts[view] = int(pc.sum(pc.and_(pc.greater_equal(stamps, pd.Timestamp(start)),
                                          pc.less(stamps, pd.Timestamp(end)))).as_py() or 0)
    return counts


def push_latest(store: "FeatureStore", frames: Mapping[str, pd.DataFrame], batch_rows: int = 5000) -> dict[str, int]:
    """Pushes each view's frame (from `write_feast_sources`) to the online store; returns rows per view."""
    from feast.data_source import PushMode

    for view, frame in frames.items():
        for start in range(0, len(frame), batch_rows):
            store.push(f"{view}_push", frame.iloc[start:start + batch_rows], to=PushMode.ONLINE)
    return {view: len(frame) for view, frame in frames.items()}


@dataclass(frozen=True)
class OnlineLoad:
    """Rows written to the online store by one `load_online`, per view, and how long it took."""

    materialized: dict[str, int]
    pushed: dict[str, int]
    materialize_seconds: float
    push_seconds: float

    @property
    def materialized_rows(self) -> int:
        return sum(self.materialized.values())

    @property
    def pushed_rows(self) -> int:
        return sum(self.pushed.values())

    @property
    def rows_per_s(self) -> float:
        seconds = self.materialize_seconds + self.push_seconds
        return (self.materialized_rows + self.pushed_rows) / seconds if seconds > 0 else 0.0

    def to_markdown(self) -> str:
        rows = ["| view | how | rows |", "|---|---|---|"]
        rows += [f"| `{v}` | materialized | {n} |" for v, n in self.materialized.items()]
        rows += [f"| `{v}` | pushed | {n} |" for v, n in self.pushed.items()]
        return "\n".join(rows)


def load_online(store: "FeatureStore", frames: Mapping[str, pd.DataFrame], snapshot_time: datetime) -> OnlineLoad:
    """Materializes the batch views and pushes `frames` (from `write_feast_sources`).

    Each materialized view is written in one transaction, each pushed batch of entities in one:
    a run that dies midway leaves every row either as before or updated, never torn, and running
    it again completes the load (`tests/test_faults_feast.py`).
    """
    start = time.perf_counter()
    with database_errors(store, f"materializing {', '.join(BATCH_VIEWS)}"):
        materialized = materialize_batch_views(store, snapshot_time)
    middle = time.perf_counter()
    with database_errors(store, f"pushing {', '.join(frames)}"):
        pushed = push_latest(store, frames)
    return OnlineLoad(materialized, pushed, middle - start, time.perf_counter() - middle)


# --- Online reads ----------------------------------------------------------------------------------------


def online_rows(store: "FeatureStore", features, key: str, ids: list[str]) -> list[dict]:
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

    def __init__(self, store: "FeatureStore"):
        self.store = store

    @classmethod
    def from_repo(cls, repo_path: str | Path | None = None, profile: str | None = None,
                  data_dir: str | Path | None = None, postgres: PostgresSettings | None = None) -> "FeastFeatureSource":
        return cls(load_feature_store(repo_path, profile, data_dir, postgres))

    def _user_row(self, refs: list[str], user_id: str) -> dict:
        return online_rows(self.store, refs, "user_id", [str(user_id)])[0]

    def user_embedding(self, user_id: str) -> np.ndarray | None:
        """The user tower's vector [dim] (float32) as the model produced it, or None when none is online."""
        vector = self._user_row(["user_tower_embeddings:user_embedding"], user_id)["user_embedding"]
        return None if vector is None else np.asarray(vector, dtype=np.float32)

    def user_vector(self, user_id: str) -> tuple[np.ndarray | None, str | None]:
        """(the user tower's vector or None, the model version it came from or None), in one read: a
        Recommender serving a release uses the vector only when the version is the release's model."""
        row = self._user_row(["user_tower_embeddings:user_embedding", "user_tower_embeddings:model_version"], user_id)
        vector = row["user_embedding"]
        return None if vector is None else np.asarray(vector, dtype=np.float32), row["model_version"]

    def user_profile(self, user_id: str):
        """Demographics, stated preferences and past interactions (a `UserProfile`), or None for an unknown user."""
        from rec_core.filtering import UserProfile

        row = self._user_row([*USER_PROFILE_REFS, *USER_HISTORY_REFS], user_id)
        if all(v is None for v in row.values()):
            return None
        preferences = tuple(split_pipe(row["preferences"]))
        interacted = {ref.split(":")[1].removesuffix("_item_ids"): frozenset(row[ref.split(":")[1]])
                      for ref in USER_HISTORY_REFS if row[ref.split(":")[1]]}
        age = row["age"]
        return UserProfile(str(user_id), None if age is None else int(age), row["gender"], preferences, interacted)

    def user_recommendations(self, user_id: str) -> tuple[list[str], np.ndarray] | None:
        """The precomputed top-k item ids and scores [k] of a user, or None."""
        row = self._user_row(["user_recommendations:top_k_item_ids", "user_recommendations:top_k_scores"], user_id)
        if row["top_k_item_ids"] is None:
            return None
        return list(row["top_k_item_ids"]), np.asarray(row["top_k_scores"], dtype=np.float32)

    def serving_features(self, user_id: str) -> dict:
        """Every feature of the `user_serving` service for one user, in one read (None values when unknown)."""
        return self._user_row(self.store.get_feature_service(USER_SERVING_SERVICE, allow_cache=True), user_id)

    def item_display(self, item_ids: list[str]) -> list[dict]:
        """The `item_display` fields of each item, in order (None values for unknown items)."""
        return online_rows(self.store, self.store.get_feature_service(ITEM_DISPLAY_SERVICE, allow_cache=True), "item_id",
                           [str(i) for i in item_ids])
