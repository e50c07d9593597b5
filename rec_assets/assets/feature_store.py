"""Feature-store group: Feast definitions registered, then online features loaded.

`feast_registry` applies `feature_repo/` (what changed lands in its metadata); `feast_online_features`
writes the Feast-ready parquet copies, materializes the batch views from the data assets' files and
pushes the latest embeddings, recommendations and histories. The store comes from the `feast`
resource: embedded SQLite under `<artifact root>/feature_store/` by default, PostgreSQL with
`profile="postgres"` (or `REC_FEAST_PROFILE=postgres`, connection from `FEAST_POSTGRES_*`).
"""

import contextlib
from datetime import UTC, datetime

import dagster as dg

from rec_assets.resources import ArtifactStore, FeastStoreResource
from rec_core import feature_store as feast_lib
from rec_core.data.validation import DataValidationError
from rec_core.progress import Progress

# A PostgreSQL restart or failover is retried after 2, 6 and 14 s (22 s in all); bad or missing input is not.
FEAST_RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL)


@contextlib.contextmanager
def _no_retry_on_bad_input():
    """Fails the step without retries on bad or missing upstream data: waiting will not fix it."""
    try:
        yield
    except (DataValidationError, FileNotFoundError) as error:
        raise dg.Failure(description=str(error), allow_retries=False) from error


@dg.asset(
    group_name="feature_store",
    code_version=feast_lib.definitions_version(),  # a digest of feature_repo/: editing it makes the asset stale
    kinds={"feast"},
    retry_policy=FEAST_RETRY_POLICY,
    description="Feast entities, feature views, push sources and feature services from feature_repo/, applied to the registry.",
)
def feast_registry(feast: FeastStoreResource, artifacts: ArtifactStore) -> dg.MaterializeResult:
    store = feast.store(artifacts)
    definitions = feast_lib.load_definitions(feast.repo_path or None, artifacts.resolved_root())
    report = feast_lib.apply_definitions(store, definitions)
    return dg.MaterializeResult(
        metadata={
            "added": float(report.count("added")),
            "changed": float(report.count("changed")),
            "removed": float(report.count("removed")),
            "unchanged": float(report.unchanged),
            "changes": dg.MetadataValue.md(report.to_markdown()),
            "profile": store.config.online_store.type,
        }
    )


@dg.asset(
    group_name="feature_store",
    code_version="1",
    kinds={"feast"},
    retry_policy=FEAST_RETRY_POLICY,
    # The offline sources are the upstream parquet files themselves, so they are dependencies, not loaded inputs.
    deps=[*dict.fromkeys(view.upstream for view in feast_lib.views.ALL_VIEWS), feast_registry],
    description="The online store filled: user and item features materialized, embeddings, recommendations "
    "and interaction histories pushed.",
)
def feast_online_features(
    context: dg.AssetExecutionContext, feast: FeastStoreResource, artifacts: ArtifactStore
) -> dg.MaterializeResult:
    store = feast.store(artifacts)
    root = artifacts.resolved_root()
    snapshot = datetime.now(UTC)
    with _no_retry_on_bad_input():
        tables = feast_lib.read_upstream_tables(root)
        frames = feast_lib.write_feast_sources(root, tables, snapshot)
    load = feast_lib.load_online(store, frames, snapshot, Progress("feast_online_features", context.log.info))
    return dg.MaterializeResult(
        metadata={
            "materialized_rows": float(load.materialized_rows),
            "pushed_rows": float(load.pushed_rows),
            "materialize_seconds": float(load.materialize_seconds),
            "push_seconds": float(load.push_seconds),
            "rows_per_s": float(load.rows_per_s),
            "rows_per_view": dg.MetadataValue.md(load.to_markdown()),
            "online_store": store.config.online_store.type,
        }
    )
