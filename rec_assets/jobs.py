"""Jobs: the whole graph, retraining, ingesting landed interactions, and rolling serving back.

Each of them writes the serving artifacts or the release pointer, so each carries the
`SERIAL_WRITER_TAG`, which `dagster.yaml` limits to one run at a time: a nightly retrain and a
landing-triggered ingest queue one behind the other instead of interleaving their writes.
"""

import dagster as dg

from rec_assets.assets.release import rollback_serving_release

SERIAL_WRITER_TAG = {"rec/artifact_writer": "serial"}  # dagster.yaml: concurrency.runs.tag_concurrency_limits

main_job = dg.define_asset_job(
    "main_job",
    selection=dg.AssetSelection.all(),
    tags=SERIAL_WRITER_TAG,
    description="Materialize every asset, raw data to the served release.",
)

RETRAIN_SELECTION = dg.AssetSelection.groups("model", "serving", "feature_store", "release")

retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=RETRAIN_SELECTION,
    tags=SERIAL_WRITER_TAG,
    description="Retrain the two-tower model, republish serving artifacts and online features, and release them "
    "if the model passes the gate.",
)

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets("interactions").downstream() - dg.AssetSelection.groups("media"),
    tags=SERIAL_WRITER_TAG,
    description="Append landed interaction files, then retrain and republish everything downstream.",
)


@dg.job(
    tags=SERIAL_WRITER_TAG,
    description="Serve an earlier release again (config: release_id; default: the "
    "release before the current one). CLI twin: python -m rec_core.release rollback [RELEASE_ID].",
)
def rollback_release():
    rollback_serving_release()
