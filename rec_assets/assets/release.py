"""Group `release`: the one pointer serving reads, moved only for a model that passed the gate.

`serving_release` runs after the serving artifacts of a model exist and publishes them as one
release (`rec_core.release.publish_release`: immutable copies, a consistency check, one atomic
manifest write). It publishes only when the latest `two_tower_model` materialization passed the
blocking check `two_tower_beats_popularity`; a rejected model never reaches serving, even if its
downstream assets are materialized by hand. `rollback_release` (a job) points serving back at an
earlier release. Both record the served release and the release history as `serving_release`
metadata, so the UI shows what is served and what came before.
"""

import dagster as dg

from rec_assets.resources import ArtifactStore
from rec_core import release as releases

MODEL = dg.AssetKey("two_tower_model")
GATE = dg.AssetCheckKey(MODEL, "two_tower_beats_popularity")
RELEASED_ASSETS = ("two_tower_model", "item_embeddings", "user_embeddings", "item_index")
RELEASE_VERSION = "1"


class ServingReleaseConfig(dg.Config):
    keep: int = releases.DEFAULT_KEEP  # releases kept; older ones and store versions only they name are deleted


def release_metadata(root: str, manifest: dict) -> dict:
    """What the UI shows on `serving_release`: the served release and the kept history."""
    history = releases.list_releases(root)
    rows = ["| | release | created | model | index build | activation |", "|---|---|---|---|---|---|"]
    current = releases.current_release(root) or {}
    rows += [
        f"| {'**serving**' if m['current'] else ''} | `{m['release_id']}` | {m['created_at'][:19]} | "
        f"`{m['model_version']}` | `{m['index_build_id'][:12]}` | "
        f"{current.get('activation', '') if m['current'] else ''} |"
        for m in reversed(history)
    ]
    return {
        "release_id": manifest["release_id"],
        "model_version": manifest["model_version"],
        "index_build_id": manifest["index_build_id"],
        "created_at": manifest["created_at"],
        "releases_kept": float(len(history)),
        "history": dg.MetadataValue.md("\n".join(rows)),
        "manifest": dg.MetadataValue.json({k: v for k, v in current.items() if k != "current"}),
    }


def _gate_verdict(instance: dg.DagsterInstance) -> dict:
    """The gate's metrics for the latest model, or a Failure when that model did not pass the gate.

    The blocking check runs in the run that materialized the model, so its evaluation is looked up
    by that run (a later queued run has already planned its own, still unevaluated, execution).
    """
    model = instance.get_latest_materialization_event(MODEL)
    history = instance.event_log_storage.get_asset_check_execution_history(GATE, limit=50)
    evaluations = [
        r.event.asset_check_evaluation
        for r in history
        if model is not None
        and r.run_id == model.run_id
        and r.event is not None
        and r.event.asset_check_evaluation is not None
    ]
    if not evaluations:
        raise dg.Failure(
            description="the latest two_tower_model has no evaluation of the release gate "
            "two_tower_beats_popularity; materialize two_tower_model with its check",
            allow_retries=False,
        )
    if not evaluations[0].passed:
        raise dg.Failure(
            description="the latest two_tower_model failed the release gate two_tower_beats_popularity; "
            "the current release keeps serving",
            allow_retries=False,
        )
    return {name: value.value for name, value in evaluations[0].metadata.items()}


@dg.asset(
    group_name="release",
    code_version=RELEASE_VERSION,
    deps=list(RELEASED_ASSETS),
    description="The served release: a manifest naming one consistent set (model, index build, embedding tables, "
    "items snapshot, code versions), published only for a model that passed two_tower_beats_popularity.",
)
def serving_release(
    context: dg.AssetExecutionContext, config: ServingReleaseConfig, artifacts: ArtifactStore
) -> dg.MaterializeResult:
    gate = _gate_verdict(context.instance)
    code_versions = {}
    for name in RELEASED_ASSETS:
        event = context.instance.get_latest_materialization_event(dg.AssetKey(name))
        code_versions[name] = (event.tags or {}).get("dagster/code_version", "") if event else ""
    root = artifacts.resolved_root()
    try:
        manifest = releases.publish_release(
            root, code_versions, {"gate": gate, "dagster_run_id": context.run.run_id}, keep=config.keep
        )
    except releases.ReleaseError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    context.log.info(f"serving release {manifest['release_id']}: model {manifest['model_version']}")
    return dg.MaterializeResult(
        metadata=release_metadata(root, manifest), data_version=dg.DataVersion(manifest["release_id"])
    )


class RollbackConfig(dg.Config):
    release_id: str | None = None  # None: the release created just before the one being served


@dg.op(out=dg.Out(dg.Nothing), description="Points serving at an earlier release and records it on serving_release.")
def rollback_serving_release(context: dg.OpExecutionContext, config: RollbackConfig, artifacts: ArtifactStore):
    root = artifacts.resolved_root()
    try:
        manifest = releases.rollback(root, config.release_id)
    except releases.ReleaseError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    context.log.info(f"rolled back: serving release {manifest['release_id']}")
    yield dg.AssetMaterialization(asset_key="serving_release", metadata=release_metadata(root, manifest))
