"""Asset jobs: the whole graph, retraining, and ingesting landed interactions."""

import dagster as dg

main_job = dg.define_asset_job(
    "main_job", selection=dg.AssetSelection.all(), description="Materialize every asset, raw data to served index."
)

RETRAIN_SELECTION = dg.AssetSelection.groups("model", "serving", "feature_store")

retrain_job = dg.define_asset_job(
    "retrain_job", selection=RETRAIN_SELECTION,
    description="Retrain the two-tower model and republish serving artifacts and online features.",
)

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets("interactions").downstream() - dg.AssetSelection.groups("media"),
    description="Append landed interaction files, then retrain and republish everything downstream.",
)
