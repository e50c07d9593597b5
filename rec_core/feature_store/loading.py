"""Loading the online store: Feast-ready copies of the upstream tables, then materialization and pushes.

The batch views are materialized by Feast from the data assets' parquet files. The pushed views'
rows are built here from their upstream tables (`views.PUSHED_VIEWS`, `views.USER_HISTORY`),
written as parquet copies that back Feast's offline reads, and pushed online.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rec_core.data.schema import INTERACTION_TYPES
from rec_core.feature_store import views
from rec_core.feature_store.outages import database_errors
from rec_core.progress import Progress
from rec_core.storage import read_asset_table, write_parquet

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    from feast import FeatureStore

UPSTREAM_TABLES = tuple(dict.fromkeys(view.upstream for view in views.ALL_PUSHED))
"""The upstream asset tables the pushed views are built from."""

_KIND_OF = {feature.name: feature.kind for view in views.ALL_PUSHED for feature in view.features}
_OPTIONAL = {feature.name for view in views.ALL_PUSHED for feature in view.features if feature.optional}


def _event_time(snapshot_time: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(snapshot_time)
    return stamp.tz_convert("UTC") if stamp.tzinfo else stamp.tz_localize("UTC")


def feast_source_frame(view: str, frame: pd.DataFrame, snapshot_time: datetime) -> pd.DataFrame:
    """The rows of an upstream table as pushed view `view` stores them: renamed columns plus `event_timestamp`."""
    spec = views.PUSHED_VIEWS[view]
    columns = spec.columns
    missing = [c for c in (spec.key, *columns) if c not in frame.columns and columns.get(c) not in _OPTIONAL]
    if missing:
        from rec_core.data.validation import DataValidationError

        raise DataValidationError(
            spec.upstream, missing[0], len(frame), f"missing column(s) {', '.join(missing)} needed by Feast view {view}"
        )
    out = frame.reindex(columns=[spec.key, *columns]).rename(columns=columns).reset_index(drop=True)
    out[views.EVENT_TIMESTAMP] = _event_time(snapshot_time)
    return out


def user_history_frame(interactions: pd.DataFrame, snapshot_time: datetime) -> pd.DataFrame:
    """One row per user: the sorted distinct item ids of each interaction type (empty lists for types the user
    never did), as Arrow list columns built in bulk (no Python list per user)."""
    import pyarrow as pa

    ids = pd.DataFrame(
        {
            "user_id": interactions["user_id"].astype(str),
            "item_id": interactions["item_id"].astype(str),
            "interaction_type": interactions["interaction_type"],
        }
    )
    ids = ids.drop_duplicates().sort_values(["user_id", "item_id"], kind="stable")
    users = pd.Index(ids["user_id"].unique(), dtype=object)  # sorted: the rows are
    out = pd.DataFrame({views.USER_HISTORY.key: pd.Series(users, dtype=object)})
    for kind in INTERACTION_TYPES:
        of_kind = ids[ids["interaction_type"] == kind]
        per_user = np.bincount(users.get_indexer(of_kind["user_id"]), minlength=len(users))
        offsets = pa.array(np.concatenate([[0], np.cumsum(per_user)]), pa.int32())
        items = pa.ListArray.from_arrays(offsets, pa.array(of_kind["item_id"].to_numpy(), pa.string()))
        out[views.history_feature(kind)] = pd.arrays.ArrowExtensionArray(items)
    out[views.EVENT_TIMESTAMP] = _event_time(snapshot_time)
    return out


def read_upstream_tables(artifact_root: str) -> dict[str, pd.DataFrame]:
    """The upstream asset tables the pushed views copy, from `<artifact root>/<asset>.parquet`."""
    return {asset: read_asset_table(artifact_root, asset) for asset in UPSTREAM_TABLES}


def write_feast_sources(
    artifact_root: str,
    tables: Mapping[str, pd.DataFrame],
    snapshot_time: datetime,
) -> dict[str, pd.DataFrame]:
    """Writes the Feast-ready copy of each pushed view atomically and returns view name -> frame written.

    `tables` maps upstream asset name (`item_embeddings`, `interactions`, ...) to its DataFrame;
    the frames returned are what `push_latest` sends online.
    """
    frames = {
        name: feast_source_frame(name, tables[view.upstream], snapshot_time)
        for name, view in views.PUSHED_VIEWS.items()
    }
    frames[views.USER_HISTORY.name] = user_history_frame(tables[views.USER_HISTORY.upstream], snapshot_time)
    for view, frame in frames.items():
        write_parquet(_arrow_table(frame), views.source_dir(artifact_root) / views.PUSHED_VIEW_FILES[view])
    return frames


def _arrow_table(frame: pd.DataFrame) -> pa.Table:
    """An Arrow table with each pushed feature as its kind's Arrow type (float vectors as list<float32>,
    id lists as list<string>), whatever pandas holds; other columns as pandas holds them."""
    import pyarrow as pa

    arrays = []
    for column in frame.columns:
        values, kind = frame[column], _KIND_OF.get(column)
        if kind == "float_vector":
            arrays.append(pa.array([np.asarray(v, dtype=np.float32) for v in values], type=pa.list_(pa.float32())))
        elif kind == "string":
            arrays.append(pa.array([v if isinstance(v, str) else None for v in values], type=pa.string()))
        elif kind == "string_list" and values.dtype == pd.ArrowDtype(pa.list_(pa.string())):
            arrays.append(pa.array(values))  # built in bulk already (`user_history_frame`)
        elif kind == "string_list":
            arrays.append(pa.array([[str(i) for i in v] for v in values], type=pa.list_(pa.string())))
        else:
            arrays.append(pa.array(values))
    return pa.Table.from_arrays(arrays, names=list(frame.columns))


def materialize_batch_views(
    store: FeatureStore,
    end_time: datetime | None = None,
    batch_views: Iterable[str] = views.BATCH_VIEWS,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Loads the latest row of each entity of the batch views into the online store; returns rows per view.

    Materializes the whole history (the source tables hold one snapshot per entity), so an entity
    whose features changed since an earlier run is overwritten with its current values. One view
    at a time, each reported to `progress`.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    start = datetime(1970, 1, 2, tzinfo=UTC)
    end = (end_time or datetime.now(UTC)) + timedelta(seconds=1)
    batch_views = list(batch_views)
    progress = (progress or Progress("materialize", unit="views")).start(len(batch_views))
    for view in batch_views:
        store.materialize(start_date=start, end_date=end, feature_views=[view])
        progress.advance(1, note=view)
    progress.finish()
    counts = {}
    for view in batch_views:  # rows in the window: an item arriving after `end` is not online yet
        source = store.get_feature_view(view).batch_source
        stamps = pq.read_table(source.path, columns=[source.timestamp_field]).column(0)
        counts[view] = int(
            pc.sum(pc.and_(pc.greater_equal(stamps, pd.Timestamp(start)), pc.less(stamps, pd.Timestamp(end)))).as_py()
            or 0
        )
    return counts


def push_latest(
    store: FeatureStore, frames: Mapping[str, pd.DataFrame], batch_rows: int = 5000, progress: Progress | None = None
) -> dict[str, int]:
    """Pushes each view's frame (from `write_feast_sources`) to the online store, each batch reported to
    `progress`; returns rows per view."""
    from feast.data_source import PushMode

    pushed = {view.name: view for view in views.ALL_PUSHED}
    progress = (progress or Progress("push", unit="rows")).start(sum(len(frame) for frame in frames.values()))
    for view, frame in frames.items():
        for start in range(0, len(frame), batch_rows):
            store.push(pushed[view].push_source, frame.iloc[start : start + batch_rows], to=PushMode.ONLINE)
            progress.advance(len(frame.iloc[start : start + batch_rows]), note=view)
    progress.finish()
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


def load_online(
    store: FeatureStore, frames: Mapping[str, pd.DataFrame], snapshot_time: datetime, progress: Progress | None = None
) -> OnlineLoad:
    """Materializes the batch views and pushes `frames` (from `write_feast_sources`), reporting both to `progress`.

    Each materialized view is written in one transaction, each pushed batch of entities in one:
    a run that dies midway leaves every row either as before or updated, never torn, and running
    it again completes the load (`tests/test_faults_feast.py`).
    """
    progress = progress or Progress("feast")
    start = time.perf_counter()
    with database_errors(store, f"materializing {', '.join(views.BATCH_VIEWS)}"):
        materialized = materialize_batch_views(store, snapshot_time, progress=progress.stage("materialize", "views"))
    middle = time.perf_counter()
    with database_errors(store, f"pushing {', '.join(frames)}"):
        pushed = push_latest(store, frames, progress=progress.stage("push", "rows"))
    return OnlineLoad(materialized, pushed, middle - start, time.perf_counter() - middle)
